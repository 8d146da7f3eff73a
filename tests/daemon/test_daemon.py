"""The sync daemon: its pure parts, then the basics of a real daemon process (driven by the
harness in tests/harness/daemon.py: the `daemons`, `project` and `small` fixtures)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from carla_launcher.compose.variants import hand_edited
from carla_launcher.daemon.notify import sd_notify, watchdog_interval
from carla_launcher.daemon.reconciler import affected, because
from carla_launcher.daemon.watch import Inbox, Interest, norm, relevant
from tests.harness.cli import REPO, child
from tests.harness.daemon import ADDRESS, SMALL, read, wait_current


# -- pure parts ------------------------------------------------------------------------------------
def test_inbox_is_a_trailing_edge_debounce_with_a_cap() -> None:
    now = [100.0]
    inbox = Inbox(delay=0.05, max_wait=1.0, clock=lambda: now[0])
    try:
        assert inbox.due_in() is None and inbox.take() is None
        inbox.push(["/a"])
        assert inbox.due_in() == pytest.approx(0.05)
        for _ in range(10):  # a save every 40 ms keeps pushing the deadline
            now[0] += 0.04
            inbox.push(["/b"])
            assert inbox.take() is None
        now[0] += 0.049
        assert inbox.take() is None
        now[0] += 0.002
        batch = inbox.take()
        assert batch is not None and batch.paths == {"/a", "/b"} and not batch.structural
        assert inbox.take() is None
        # events that never stop: a batch at the latest max_wait after the first one
        for _ in range(40):
            inbox.push(["/c"], structural=True)
            now[0] += 0.03
        batch = inbox.take()
        assert batch is not None and batch.structural
        inbox.request_full("lost events")
        now[0] += 0.05
        batch = inbox.take()
        assert batch is not None and batch.full == "lost events"
    finally:
        inbox.close()


def test_inbox_wakes_the_loop_once_per_batch() -> None:
    import select

    inbox = Inbox(delay=0.05, max_wait=1.0)
    try:
        assert select.select([inbox], [], [], 0)[0] == []
        for _ in range(1000):
            inbox.push(["/a"])
        assert select.select([inbox], [], [], 0)[0] == [inbox]
        assert os.read(inbox.fileno(), 4096) == b"\0"  # one byte, not a thousand
    finally:
        inbox.close()


def test_relevant_sees_atomic_saves_and_drops_noise() -> None:
    i = Interest("/p/build", frozenset({"/p/shared/base.yaml", "/p/profiles/default.yaml"}))
    f = "/p/build/compose.yaml"
    assert relevant("modified", f, "", False, i) == ([f], False)
    assert relevant("closed", f, "", False, i) == ([f], False)
    # temp + rename, sed -i, JetBrains: the file is only the destination of a move
    assert relevant("moved", "/p/build/.compose.yaml.tmp", f, False, i) == ([f], True)
    assert relevant("moved", "/p/build/sedX1y2Z3", f, False, i) == ([f], True)
    assert relevant("moved", "/p/build/compose.yaml___jb_tmp___", f, False, i) == ([f], True)
    # vim's backup rename: the file is the source, the backup is not interesting
    assert relevant("moved", f, "/p/build/compose.yaml~", False, i) == ([f], True)
    for noise in (
        "/p/build/.compose.yaml.swp",
        "/p/build/4913",
        "/p/build/notes.txt",
        "/p/build/compose.yaml~",
        "/p/other.yaml",
    ):
        assert relevant("created", noise, "", False, i) is None
    assert relevant("opened", f, "", False, i) is None
    assert relevant("closed_no_write", f, "", False, i) is None
    assert relevant("modified", "/p/shared/base.yaml", "", False, i) == (
        ["/p/shared/base.yaml"],
        False,
    )
    assert relevant("modified", "/p/shared/other.yaml", "", False, i) is None
    # the folder itself renamed away, and back
    assert relevant("moved", "/p/build", "/p/build.old", True, i) == (["/p/build"], True)
    assert relevant("moved", "/p/build.old", "/p/build", True, i) == (["/p/build"], True)
    assert relevant("modified", "/p/build", "", True, i) is None
    assert relevant("created", "/p/build/sub", "", True, i) is None


def test_affected_and_because() -> None:
    graph = {
        "/p/b/a.yaml": frozenset({"/p/b/a.yaml", "/p/b/base.yaml"}),
        "/p/b/c.yaml": frozenset({"/p/b/c.yaml", "/p/b/base.yaml", "/p/shared/x.yaml"}),
    }
    assert affected(graph, {"/p/b/base.yaml"}) == set(graph)
    assert affected(graph, {"/p/shared/x.yaml"}) == {"/p/b/c.yaml"}
    assert affected(graph, {"/p/b/other.yaml"}) == set()
    assert because({"/p/b/base.yaml"}, "/p/b") == "base.yaml changed"
    assert because({"/p/b/base.yaml", "/p/b/a.yaml"}, "/p/b") == "a.yaml, base.yaml changed"


def test_norm_folds_dots() -> None:
    assert norm("/p/build/../shared/x.yaml") == "/p/shared/x.yaml"
    assert norm(b"/p//build/") == "/p/build"


def test_sd_notify_speaks_the_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False  # not under systemd: a no-op
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify("READY=1", "STATUS=ok")
        assert s.recv(4096) == b"READY=1\nSTATUS=ok"
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # for another process
    assert watchdog_interval() is None


# -- a real daemon, the basics ---------------------------------------------------------------------
def test_start_syncs_everything_then_follows_an_in_place_save(project: Path, daemons: Any) -> None:
    build = project / "build"
    for v in build.glob("*distributed.yaml"):
        v.unlink()
    d = daemons(project, "--dir", "build").ready()
    want = wait_current(build, d, "192.0.2.10")  # the default profile's address
    assert len(want) == 3
    assert d.count(r"^\S+ \S+ synced build/") == 3
    text = (
        (build / "agent_service.yaml")
        .read_text()
        .replace("CARLA_SIM_PORT=2000", "CARLA_SIM_PORT=2000\n      - MARK=in-place")
    )
    (build / "agent_service.yaml").write_text(text)
    d.wait_log(
        r"synced build/docker-compose\.devroute-distributed\.yaml \(agent_service\.yaml changed\)"
    )
    wait_current(build, d, "192.0.2.10")
    assert d.alive()
    assert d.stop() == 0


def test_only_the_variants_whose_inputs_changed_are_rederived(project: Path, daemons: Any) -> None:
    build = project / "build"
    d = daemons(project, "--dir", "build", "--address", ADDRESS).ready()
    wait_current(build, d)
    before = {p: p.stat().st_mtime_ns for p in build.glob("*distributed.yaml")}
    n = d.count("synced")
    p = build / "docker-compose.yaml"
    p.write_text(p.read_text().replace("TM_PORT: 8000", "TM_PORT: 8001"))
    d.wait_log(r"synced build/docker-compose\.distributed\.yaml \(docker-compose\.yaml changed\)")
    wait_current(build, d)
    after = {p: p.stat().st_mtime_ns for p in build.glob("*distributed.yaml")}
    changed = {p.name for p in before if before[p] != after[p]}
    assert changed == {"docker-compose.distributed.yaml"}
    assert d.count("synced") == n + 1


def test_no_reader_ever_sees_a_half_written_variant(small: Path, daemons: Any) -> None:
    import threading

    build = small / "build"
    d = daemons(small, "--dir", "build", "--address", ADDRESS, "--debounce", "0").ready()
    variant = build / "compose.distributed.yaml"
    wait_current(build, d)
    bad: list[str] = []
    reads = [0]
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            text = read(variant)
            reads[0] += 1
            if text is None or hand_edited(text):  # missing, or body not matching its hash
                bad.append(text or "<missing>")

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(1, 201):
            tmp = build / ".compose.yaml.tmp"
            tmp.write_text(SMALL.format(mark=f"v{i}" * 50))
            tmp.replace(build / "compose.yaml")
            time.sleep(0.002)
        wait_current(build, d, contains={"compose.distributed.yaml": "v200v200"})
    finally:
        stop.set()
        t.join()
    assert reads[0] > 100
    assert bad == []
    assert d.count("synced") >= 3  # start + several rewrites while we were reading


def test_the_daemon_never_imports_pyinfra() -> None:
    """gevent's monkey-patching (pyinfra_cli, pyinfra's parallel SSH) breaks watchdog's threads."""
    code = (
        "import sys, carla_launcher.cli, carla_launcher.commands.daemon, "
        "carla_launcher.daemon.service, carla_launcher.daemon.reconciler, "
        "carla_launcher.daemon.systemd, carla_launcher.daemon.status\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m.split('.')[0] in ('pyinfra', 'pyinfra_cli', 'gevent'))\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


def test_a_named_profile_that_is_missing_is_an_error_not_another_folder(tmp_path: Path) -> None:
    """A typo in --profile must not make the daemon watch (or report on) the current folder."""
    r = child("daemon", "status", "--profile", "nosuch", cwd=tmp_path)
    assert r.returncode == 2 and "nosuch" in r.stderr
