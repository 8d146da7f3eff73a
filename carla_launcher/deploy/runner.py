"""The parent side of a deploy: run the pyinfra child, relay its progress, read its result.

Safe to import anywhere (no pyinfra, no gevent here). `deploy()` is what `carla-launch deploy`
and `carla-launch up` call; it also records each box's server (records.py) for `sync`,
`status`, `env` and `up`. The child's stderr is relayed line by line as it comes: its text
lines as they are, its progress lines (`box/progress.py`) as live rows on a terminal
(`term.Board`) or as plain lines at most every few seconds in a log.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from carla_launcher import records
from carla_launcher.box import progress
from carla_launcher.box.shell import ERROR_PREFIX
from carla_launcher.box.ssh import RemoteError
from carla_launcher.profile import Profile
from carla_launcher.term import Board

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PYINFRA_PREFIX = re.compile(r"^\[([^\]]+)\]\s+(.*)$")


@dataclass
class HostResult:
    host: str
    ok: bool
    error: str | None = None
    address: str | None = None  # the box's: every server of it answers there
    port: int | None = None  # the first server's (`servers`: each one's)
    version: str | None = None  # the first server's
    changed: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    log: str | None = None
    #: every server of the box, by slot: {slot, gpu, port, version, tmux_session, log, error}
    servers: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HostResult:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names and v is not None})


@dataclass
class DeployReport:
    profile: str
    dry_run: bool
    hosts: list[HostResult]
    timings: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.hosts) and all(h.ok for h in self.hosts)


def relay_line(raw: str) -> str | None:
    """A child stderr line as the user should see it (None: not worth showing)."""
    line = _ANSI.sub("", raw).rstrip()
    if not line.strip() or ERROR_PREFIX in line:
        return None  # errors come once, in the summary
    m = _PYINFRA_PREFIX.match(line)
    if m:
        host = "localhost" if m.group(1) == "@local" else m.group(1)
        return f"{host}: {m.group(2)}"
    return line.replace("@local: ", "localhost: ", 1) if line.startswith("@local: ") else line


class Relay:
    """The child's lines as the user sees them: text lines as they come; progress lines as one
    live row per host on a terminal (`board`), else as plain lines through `say`, paced by
    `progress.due`. A phase's last state is always printed when it ends: when the host starts
    another phase, says something after finishing one, or the child exits (`close`); in a log,
    also before a line the host says in the middle of one (e.g. a retry), to keep the order."""

    def __init__(
        self,
        say: Callable[[str], None],
        board: Board | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.say, self.board, self.clock = say, board, clock
        self.meters: dict[str, progress.Meter] = {}
        self.lock = threading.Lock()

    def feed(self, raw: str) -> None:
        shown = relay_line(raw)
        if shown is None:
            return
        host, p = progress.relayed(shown)
        with self.lock:
            meter, now = self.meters.get(host), self.clock()
            if p is None:
                if meter is not None and progress.finished(meter.latest):
                    self._end(host)
                elif meter is not None and self.board is None and progress.last_line_due(meter):
                    self._print(self._plain(host, meter))  # a log reads in order
                    self.meters[host] = progress.shown(meter, now)
                self._print(shown)
                return
            if meter is not None and meter.latest.phase != p.phase:
                self._end(host)
                meter = None
            meter = self.meters[host] = progress.advance(meter, p, now)
            if self.board is not None:
                self.board.show(host, progress.text(meter), *progress.bar(meter))
            elif progress.due(meter, now):
                self._print(self._plain(host, meter))
                self.meters[host] = progress.shown(meter, now)

    def close(self) -> None:
        """The child is done: every phase still shown ends."""
        with self.lock:
            for host in list(self.meters):
                self._end(host)

    def _end(self, host: str) -> None:
        meter = self.meters.pop(host)
        if self.board is not None:
            self.board.drop(host)
        if progress.last_line_due(meter):
            self._print(self._plain(host, meter))

    def _print(self, text: str) -> None:
        if self.board is not None:
            self.board.line(text)
        else:
            self.say(text)

    @staticmethod
    def _plain(host: str, meter: progress.Meter) -> str:
        return f"{host}: {progress.text(meter)}" if host else progress.text(meter)


@dataclass
class ChildRun:
    """What a child process left: its stdout, its exit code, the last lines of its stderr."""

    stdout: str
    returncode: int
    tail: list[str]


def run_child(argv: list[str], request: str, relay: Relay) -> ChildRun:
    """Run a child with `request` on its stdin, relaying its stderr line by line while it runs
    (a reader thread: a line reaches the user when the child prints it, not when it ends)."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    tail: list[str] = []

    def pump() -> None:
        for raw in proc.stderr or ():
            if progress.MARK not in raw:  # the tail explains a failure: progress does not
                tail.append(raw.rstrip())
                del tail[:-20]
            relay.feed(raw)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    if proc.stdin is None or proc.stdout is None:  # pragma: no cover - PIPE was asked for
        raise RemoteError("the deploy process has no pipes")
    proc.stdin.write(request)
    proc.stdin.close()
    out = proc.stdout.read()
    proc.wait()
    reader.join(timeout=5)
    relay.close()
    return ChildRun(out, proc.returncode, tail)


def deploy(
    profile: Profile,
    *,
    dry_run: bool = False,
    accept_new_host_key: bool = False,
    probe: bool = True,
    on_line: Callable[[str], None] | None = None,
    board: Board | None = None,
    python: str | None = None,
    hosts: Sequence[str] | None = None,
) -> DeployReport:
    """Deploy the profile to all its hosts (in parallel), or to `hosts` among them. What the
    child says goes to `on_line` (progress as plain paced lines), or, given a board (a
    terminal), above its live rows."""
    t0 = time.monotonic()
    request = {
        "profile": str(profile.path),
        "dry_run": dry_run,
        "accept_new_host_key": accept_new_host_key,
        "probe": probe,
        "hosts": list(hosts) if hosts else None,
    }
    child = run_child(
        [python or sys.executable, "-m", "carla_launcher.deploy.deploy"],
        json.dumps(request),
        Relay(on_line or (lambda _: None), board),
    )
    out = child.stdout
    try:
        data = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        last = next((t for t in reversed(child.tail) if t.strip()), f"exit code {child.returncode}")
        raise RemoteError(f"the deploy process failed: {_ANSI.sub('', last)}")
    if data.get("error"):
        error = RemoteError(str(data["error"]))
        error.exit_code = int(data.get("exit_code") or 1)
        raise error
    report = DeployReport(
        profile=profile.name,
        dry_run=dry_run,
        hosts=[HostResult.from_json(h) for h in data.get("hosts", {}).values()],
        timings=data.get("timings", {}),
        elapsed=round(time.monotonic() - t0, 3),
    )
    if not dry_run:
        record(profile, report)
    return report


def record(profile: Profile, report: DeployReport) -> None:
    """Remember where the servers are (address, and each server's port and version) for
    `sync`, `status`, `up`."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for h in report.hosts:
        if not (h.ok and h.address):
            continue
        for s in h.servers or [{"slot": 0, "port": h.port, "version": h.version}]:
            records.learn(
                profile,
                h.host,
                address=h.address,
                port=s.get("port"),
                version=s.get("version"),
                deployed_at=now,
                slot=int(s.get("slot") or 0),
            )
