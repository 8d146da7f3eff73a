"""Stopping kills only what carla-launch started: a recycled process group of the server user
survives `server stop`; a server whose launch loop died is "running, restart loop gone" (and
`server restart` mends it); another user's listener on N+1 is reported at once. The box
scripts print no shell noise when a process vanishes under them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from carla_launcher.box.shell import PORT_FUNCTIONS, prologue
from carla_launcher.server.probe import probe_version
from tests.harness.netns_box import Box
from tests.harness.polling import wait_for
from tests.harness.standin_carla import standin_python


def status(b: Box) -> dict:
    done = b.cli("server", "status", "--json", str(b.profile_path))
    assert done.returncode in (0, 1), done.stderr
    (only,) = json.loads(done.stdout)["hosts"]  # one host: a list all the same
    return only


def status_notes(b: Box) -> str:
    return b.cli("server", "status", str(b.profile_path)).stderr


def status_file(b: Box) -> dict[str, str]:
    lines = (b.session_dir / "status").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def write_status_file(b: Box, values: dict[str, str]) -> None:
    path = b.session_dir / "status"  # rewritten in place: it keeps its owner
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def group_leader_of_server_user(b: Box) -> int:
    """A `setsid sleep` of the server user: the leader of a process group of its own."""
    pidfile = Path(f"/tmp/cl-box-{b.n}-impostor.pid")  # where the server user may write
    pidfile.unlink(missing_ok=True)
    b.run(
        f"setsid -f sh -c 'echo $$ > {pidfile}; exec sleep 600' </dev/null >/dev/null 2>&1",
        user=b.server_user,
    )
    pid = wait_for(lambda: pidfile.is_file() and pidfile.read_text().strip(), 10, "the impostor")
    pidfile.unlink()
    return int(pid)


@pytest.mark.root
def test_stop_never_kills_a_recycled_process_group(box: Box) -> None:
    box.preinstall()
    box.deploy()
    real = status_file(box)
    assert real["pgid_start"].isdigit() and real["loop_start"].isdigit()
    assert box.cli("server", "stop", str(box.profile_path)).returncode == 0

    # the recorded group number now belongs to a later process of the server user
    impostor = group_leader_of_server_user(box)
    write_status_file(box, {**real, "state": "running", "pid": str(impostor)})
    (box.session_dir / "pgid").write_text(f"{impostor}\n")
    st = status(box)
    assert not st["running"] and st["state"] == "stopped"
    stop = box.cli("server", "stop", str(box.profile_path))
    assert stop.returncode == 0, stop.stderr
    assert "was not running" in stop.stdout
    assert alive(impostor)

    # a status file of an older launch loop (no start times): a sleep is no CARLA either
    old = {k: v for k, v in real.items() if k not in ("pgid_start", "loop_start")}
    write_status_file(box, {**old, "state": "running", "pid": str(impostor)})
    stop = box.cli("server", "stop", str(box.profile_path))
    assert stop.returncode == 0 and "was not running" in stop.stdout, stop.stderr
    assert alive(impostor)
    os.kill(impostor, signal.SIGKILL)


@pytest.mark.root
def test_a_server_whose_restart_loop_died_is_reported_and_restart_mends_it(box: Box) -> None:
    box.preinstall()
    box.deploy()
    carla = box.carla_pid()
    loop = int(status_file(box)["loop"])
    os.kill(loop, signal.SIGKILL)  # CARLA runs on in its own process group

    st = wait_for(lambda: (s := status(box))["state"] == "loop gone" and s, 20, "loop gone")
    assert st["running"] and st["loop"] is False
    assert probe_version(box.address, 2000) == "0.9.15"
    assert box.carla_pid() == carla
    done = box.cli("server", "status", str(box.profile_path))
    assert done.returncode == 0
    assert "running, restart loop gone" in done.stdout
    name = box.profile_path.stem
    assert f"running, restart loop gone: run `carla-launch server restart {name}`" in done.stderr

    restart = box.cli("server", "restart", str(box.profile_path))
    assert restart.returncode == 0, restart.stderr
    assert not alive(carla)
    st = status(box)
    assert st["running"] and st["state"] == "running" and st["loop"] is True
    assert box.carla_pid() not in (None, carla)


@pytest.mark.root
def test_another_users_listener_on_n_plus_1_is_reported_at_once(box: Box) -> None:
    box.preinstall()
    box.deploy()
    assert box.cli("server", "stop", str(box.profile_path)).returncode == 0
    python = standin_python()
    assert python is not None
    listen = (
        "import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 2001)); s.listen(); "
        "time.sleep(600)"
    )
    other = subprocess.Popen(
        ["ip", "netns", "exec", box.netns, "runuser", "-u", "nobody", "--", python, "-c", listen]
    )
    try:
        wait_for(lambda: 2001 in box.listening(), 10, "nobody's listener on 2001")
        uid = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
        line = f"port 2001 is held by another user's process (uid {uid}): choose another "
        line += "server.port"

        start = box.cli("server", "start", str(box.profile_path))
        assert start.returncode == 1
        errors = [ln for ln in start.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and line in errors[0], start.stderr
        assert box.carla_pid() is None  # nothing was started into a crash loop

        stop = box.cli("server", "stop", str(box.profile_path))
        assert stop.returncode == 0, stop.stderr
        assert line in stop.stderr and "warning:" in stop.stderr
        done = box.cli("server", "status", str(box.profile_path))
        assert line in done.stderr
    finally:
        other.kill()
        other.wait()


@pytest.mark.skipif(shutil.which("dash") is None, reason="needs dash (the sh of Debian boxes)")
def test_box_functions_keep_quiet_about_vanished_processes() -> None:
    gone = 2**22 + 12345  # above the default pid_max: no such process
    script = (
        prologue("root", "carla")
        + PORT_FUNCTIONS
        + f"proc_alive {gone}; proc_start {gone}; proc_ours {gone} 1 x; group_ours {gone} 1; "
        "group_alive 999999; echo done\n"
    )
    done = subprocess.run(["dash", "-c", script], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "done"
    assert done.stderr == ""


@pytest.mark.root
def test_a_restart_that_cannot_start_is_a_failure_not_a_stop_on_purpose(box: Box) -> None:
    box.preinstall()
    box.deploy()
    python = standin_python()
    assert python is not None
    # another user's IPv6-only listener on N+2 beside the server's IPv4 one: the stop works,
    # the start that follows must refuse
    listen = (
        "import socket, time; s = socket.socket(socket.AF_INET6); "
        "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); s.bind(('::', 2002)); "
        "s.listen(); time.sleep(600)"
    )
    other = subprocess.Popen(
        ["ip", "netns", "exec", box.netns, "runuser", "-u", "nobody", "--", python, "-c", listen],
        start_new_session=True,  # runuser forks: its child goes with the group
    )
    try:
        uid = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
        held = f"port 2002 is held by another user's process (uid {uid})"
        wait_for(lambda: 2002 in box.listening() and held in status_notes(box), 10, "the listener")

        restart = box.cli("server", "restart", str(box.profile_path))
        assert restart.returncode == 1
        assert f"{held}: choose another server.port" in restart.stderr
        assert box.carla_pid() is None

        st = status(box)
        assert not st["running"] and st["stopped"] is None
        assert st["state"] == "failed" and st["last_crash_line"] == held
        done = box.cli("server", "status", str(box.profile_path))
        assert done.returncode == 1
        assert f": failed ({held}); port 2000" in done.stdout
        assert "stopped on purpose" not in done.stdout
    finally:
        os.killpg(other.pid, signal.SIGKILL)
        other.wait()
    # a stop someone asked for is still one
    start = box.cli("server", "start", str(box.profile_path))
    assert start.returncode == 0, start.stderr
    assert box.cli("server", "stop", str(box.profile_path)).returncode == 0
    assert status(box)["stopped"]["by"] == "carla-launch server stop"
