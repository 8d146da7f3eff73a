"""Parallel evaluation end to end, on this machine, with real parts only (issue 13).

Two boxes (network namespaces with a real sshd); box A's nvidia-smi is a recorded-output
stand-in with two free GPUs, box B's with one (tests/harness/parallel.py `give_gpus`: this
machine has no GPU). The stand-in CARLA package; a real dockerd runs the agents, which ask
their server for its version over CARLA's RPC protocol and print the address and port they
used; a real tmux holds the local panes.

A pool profile with `server.gpus: all` brings up three servers (two on A, one on B) and one
agent per server; each agent reports the version of *its own* server, i.e. the address and
port of its pair in `status --json`. A second profile on the same compose folder, whose server
runs on box B first (so the pool's server there moves to the next port window), keeps its
agent, and that agent keeps talking to its own server, through the pool's `up` and `down`.
`down` leaves none of the pool's containers and no local session of it, `down --server` none
of its servers; the next `up` brings the same three pairs back (same ports, same projects), and
the neighbour goes through the same cycle with its one server.
"""

from __future__ import annotations

import json
import socket
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.harness.agent import cli
from tests.harness.cli import child
from tests.harness.dockerd import DockerDaemon
from tests.harness.netns_box import Box, pool_profile
from tests.harness.parallel import (
    ONE_GPU,
    TWO_GPUS,
    Report,
    agent_reports,
    containers,
    give_gpus,
    projects,
    write_env_agent,
)
from tests.harness.polling import wait_for
from tests.harness.standin_carla import run_local, wait_listening

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.slow]

VERSION = "0.9.15"


def _reports_once(dockerd: DockerDaemon, project: str, after: int = 0) -> list[Report]:
    """The project's agent reports, once it has printed more than `after` with an answer."""
    found = agent_reports(dockerd, project)
    return found if len(found) > after and found[-1].version else []


# -- the agent: one env-mode variant, several compose projects at once ----------------------------
def _free_triple() -> int:
    """A port N with N, N+1 and N+2 free on this machine (the stand-in binds all three)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))
            port = int(s.getsockname()[1])
        if port + 2 > 65535:
            continue
        try:
            for p in (port + 1, port + 2):
                with socket.socket() as s:
                    s.bind(("0.0.0.0", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no three consecutive free ports here")


def test_one_env_variant_runs_as_two_projects_each_against_its_own_server(
    dockerd: DockerDaemon, tmp_path: Path, own_projects: None
) -> None:
    """What `up` relies on: the variant of the env address mode runs as several compose
    projects at once, each agent against the address and port its own project was given."""
    build = tmp_path / "build"
    write_env_agent(build, dockerd.image())
    sync = child("sync", "--dir", str(build), "--address-env", cwd=tmp_path)
    assert sync.returncode == 0, sync.stderr
    variant = build / "docker-compose.distributed.yaml"
    servers = []
    try:
        for n in range(2):
            port = _free_triple()
            folder = tmp_path / f"carla{n}"
            folder.mkdir()
            proc = run_local(port, tmp=folder)
            servers.append((proc, port))
        for proc, port in servers:
            wait_listening("127.0.0.1", port, 15, proc)
        names = ["h24-one", "h24-two"]
        for name, (_, port) in zip(names, servers, strict=True):
            env = {
                **dockerd.environ(),
                "CARLA_LAUNCH_HOST": dockerd.gateway,
                "CARLA_LAUNCH_PORT": str(port),
            }
            done = subprocess.run(
                ["docker", "compose", "-p", name, "-f", str(variant), "up", "-d"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
        for name, (_, port) in zip(names, servers, strict=True):
            got = wait_for(partial(_reports_once, dockerd, name), 60, f"{name}'s agent")
            assert set(got) == {Report(dockerd.gateway, port, VERSION)}, got
        # the first project goes; the second's agent runs on, still against its own server
        two = containers(dockerd, "h24-two")
        dockerd.docker("compose", "-p", "h24-one", "down", "-t", "1")
        assert containers(dockerd, "h24-one") == []
        seen = len(agent_reports(dockerd, "h24-two"))
        got = wait_for(lambda: _reports_once(dockerd, "h24-two", seen), 60, "h24-two's agent")
        assert set(got) == {Report(dockerd.gateway, servers[1][1], VERSION)}, got
        assert containers(dockerd, "h24-two", every=False) == two
    finally:
        for proc, _ in servers:
            proc.kill()
            proc.wait()


# -- three servers on two boxes, three agents, and a neighbour ------------------------------------
def _pairs(status: dict[str, Any]) -> list[dict[str, Any]]:
    """Each server/agent pair of `status --json` (carla_launcher/schemas/status.schema.json
    `pairs`) as {host, slot, gpu, address, port, running, project}."""
    return [
        {
            "host": pair["host"],
            "slot": pair["slot"],
            "gpu": pair["gpu"],
            "address": pair["address"],
            "port": pair["port"],
            "running": bool(pair["server"] and pair["server"]["running"]),
            "project": pair["agent"]["project"] if pair["agent"] else None,
        }
        for pair in status["pairs"]
    ]


def _status(where: Path, env: dict[str, str], profile: Path) -> dict[str, Any]:
    """`status P --json`, checked against its schema."""
    from tests.commands.test_json_outputs import checked

    done = cli(where, env, "status", str(profile), "--json")
    assert done.stdout.strip(), done.stderr
    return checked("status", done.stdout)


def _local_sessions(socket_name: str) -> set[str]:
    done = subprocess.run(
        ["tmux", "-L", socket_name, "list-sessions", "-F", "#{session_name}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return set(done.stdout.split())


def _graphics_adapters(box: Box) -> list[str]:
    """The -graphicsadapter argument of every (stand-in) CARLA server process on the box."""
    found = []
    for pid in box.server_processes():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except FileNotFoundError:
            continue
        if any(a.endswith("CarlaUE4-Linux-Shipping") for a in argv[:2]):
            found += [a for a in argv if a.startswith("-graphicsadapter")]
    return sorted(found)


def test_three_servers_on_two_boxes_each_agent_talks_to_its_own(
    box_factory: Any,
    dockerd: DockerDaemon,
    tmux_socket: str,
    tmp_path: Path,
    own_projects: None,
) -> None:
    a: Box = box_factory(login="user")
    b: Box = box_factory(login="user")
    give_gpus(a, TWO_GPUS)
    give_gpus(b, ONE_GPU)
    build = tmp_path / "proj" / "build"
    write_env_agent(build, dockerd.image())
    compose = {"dir": str(build), "simulator": "carla-simulator", "address": "env"}
    pool = pool_profile([a, b], tmp_path, gpus="all")
    doc = json.loads(pool.read_text())
    pool.write_text(json.dumps({**doc, "compose": compose}))
    # the neighbour: one server on box B, same package, same compose folder, same profiles/
    solo = tmp_path / "profiles" / "solo.yaml"
    solo.write_text(
        json.dumps(
            {
                "remote": {"host": b.alias, "ssh_config": str(b.ssh_config), "connect_timeout": 5},
                "server": {**doc["server"], "tmux_session": "solo", "port": 2000},
                "compose": compose,
            }
        )
    )
    env = {**dockerd.environ(), "CARLA_LAUNCH_TMUX_SOCKET": tmux_socket}

    up = cli(tmp_path, env, "up", str(solo), "--no-attach")
    assert up.returncode == 0, up.stderr + up.stdout
    (solo_pair,) = _pairs(_status(tmp_path, env, solo))
    solo_project = solo_pair["project"]
    assert (solo_pair["address"], solo_pair["port"]) == (b.address, 2000), solo_pair
    got = wait_for(lambda: _reports_once(dockerd, solo_project), 60, "the neighbour's agent")
    assert set(got) == {Report(b.address, 2000, VERSION)}, got
    solo_containers = containers(dockerd, solo_project, every=False)
    solo_sessions = _local_sessions(tmux_socket)
    assert solo_sessions, "up made no local tmux session"

    def neighbour_talks_to_its_own_server() -> None:
        """Same containers as before, and a new answer from its own server since last seen."""
        assert containers(dockerd, solo_project, every=False) == solo_containers
        seen = len(agent_reports(dockerd, solo_project))
        got = wait_for(
            lambda: _reports_once(dockerd, solo_project, seen), 60, "the neighbour's agent"
        )
        assert set(got) == {Report(b.address, 2000, VERSION)}, got

    # the pool: servers on both boxes, deployed and started in parallel, one agent per server
    up = cli(tmp_path, env, "up", str(pool), "--no-attach")
    assert up.returncode == 0, up.stderr + up.stdout
    status = _status(tmp_path, env, pool)
    pairs = _pairs(status)
    assert len(pairs) == 3, status
    assert all(p["running"] for p in pairs), status
    # two servers on A in their port windows; B's 2000 is the neighbour's, so the next window
    assert sorted((p["host"], p["gpu"], p["address"], p["port"]) for p in pairs) == sorted(
        [
            (a.alias, 0, a.address, 2000),
            (a.alias, 1, a.address, 2003),
            (b.alias, 0, b.address, 2003),
        ]
    ), pairs
    assert _graphics_adapters(a) == ["-graphicsadapter=0", "-graphicsadapter=1"]
    assert len({p["project"] for p in pairs} | {solo_project}) == 4, pairs
    for p in pairs:  # each agent asked its own server, and only its own
        got = wait_for(partial(_reports_once, dockerd, p["project"]), 60, f"the agent of {p}")
        assert set(got) == {Report(p["address"], p["port"], VERSION)}, (p, got)
        assert len(containers(dockerd, p["project"], every=False)) == 1, p
    neighbour_talks_to_its_own_server()
    status = _status(tmp_path, env, pool)  # all up, all agents talking: nothing to report
    assert status["problems"] == [], status["problems"]
    assert [bool(p["agent"] and p["agent"]["running"]) for p in status["pairs"]] == [True] * 3
    pool_sessions = _local_sessions(tmux_socket) - solo_sessions
    assert pool_sessions, "up of the pool made no local tmux session"
    assert solo_sessions <= _local_sessions(tmux_socket)

    # down: none of the pool's containers, none of its local sessions; servers stay up
    down = cli(tmp_path, env, "down", str(pool))
    assert down.returncode == 0, down.stderr + down.stdout
    for p in pairs:
        assert containers(dockerd, p["project"]) == [], p
    assert projects(dockerd) & {p["project"] for p in pairs} == set()
    assert _local_sessions(tmux_socket) == solo_sessions
    assert {2000, 2003} <= a.listening()
    neighbour_talks_to_its_own_server()

    # down --server: the pool's three servers stop; the neighbour's server on B runs on
    down = cli(tmp_path, env, "down", str(pool), "--server")
    assert down.returncode == 0, down.stderr + down.stdout
    assert _graphics_adapters(a) == []
    assert not ({2000, 2001, 2002, 2003, 2004, 2005} & a.listening())
    assert {2000, 2001, 2002} <= b.listening() and 2003 not in b.listening()
    after = _pairs(_status(tmp_path, env, pool))
    assert not any(p["running"] for p in after), after
    neighbour_talks_to_its_own_server()
    (again,) = _pairs(_status(tmp_path, env, solo))
    assert again["running"] and again["project"] == solo_project, again

    # the next morning: `up` starts the three stopped servers again, same ports, same projects
    up = cli(tmp_path, env, "up", str(pool), "--no-attach")
    assert up.returncode == 0, up.stderr + up.stdout
    back = _pairs(_status(tmp_path, env, pool))
    assert sorted(back, key=str) == sorted(pairs, key=str), back
    for p in back:
        got = wait_for(partial(_reports_once, dockerd, p["project"]), 60, f"the agent of {p}")
        assert set(got) == {Report(p["address"], p["port"], VERSION)}, (p, got)
    down = cli(tmp_path, env, "down", str(pool), "--server")
    assert down.returncode == 0, down.stderr + down.stdout
    assert _graphics_adapters(a) == []
    neighbour_talks_to_its_own_server()

    # the neighbour's own cycle, one server on one box: down --server, up, down --server
    down = cli(tmp_path, env, "down", str(solo), "--server")
    assert down.returncode == 0, down.stderr + down.stdout
    assert containers(dockerd, solo_project) == []
    assert not ({2000, 2001, 2002} & b.listening())
    up = cli(tmp_path, env, "up", str(solo), "--no-attach")
    assert up.returncode == 0, up.stderr + up.stdout
    got = wait_for(lambda: _reports_once(dockerd, solo_project), 60, "the neighbour's agent")
    assert set(got) == {Report(b.address, 2000, VERSION)}, got
    down = cli(tmp_path, env, "down", str(solo), "--server")
    assert down.returncode == 0, down.stderr + down.stdout
    assert containers(dockerd, solo_project) == []
    assert _local_sessions(tmux_socket) == set()
