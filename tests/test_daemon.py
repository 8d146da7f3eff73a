"""The sync daemon: its pure parts, and a harness that drives a real daemon process.

The harness (`Daemon`, `project`, `small`) is imported by the other tests/test_daemon_*.py
files. Every process test runs `python -m carla_launcher daemon` on real files in tmp
folders, with HOME and XDG_STATE_HOME there too, and polls with a deadline.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from carla_launcher.compose.sync import Target, plan_folder
from carla_launcher.compose.variants import hand_edited
from carla_launcher.daemon.notify import sd_notify, watchdog_interval
from carla_launcher.daemon.reconciler import affected, because
from carla_launcher.daemon.watch import Inbox, Interest, norm, relevant
from tests.harness.cli import REPO
from tests.harness.polling import wait_for

ADDRESS = "10.77.0.2"

SMALL = """\
# a small project: the simulator and one agent
services:
  sim:
    image: carlasim/carla:0.9.15
  agent:
    image: example/agent:latest
    environment:
      CARLA_HOST: sim
      MARK: "{mark}"
"""


# -- harness ----------------------------------------------------------------------------------------
def daemon_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID", "JOURNAL_STREAM")
    }
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_CONFIG_HOME=str(home / ".config"),
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Daemon:
    """A real `carla-launch daemon` process, its log in a file (reading it never blocks)."""

    def __init__(
        self, cwd: Path, *args: str, env: dict[str, str] | None = None, log: Path | None = None
    ) -> None:
        self.cwd = cwd
        self.log_path = log or cwd / f"daemon-{time.monotonic_ns()}.log"
        self.env = env or daemon_env(cwd)
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "carla_launcher", "daemon", *args],
            cwd=cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_log(self, pattern: str, timeout: float = 10.0, count: int = 1) -> str:
        rx = re.compile(pattern, re.MULTILINE)

        def found() -> Any:
            if not self.alive() and len(rx.findall(self.log())) < count:
                pytest.fail(
                    f"daemon exited ({self.proc.returncode}) before /{pattern}/:\n{self.log()}"
                )
            return len(rx.findall(self.log())) >= count and self.log()

        return wait_for(found, timeout, f"/{pattern}/ in the log", self.log)

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log(), re.MULTILINE))

    def ready(self) -> Daemon:
        self.wait_log(r"watching .*variants current")
        return self

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"daemon did not stop on {sig!r} within {timeout}s:\n{self.log()}")
        self._log.close()
        return self.proc.returncode


@pytest.fixture(name="daemons")
def daemons_fixture() -> Any:
    """Start daemons with daemons(cwd, *args); all are stopped at the end of the test."""
    started: list[Daemon] = []

    def start(cwd: Path, *args: str, **kw: Any) -> Daemon:
        d = Daemon(cwd, *args, **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.alive():
            d.proc.kill()
            d.proc.wait()


def planned(
    folder: Path, address: str = ADDRESS, port: int | None = None, simulator: str | None = None
) -> dict[Path, str]:
    """What every variant must hold: the sync core's plan (the oracle; sync is tested elsewhere)."""
    out = {}
    for r in plan_folder(folder, Target(address, port, simulator)):
        for v in r.variants:
            out[v.path] = v.content
    return out


def read(p: Path) -> str | None:
    try:
        return p.read_text()
    except FileNotFoundError:
        return None


def wait_current(
    folder: Path,
    d: Daemon,
    address: str = ADDRESS,
    timeout: float = 10.0,
    contains: dict[str, str] | None = None,
    **kw: Any,
) -> dict[Path, str]:
    """Until every variant on disk is what the plan says (and holds the given snippets)."""

    def ok() -> Any:
        try:
            want = planned(folder, address, **kw)
        except Exception:  # noqa: BLE001 - a half-written input while polling: try again
            return False
        if not all(read(p) == text for p, text in want.items()):
            return False
        for name, snippet in (contains or {}).items():
            if snippet not in (read(folder / name) or ""):
                return False
        return want

    return wait_for(ok, timeout, f"variants of {folder.name} current", d.log)


@pytest.fixture(name="project")
def project_fixture(tmp_path: Path) -> Path:
    """The bundled example (build/ + profiles/default.yaml) in a tmp project folder."""
    root = tmp_path / "proj"
    shutil.copytree(REPO / "build", root / "build")
    (root / "profiles").mkdir()
    shutil.copy(REPO / "profiles" / "default.yaml", root / "profiles" / "default.yaml")
    return root


@pytest.fixture(name="small")
def small_fixture(tmp_path: Path) -> Path:
    """A one-entry project: proj/build/compose.yaml with a MARK to change."""
    root = tmp_path / "proj"
    (root / "build").mkdir(parents=True)
    (root / "build" / "compose.yaml").write_text(SMALL.format(mark="v0"))
    return root


# -- pure parts -------------------------------------------------------------------------------------
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


# -- a real daemon, the basics ----------------------------------------------------------------------
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
            os.replace(tmp, build / "compose.yaml")
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
    import subprocess
    import sys

    code = (
        "import sys, carla_launcher.cli, carla_launcher.commands.daemon, carla_launcher.daemon.service, carla_launcher.daemon.reconciler, "
        "carla_launcher.daemon.systemd, carla_launcher.daemon.status\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pyinfra', 'pyinfra_cli', 'gevent'))\n"
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
    r = subprocess.run(
        [sys.executable, "-m", "carla_launcher", "daemon", "status", "--profile", "nosuch"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "nosuch" in r.stderr
