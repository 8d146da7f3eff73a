"""The parent side of a deploy: run the pyinfra child, relay its progress, read its result.

Safe to import anywhere (no pyinfra, no gevent here). `deploy()` is what `carla-launch deploy`
and `carla-launch up` call; it also records each box's server (records.py) for `sync`,
`status`, `env` and `up`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from carla_launcher import records
from carla_launcher.box.shell import ERROR_PREFIX
from carla_launcher.box.ssh import RemoteError
from carla_launcher.profile import Profile

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PYINFRA_PREFIX = re.compile(r"^\[([^\]]+)\]\s+(.*)$")


@dataclass
class HostResult:
    host: str
    ok: bool
    error: str | None = None
    address: str | None = None
    port: int | None = None
    version: str | None = None
    changed: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    log: str | None = None

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


def deploy(
    profile: Profile,
    *,
    dry_run: bool = False,
    accept_new_host_key: bool = False,
    probe: bool = True,
    on_line: Callable[[str], None] | None = None,
    python: str | None = None,
) -> DeployReport:
    """Deploy the profile to all its hosts (in parallel); progress lines go to `on_line`."""
    t0 = time.monotonic()
    request = {
        "profile": str(profile.path),
        "dry_run": dry_run,
        "accept_new_host_key": accept_new_host_key,
        "probe": probe,
    }
    proc = subprocess.Popen(
        [python or sys.executable, "-m", "carla_launcher.deploy.deploy"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    tail: list[str] = []

    def pump() -> None:
        for raw in proc.stderr or ():
            tail.append(raw.rstrip())
            del tail[:-20]
            shown = relay_line(raw)
            if shown is not None and on_line is not None:
                on_line(shown)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    if proc.stdin is None or proc.stdout is None:  # pragma: no cover - PIPE was asked for
        raise RemoteError("the deploy process has no pipes")
    proc.stdin.write(json.dumps(request))
    proc.stdin.close()
    out = proc.stdout.read()
    proc.wait()
    reader.join(timeout=5)
    try:
        data = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        last = next((t for t in reversed(tail) if t.strip()), f"exit code {proc.returncode}")
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
    """Remember where the servers are (address, port, version) for `sync`, `status`, `up`."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for h in report.hosts:
        if h.ok and h.address:
            records.learn(
                profile, h.host, address=h.address, port=h.port, version=h.version, deployed_at=now
            )
