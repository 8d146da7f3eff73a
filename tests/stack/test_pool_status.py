"""`status` of a pool (`remote.host: [a, b]`): every host is asked at once, each gets its own
server, server GPU and address rows, and a problem names the host it is about; a host that
cannot be reached hides none of the others.

The table and the problems are pure (first tests); the last test runs the real command on two
network-namespace boxes with a real sshd and the stand-in CARLA server deployed on both.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from carla_launcher.stack.overview import problems, render
from tests.harness.netns_box import Box, pool_profile

RUNNING = {
    "running": True,
    "state": "running",
    "pid": 41,
    "uptime_s": 12.0,
    "restarts": 0,
    "port": 2000,
    "version": "0.9.15",
}
STOPPED = {
    "running": False,
    "state": "stopped",
    "port": 2003,
    "stopped": {"by": "carla-launch server stop", "at": "2026-01-01T00:00:00+00:00"},
}
DIED = {"running": False, "state": "died", "port": 2000, "stopped": None}
GPU = {"status": "ok", "message": "", "server_mib": 900, "gpus": []}


def _facts(*hosts: tuple[str, str | None, dict[str, Any]]) -> dict[str, Any]:
    return {
        "profile": "pool",
        "hosts": [{"host": h, "address": a, "server": s, "gpu": GPU} for h, a, s in hosts],
        "daemon": {"running": False, "current": None},
        "agent": {"variant": None, "containers": []},
        "session": {"name": "carla-pool", "exists": False, "panes": {}},
    }


def _rows(lines: list[str]) -> dict[str, str]:
    """The table's rows as {label: value}, in order."""
    return {k.strip(): v.strip() for k, v in (line.split("  ", 1) for line in lines)}


def test_one_host_keeps_its_table_as_it_was() -> None:
    rows = _rows(render(_facts(("gpu-1", "10.0.0.1", RUNNING))))
    assert list(rows) == [
        "server",
        "server GPU",
        "address",
        "daemon",
        "agent",
        "session",
    ]
    assert rows["server"].startswith("yes (running, pid 41")


def test_a_pool_has_rows_per_host_and_problems_that_name_the_host() -> None:
    facts = _facts(
        ("gpu-1", "10.0.0.1", RUNNING),
        ("gpu-2", None, STOPPED),
        ("gpu-3", "10.0.0.3", DIED),
        ("gpu-4", None, {"error": "cannot reach gpu-4: Connection refused"}),
    )
    rows = _rows(render(facts))
    assert (
        rows["server gpu-1"].startswith("yes (running") and "CARLA 0.9.15" in rows["server gpu-1"]
    )
    assert rows["server gpu-2"].startswith("no: stopped on purpose (by carla-launch server stop")
    assert rows["server gpu-3"].startswith("no: died unexpectedly")
    assert rows["server gpu-4"] == "unknown: cannot reach gpu-4: Connection refused"
    assert rows["address gpu-1"] == "10.0.0.1"
    assert rows["address gpu-2"] == "not known yet (carla-launch address pool --host gpu-2)"
    assert {k for k in rows if k.startswith("server GPU")} == {
        f"server GPU gpu-{n}" for n in "1234"
    }
    # the stop on purpose is no problem; the death and the unreachable host are, each by name
    assert problems(facts) == [
        "server gpu-3: not running: died unexpectedly (its tmux session and processes are gone: "
        "a reboot, or a kill); start it with `carla-launch server start pool --host gpu-3`",
        "server gpu-4: cannot reach gpu-4: Connection refused",
    ]


# -- two real boxes --------------------------------------------------------------------------------
def _status(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carla_launcher", "status", *args, str(profile)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _closed_port() -> int:
    """A loopback port nothing listens on: ssh to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.root
@pytest.mark.slow
def test_status_of_a_pool_on_two_boxes(box_factory: Any, tmp_path: Path, tmux_socket: str) -> None:
    from tests.commands.test_json_outputs import checked

    a: Box = box_factory(login="user")
    b: Box = box_factory(login="user")
    profile = pool_profile([a, b], tmp_path)
    for x in (a, b):
        x.preinstall()
    deploy = subprocess.run(
        [sys.executable, "-m", "carla_launcher", "deploy", str(profile)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert deploy.returncode == 0, deploy.stderr

    r = _status(profile, "--json")
    assert r.returncode == 0, r.stderr
    hosts = {h["host"]: h for h in checked("status", r.stdout)["hosts"]}
    assert list(hosts) == [a.alias, b.alias]
    for box in (a, b):
        assert hosts[box.alias]["address"] == box.address
        assert hosts[box.alias]["server"]["running"] is True
        assert hosts[box.alias]["server"]["version"] == "0.9.15"

    stop = subprocess.run(
        [sys.executable, "-m", "carla_launcher", "server", "stop", "--host", b.alias, str(profile)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert stop.returncode == 0, stop.stderr
    r = _status(profile)
    assert r.returncode == 0, r.stderr  # stopped on purpose: no problem
    rows = _rows(r.stdout.splitlines())
    assert rows[f"server {a.alias}"].startswith("yes (running")
    assert rows[f"server {b.alias}"].startswith("no: stopped on purpose (by carla-launch server")
    assert rows[f"address {b.alias}"] == b.address

    # a third host that refuses connections: one problem naming it; the others still shown
    config = tmp_path / "pool_ssh_config"  # pool_profile's
    config.write_text(
        config.read_text()
        + f"Host gone\n  HostName 127.0.0.1\n  Port {_closed_port()}\n  User root\n"
    )
    doc = json.loads(profile.read_text())
    doc["remote"]["host"].append("gone")
    profile.write_text(json.dumps(doc))
    r = _status(profile, "--json")
    assert r.returncode == 1, r.stderr
    found = checked("status", r.stdout)
    assert [h["host"] for h in found["hosts"]] == [a.alias, b.alias, "gone"]
    assert found["hosts"][0]["server"]["running"] is True
    assert found["hosts"][1]["server"]["stopped"]["by"] == "carla-launch server stop"
    assert "error" in found["hosts"][2]["server"]
    assert len(found["problems"]) == 1 and found["problems"][0].startswith("server gone: ")
    text = _status(profile)
    assert text.returncode == 1
    assert text.stderr.startswith("problem: server gone: ") and a.alias not in text.stderr
