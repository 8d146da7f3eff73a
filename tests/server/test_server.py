"""`carla-launch server ...` on a real box: status, crash and comeback, stop that frees the
ports, start, restart, logs; `restart: no` leaves a crashed server down, with its crash line."""

from __future__ import annotations

import json
import os
import signal

import pytest

from carla_launcher.server.launch import FIRST_DELAY
from carla_launcher.server.probe import NotReady, probe_version, wait_ready
from tests.harness.netns_box import Box
from tests.harness.polling import wait_for

pytestmark = pytest.mark.root


def status(b: Box) -> dict:
    done = b.cli("server", "status", "--json", str(b.profile_path))
    assert done.returncode in (0, 1), done.stderr
    (only,) = json.loads(done.stdout)["hosts"]  # one host: a list all the same
    return only


def test_server_lifecycle(box: Box) -> None:
    box.preinstall()
    box.deploy()
    st = status(box)
    assert st["running"] and st["port"] == 2000 and st["restarts"] == 0
    assert st["since"] and st["pid"] and st["last_crash_line"] is None
    first_pid = box.carla_pid()

    # a crash (Signal 11) comes back within the backoff, counted, with its crash line
    os.kill(first_pid, signal.SIGSEGV)
    assert wait_ready(box.address, 2000, FIRST_DELAY + 15, interval=0.1) == "0.9.15"  # bounded
    st = status(box)
    assert st["running"] and st["restarts"] == 1
    assert st["last_crash_line"] == "Signal 11 caught."
    assert box.carla_pid() not in (None, first_pid)

    logs = box.cli("server", "logs", "-n", "200", str(box.profile_path))
    assert logs.returncode == 0
    assert "Signal 11 caught." in logs.stdout and "carla-launch: restarting in" in logs.stdout

    # stop: the whole process group goes and the three ports are free when it returns
    stop = box.cli("server", "stop", str(box.profile_path))
    assert stop.returncode == 0, stop.stderr
    assert "ports are free" in stop.stdout
    assert not {2000, 2001, 2002} & box.listening()
    assert box.carla_pid() is None and box.server_processes() == []
    with pytest.raises(NotReady):
        probe_version(box.address, 2000, timeout=1)
    st = status(box)
    assert not st["running"] and st["state"] == "stopped"
    again = box.cli("server", "stop", str(box.profile_path))
    assert again.returncode == 0 and "was not running" in again.stdout

    # start waits for the RPC answer; restart gives a new process
    start = box.cli("server", "start", str(box.profile_path))
    assert start.returncode == 0, start.stderr
    assert f"CARLA 0.9.15 ready at {box.address}:2000" in start.stdout
    pid = box.carla_pid()
    restart = box.cli("server", "restart", str(box.profile_path))
    assert restart.returncode == 0, restart.stderr
    assert box.carla_pid() not in (None, pid)

    # restart: no -> a crash leaves the server down, and status says why
    box.write_profile(server={"restart": "no"})
    redeploy = box.deploy("--json")
    assert "Start the CARLA server" in json.loads(redeploy.stdout)["hosts"][0]["changed"]
    os.kill(box.carla_pid(), signal.SIGSEGV)
    st = wait_for(lambda: (s := status(box)) and not s["running"] and s, 20, "the server to stop")
    assert st["state"] == "exited" and st["last_crash_line"] == "Signal 11 caught."
    assert box.cli("server", "status", str(box.profile_path)).returncode == 1


def test_a_server_that_cannot_start_fails_the_deploy_with_its_log(box: Box) -> None:
    box.preinstall()
    # a port clash, as with a leftover server: `bind: Address already in use`, then Signal 11
    box.write_profile(server={"ready_timeout": 60, "args": ["-carla-streaming-port=22"]})
    done = box.deploy(check=False)
    assert done.returncode == 1
    # "keeps crashing" (below), not "not ready after 60 s": it gave up on the crash loop
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "keeps crashing" in errors[0] and "bind: " in errors[0], done.stderr
    assert "  | " in done.stderr and "Signal 11 caught." in done.stderr  # the log's tail
