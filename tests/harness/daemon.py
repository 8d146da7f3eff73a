"""A real `carla-launch daemon` process to drive, and small projects for it: the fixtures
`daemons`, `project` and `small`, and `wait_current` that polls until every variant is what the
sync core plans.

Every process runs `python -m carla_launcher daemon` on real files in tmp folders, with HOME and
XDG_STATE_HOME there too, and every wait has a deadline.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from carla_launcher.compose.sync import Target, plan_folder
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

# Set by systemd for the unit it runs: a test daemon must not think it is one.
SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID", "JOURNAL_STREAM")


def daemon_env(tmp: Path, **extra: str) -> dict[str, str]:
    """This environment without systemd's variables, with HOME and the XDG folders in `tmp`."""
    env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_VARS}
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
        self._log = self.log_path.open("w")  # closed in stop()
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
        """Until the log holds `pattern` `count` times; fails at once if the daemon exits."""
        rx = re.compile(pattern, re.MULTILINE)

        def found() -> str:
            dead = not self.alive()  # before reading: a last line written on the way out counts
            text = self.log()
            n = len(rx.findall(text))
            if dead and n < count:
                pytest.fail(f"daemon exited ({self.proc.returncode}) before /{pattern}/:\n{text}")
            return text if n >= count else ""

        return wait_for(found, timeout, f"/{pattern}/ in the log", self.log)

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log(), re.MULTILINE))

    def ready(self) -> Daemon:
        self.wait_log(r"watching .*variants current")
        return self

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send `sig` and wait; fails the test if the daemon does not exit in time."""
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


@pytest.fixture
def daemons() -> Iterator[Callable[..., Daemon]]:
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
        d._log.close()


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
    """The file's text, or None where it does not exist (yet, or any more)."""
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

    def ok() -> dict[Path, str]:
        """The plan once the disk matches it; {} (keep polling) until then."""
        try:
            want = planned(folder, address, **kw)
        except Exception:  # noqa: BLE001  a half-written input while polling: try again
            return {}
        if not all(read(p) == text for p, text in want.items()):
            return {}
        for name, snippet in (contains or {}).items():
            if snippet not in (read(folder / name) or ""):
                return {}
        return want

    return wait_for(ok, timeout, f"variants of {folder.name} current", d.log)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The bundled example (build/ + profiles/default.yaml) in a tmp project folder."""
    root = tmp_path / "proj"
    shutil.copytree(REPO / "build", root / "build")
    (root / "profiles").mkdir()
    shutil.copy(REPO / "profiles" / "default.yaml", root / "profiles" / "default.yaml")
    return root


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """A one-entry project: proj/build/compose.yaml with a MARK to change."""
    root = tmp_path / "proj"
    (root / "build").mkdir(parents=True)
    (root / "build" / "compose.yaml").write_text(SMALL.format(mark="v0"))
    return root
