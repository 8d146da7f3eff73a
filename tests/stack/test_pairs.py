"""The pair model (pure): which agents a profile runs, their compose projects, windows and
environments, which earlier agents go, and how `status` shows several pairs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from carla_launcher.compose.hosts import ENV_HOST, ENV_PORT, ENV_SUFFIX
from carla_launcher.profile import Profile, read_profile
from carla_launcher.records import AgentRecord
from carla_launcher.stack.pairs import (
    Reached,
    env_mode_refusal,
    left_over,
    pairs_of,
    project_name,
    window_name,
)
from carla_launcher.stack.report import pairs, problems, render

COMPOSE_PROJECT = re.compile(r"[a-z0-9][a-z0-9_-]*")  # what `docker compose -p` accepts
TMUX_SAFE = re.compile(r"[A-Za-z0-9_-]+")


def _profile(tmp_path: Path, text: str, name: str = "gpu") -> Profile:
    path = tmp_path / "profiles" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return read_profile(path)


@pytest.mark.parametrize(
    ("key", "host"),
    [
        ("gpu-1a2b3c", "gpu-box"),
        ("My_Profile-1a2b3c", "GPU.Lab.example"),
        ("_weird-1a2b3c", "[fd00::2]"),
        ("__-1a2b3c", "user@10.0.0.5"),
    ],
)
def test_project_and_window_names_are_valid_and_stable(key: str, host: str) -> None:
    for named, pool in ((False, False), (True, False), (True, True)):
        for slot in (0, 1, 7):
            project = project_name(key, host, slot, named=named, pool=pool)
            assert COMPOSE_PROJECT.fullmatch(project), project
            assert project == project_name(key, host, slot, named=named, pool=pool)
            assert TMUX_SAFE.fullmatch(window_name(host, slot, named=named))


def test_names_keep_servers_and_hosts_apart() -> None:
    names = {
        project_name("gpu-1a2b3c", h, k, named=True, pool=True)
        for h in ("a.b", "a-b", "A-B", "ab")
        for k in (0, 1)
    }
    assert len(names) == 6  # a-b and A-B are one host (DNS is case-blind): 3 hosts, 2 servers
    assert project_name("gpu-1a2b3c", "box", 0, named=False, pool=False) == "gpu-1a2b3c"
    assert project_name("gpu-1a2b3c", "box", 0, named=True, pool=False) == "gpu-1a2b3c-0"
    assert window_name("box", 0, named=False) == "carla"  # the window of a one-server profile


def test_pairs_of_a_pool_with_gpus(tmp_path: Path) -> None:
    prof = _profile(
        tmp_path,
        "remote:\n  host: [box-a, box-b]\nserver:\n  gpus: all\ncompose:\n  address: env\n",
    )
    found = pairs_of(
        prof,
        [
            Reached("box-a", 0, 0, "10.0.0.1", 2000, "0.9.15"),
            Reached("box-a", 1, 1, "10.0.0.1", 2003, "0.9.15"),
            Reached("box-b", 0, 0, "10.0.0.2", 2000, "0.9.15"),
        ],
    )
    key = prof.key.lower()
    assert [p.project for p in found] == [f"{key}-box-a-0", f"{key}-box-a-1", f"{key}-box-b-0"]
    assert [p.window for p in found] == ["box-a-0", "box-a-1", "box-b-0"]
    assert [(p.env[ENV_HOST], p.env[ENV_PORT]) for p in found] == [
        ("10.0.0.1", "2000"),
        ("10.0.0.1", "2003"),
        ("10.0.0.2", "2000"),
    ]
    # container_name: of an env-mode variant ends with this: one per project
    assert [p.env[ENV_SUFFIX] for p in found] == [f"-{p.project}" for p in found]
    one = _profile(tmp_path, "remote:\n  host: box-a\n", "one")
    (single,) = pairs_of(one, [Reached("box-a", 0, None, "10.0.0.1", 2000)])
    assert (single.project, single.window) == (one.key.lower(), "carla")


def test_several_servers_need_the_env_mode(tmp_path: Path) -> None:
    literal = _profile(tmp_path, "remote:\n  host: box-a\nserver:\n  gpus: [0, 1]\n")
    assert env_mode_refusal(literal, 1) is None
    line = env_mode_refusal(literal, 2)
    assert line is not None and "\n" not in line and "compose.address: env" in line
    env = _profile(tmp_path, "remote:\n  host: box-a\ncompose:\n  address: env\n", "env")
    assert env_mode_refusal(env, 3) is None


def _agent(host: str | None, slot: int, project: str | None) -> AgentRecord:
    return AgentRecord(host, slot, project, Path("/p/v.yaml"), {}, (), "w")


def test_which_earlier_agents_go_and_which_stay(tmp_path: Path) -> None:
    prof = _profile(
        tmp_path,
        "remote:\n  host: [box-a, box-b]\nserver:\n  gpus: [0, 1]\ncompose:\n  address: env\n",
    )
    now = pairs_of(prof, [Reached("box-a", 0, 0, "10.0.0.1", 2000)])
    same = _agent("box-a", 0, now[0].project)
    gpu_gone = _agent("box-a", 1, "x-box-a-1")  # box-a answered without server 1
    host_failed = _agent("box-b", 0, "x-box-b-0")  # box-b could not be asked: still runs
    dropped = _agent("box-c", 0, "x-box-c-0")  # the profile no longer names box-c
    legacy = _agent(None, 0, None)  # from before pairs: its pair's agent replaces it
    gone, kept = left_over(
        [same, gpu_gone, host_failed, dropped, legacy], now, {"box-a": {0}}, ["box-a", "box-b"]
    )
    assert gone == [gpu_gone, dropped, legacy] and kept == [host_failed]


# -- status of several pairs -----------------------------------------------------------------------
def _server(slot: int, port: int, **more: Any) -> dict[str, Any]:
    return {
        "slot": slot,
        "gpu": slot,
        "running": True,
        "state": "running",
        "pid": 40 + slot,
        "uptime_s": 5.0,
        "restarts": 0,
        "port": port,
        "version": "0.9.15",
        **more,
    }


def _agent_state(slot: int, running: bool = True) -> dict[str, Any]:
    return {
        "host": "box-a",
        "slot": slot,
        "window": f"box-a-{slot}",
        "project": f"gpu-abc-{slot}",
        "variant": "/p/build/docker-compose.distributed.yaml",
        "containers": [
            {
                "service": "agent",
                "name": f"gpu-abc-{slot}-agent-1",
                "state": "running" if running else "exited",
                "status": "",
            }
        ],
        "running": running,
    }


def _facts(servers: list[dict[str, Any]], agents: list[dict[str, Any]]) -> dict[str, Any]:
    windows = {
        a["window"]: {
            "server": {"alive": True, "exit_status": None},
            "agent": {"alive": True, "exit_status": None},
        }
        for a in agents
    }
    return {
        "profile": "gpu",
        "hosts": [
            {
                "host": "box-a",
                "address": "10.0.0.1",
                "server": servers[0],
                "servers": servers,
                "gpu": {"status": "ok", "message": "", "server_mib": None, "gpus": []},
            }
        ],
        "daemon": {"running": False, "current": None},
        "agent": {},
        "session": {"name": "carla-gpu", "exists": bool(agents), "windows": windows},
        "agents": agents,
    }


def test_status_lists_every_pair_with_its_own_agent() -> None:
    facts = _facts(
        [_server(0, 2000), _server(1, 2003), _server(2, 2006, running=False, state="died")],
        [_agent_state(0), _agent_state(1, running=False)],
    )
    found = pairs(facts)
    assert [(p["slot"], p["port"]) for p in found] == [(0, 2000), (1, 2003), (2, 2006)]
    assert [p["agent"]["project"] if p["agent"] else None for p in found] == [
        "gpu-abc-0",
        "gpu-abc-1",
        None,
    ]
    rows = dict(line.split("  ", 1) for line in render(facts))
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert rows["server 0"].startswith("yes (GPU 0, running")
    assert rows["server 2"].startswith("no: died")
    assert rows["agent 0"] == ("docker-compose.distributed.yaml (project gpu-abc-0): agent running")
    assert rows["agent 1"].endswith("agent exited")
    assert rows["session"] == (
        "carla-gpu: box-a-0 (server running, agent running); "
        "box-a-1 (server running, agent running)"
    )
    said = problems(facts)
    assert said[0].startswith("server 2: not running: died")
    assert "`carla-launch server start gpu --only 2`" in said[0]
    assert said[1] == "agent 1: its containers are not all running"
    assert len(said) == 2


def test_an_agent_whose_server_is_gone_is_still_listed() -> None:
    facts = _facts([_server(0, 2000)], [_agent_state(0), _agent_state(1)])
    found = pairs(facts)
    assert [(p["slot"], p["server"] is None) for p in found] == [(0, False), (1, True)]
