"""The daemon as a service: one per folder, signals, systemd's notify protocol, the profile,
lost events, the state file and `carla-launch daemon status`."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.harness.cli import REPO
from tests.harness.daemon import ADDRESS, SMALL, daemon_env, read, wait_current
from tests.harness.polling import wait_for


def cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carla_launcher", *args],
        cwd=cwd,
        env=env or daemon_env(cwd),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_daemon_on_the_same_folder_refuses_naming_the_pid(
    small: Path, daemons: Any
) -> None:
    first = daemons(small, "--dir", "build", "--address", ADDRESS).ready()
    r = cli(small, "daemon", "--dir", "build", "--address", ADDRESS)
    assert r.returncode == 1
    assert f"already watching build (pid {first.pid})" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # the same folder by another spelling is still the same folder
    r = cli(small / "build", "daemon", "--dir", ".", "--address", ADDRESS, env=daemon_env(small))
    assert r.returncode == 1 and f"pid {first.pid}" in r.stderr
    assert first.alive()
    # another folder is another daemon
    other = small / "other"
    other.mkdir()
    (other / "compose.yaml").write_text(SMALL.format(mark="other"))
    second = daemons(small, "--dir", "other", "--address", ADDRESS).ready()
    wait_current(other, second)
    assert first.stop() == 0 and second.stop() == 0
    # once stopped, the folder is free again
    third = daemons(small, "--dir", "build", "--address", ADDRESS).ready()
    assert third.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_exit_0_and_leave_a_state_file(
    sig: int, small: Path, daemons: Any
) -> None:
    d = daemons(small, "--dir", "build", "--address", ADDRESS).ready()
    assert d.stop(sig) == 0
    assert f"stopping ({signal.Signals(sig).name})" in d.log()
    assert "Traceback" not in d.log()
    state_files = list((small / "home/.local/state/carla-launch").glob("daemon-build-*.json"))
    assert len(state_files) == 1
    state = json.loads(state_files[0].read_text())
    assert state["pid"] is None and state["stopped"] and state["address"] == ADDRESS


def _profile(root: Path, address: str) -> Path:
    p = root / "profiles" / "default.yaml"
    p.parent.mkdir(exist_ok=True)
    text = (REPO / "profiles" / "default.yaml").read_text().replace("192.0.2.10", address)
    p.write_text(text)
    return p


def test_a_profile_change_regenerates_every_variant(project: Path, daemons: Any) -> None:
    build = project / "build"
    d = daemons(project, "--dir", "build").ready()
    wait_current(build, d, "192.0.2.10")
    profile = project / "profiles" / "default.yaml"
    # an atomic save of the profile with a new address
    tmp = profile.with_name(".default.yaml.tmp")
    tmp.write_text(profile.read_text().replace("192.0.2.10", "198.51.100.7"))
    tmp.replace(profile)
    d.wait_log(r"target changed: address 192\.0\.2\.10 -> 198\.51\.100\.7")
    want = wait_current(build, d, "198.51.100.7")
    assert len(want) == 3 and all("198.51.100.7" in text for text in want.values())
    # a broken profile keeps the last address, and says where it is broken
    profile.write_text(profile.read_text().replace("  port: 2000", "  port: two thousand"))
    d.wait_log(
        r"error: profiles/default\.yaml:\d+: server\.port: .*\(keeping address 198\.51\.100\.7\)"
    )
    profile.write_text(
        profile.read_text().replace("two thousand", "2000").replace("198.51.100.7", "203.0.113.5")
    )
    d.wait_log(r"recovered: profiles/default\.yaml")
    wait_current(build, d, "203.0.113.5")
    assert d.alive()


def test_sighup_reloads(project: Path, daemons: Any) -> None:
    build = project / "build"
    d = daemons(project, "--dir", "build").ready()
    wait_current(build, d, "192.0.2.10")
    d.send(signal.SIGHUP)
    d.wait_log(r"reloaded build: 3 of 3 variants current, address 192\.0\.2\.10")
    # a hand-made mess that no event announces is repaired by a reload too
    d.send(signal.SIGSTOP)
    try:
        (build / "docker-compose.distributed.yaml").unlink()
    finally:
        d.send(signal.SIGCONT)
    d.send(signal.SIGHUP)
    d.wait_log(r"reloaded build", count=2)
    wait_current(build, d, "192.0.2.10")
    assert d.alive()
    assert d.stop() == 0


def test_type_notify_readiness_and_watchdog_pings(
    small: Path, daemons: Any, tmp_path: Path
) -> None:
    build = small / "build"
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(10)
        env = daemon_env(
            small,
            NOTIFY_SOCKET=str(sock_path),
            WATCHDOG_USEC="200000",
            INVOCATION_ID="0123456789abcdef",
        )
        d = daemons(small, "--dir", "build", "--address", ADDRESS, env=env)
        first = sock.recv(4096).decode()
        assert first.startswith("READY=1\nSTATUS=watching build: 1 of 1 variants current")
        # READY=1 comes after the first sync: the variant is already there
        assert read(build / "compose.distributed.yaml") is not None
        # it keeps pinging (each recv bounded by the socket's time-out); the cadence,
        # WATCHDOG_USEC/2, is watchdog_interval()'s (tested in-process), measured by bench/daemon.py
        pings = [sock.recv(4096).decode() for _ in range(3)]
        assert pings == ["WATCHDOG=1"] * 3
        d.send(signal.SIGTERM)
        while (msg := sock.recv(4096).decode()) == "WATCHDOG=1":
            pass
        assert msg == "STOPPING=1"
        assert d.proc.wait(10) == 0
    # under systemd, journald timestamps the lines: no timestamp of our own
    lines = d.log().splitlines()
    assert lines[0] == "synced build/compose.distributed.yaml (start)"
    assert lines[-1] == "stopping (SIGTERM)"


def test_journal_stream_gets_syslog_priorities(small: Path, daemons: Any) -> None:
    env = daemon_env(small, JOURNAL_STREAM="8:12345", INVOCATION_ID="x")
    d = daemons(small, "--dir", "build", "--address", ADDRESS, env=env)
    d.wait_log(r"^<6>watching build")
    (small / "build" / "compose.yaml").write_text("services: [\n")
    d.wait_log(r"^<3>error: build/compose\.yaml:\d+: invalid YAML")


def test_inotify_queue_overflow_gives_a_full_resync(small: Path, daemons: Any) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 100_000:
        pytest.skip(f"max_queued_events is {limit}: too many events to make for a test")
    build = small / "build"
    d = daemons(small, "--dir", "build", "--address", ADDRESS).ready()
    wait_current(build, d)
    d.send(signal.SIGSTOP)  # nobody reads the inotify queue now: the kernel's queue fills up
    try:
        junk = build / "junk.txt"
        # modify and close-after-write per write (the daemon asks for no open event): 2 or more
        for i in range(limit // 2 + 100):
            junk.write_text(str(i))
        # made after the overflow: its event is lost for sure
        (build / "compose.yaml").write_text(SMALL.format(mark="after-overflow"))
    finally:
        d.send(signal.SIGCONT)
    d.wait_log(r"warning: inotify queue overflowed, events were lost: full resync", timeout=30)
    wait_current(
        build, d, contains={"compose.distributed.yaml": 'MARK: "after-overflow"'}, timeout=30
    )
    assert d.alive()


def test_the_periodic_recheck_finds_changes_no_event_announced(small: Path, daemons: Any) -> None:
    # a symlinked input: writing its target makes no event in the watched folders
    elsewhere = small.parent / "elsewhere"
    elsewhere.mkdir()
    real = elsewhere / "real.yaml"
    real.write_text(SMALL.format(mark="linked-0"))
    build = small / "build"
    (build / "compose.yaml").unlink()
    (build / "compose.yaml").symlink_to(real)
    d = daemons(small, "--dir", "build", "--address", ADDRESS, "--recheck", "1").ready()
    wait_current(build, d, contains={"compose.distributed.yaml": 'MARK: "linked-0"'})
    real.write_text(SMALL.format(mark="linked-1"))
    d.wait_log(r"re-check found changes the watcher missed: full resync", timeout=15)
    wait_current(build, d, contains={"compose.distributed.yaml": 'MARK: "linked-1"'})
    assert d.alive()


def test_idle_daemon_does_no_work(small: Path, daemons: Any) -> None:
    d = daemons(small, "--dir", "build", "--address", ADDRESS).ready()
    proc = psutil.Process(d.pid)
    t0 = sum(proc.cpu_times()[:2])
    time.sleep(2.0)
    used = sum(proc.cpu_times()[:2]) - t0
    assert used < 0.02, f"{used:.3f} s of CPU in 2 s of idling"  # goal: <= 0.1 s per minute


def test_a_hand_edited_variant_is_kept_and_said_once(small: Path, daemons: Any) -> None:
    build = small / "build"
    d = daemons(small, "--dir", "build", "--address", ADDRESS).ready()
    wait_current(build, d)
    variant = build / "compose.distributed.yaml"
    variant.write_text(variant.read_text() + "# my own change\n")
    d.wait_log(r"warning: build/compose\.distributed\.yaml: edited by hand .*; kept it")
    state = next((small / "home/.local/state/carla-launch").glob("daemon-build-*.json"))
    synced = json.loads(state.read_text())["last_sync"]
    (build / "compose.yaml").write_text(SMALL.format(mark="v1"))
    # the daemon planned the change (its state file says so), and kept the hand edit
    wait_for(lambda: json.loads(state.read_text())["last_sync"] > synced, what="a sync", log=d.log)
    assert (read(variant) or "").endswith("# my own change\n")
    assert d.count("edited by hand") == 1
    variant.unlink()  # deleting the hand-edited variant gives a fresh one
    wait_current(build, d, contains={"compose.distributed.yaml": 'MARK: "v1"'})


def test_a_folder_without_compose_files_waits_for_them(tmp_path: Path, daemons: Any) -> None:
    root = tmp_path / "proj"
    (root / "build").mkdir(parents=True)
    d = daemons(root, "--dir", "build", "--address", ADDRESS)
    d.wait_log(r"error: build: no compose files here .*\(waiting for changes\)")
    d.wait_log(r"watching build: 0 of 0 variants current")
    (root / "build" / "compose.yaml").write_text(SMALL.format(mark="late"))
    d.wait_log(r"recovered: build$")
    wait_current(root / "build", d, contains={"compose.distributed.yaml": 'MARK: "late"'})


def test_bad_input_at_start_exits_2(small: Path) -> None:
    r = cli(small, "daemon", "--dir", "nowhere", "--address", ADDRESS)
    assert r.returncode == 2 and "nowhere: --dir: no such folder" in r.stderr
    r = cli(small, "daemon", "--dir", "build")  # no --address and no profile
    assert r.returncode == 2 and "profiles/ folder" in r.stderr


def test_daemon_status(small: Path, daemons: Any) -> None:
    r = cli(small, "daemon", "status", "--dir", "build")
    assert r.returncode == 1 and "daemon: not running for build" in r.stdout
    d = daemons(small, "--dir", "build", "--address", ADDRESS).ready()
    r = cli(small, "daemon", "status", "--dir", "build", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads(r.stdout)
    assert s["running"] and s["pid"] == d.pid and s["current"] and s["checked"]
    assert 1_000_000 < s["rss_bytes"] < 60 * 2**20
    assert s["uptime_s"] >= 0 and s["last_sync"] and s["address"] == ADDRESS
    assert [v["state"] for v in s["variants"]] == ["current"]
    assert s["systemd"]["installed"] is False
    r = cli(small, "daemon", "status", "--dir", "build")
    assert r.returncode == 0
    assert (
        f"daemon: running for build (pid {d.pid}" in r.stdout
        and "variants: 1 of 1 current" in r.stdout
    )
    r = cli(small, "daemon", "--dir", "build", "status")  # the group's --dir counts too
    assert r.returncode == 0 and f"pid {d.pid}" in r.stdout
    # a stale variant (say, the daemon was stopped meanwhile) shows up
    assert d.stop() == 0
    (small / "build" / "compose.yaml").write_text(SMALL.format(mark="later"))
    r = cli(small, "daemon", "status", "--dir", "build")
    assert r.returncode == 1
    assert (
        "daemon: not running for build" in r.stdout
        and "compose.distributed.yaml: stale" in r.stdout
    )
