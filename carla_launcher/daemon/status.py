"""The daemon's state file, and what `carla-launch daemon status` / `carla-launch status` show.

One state file per folder (`daemon-<name>-<hash>.json` under the state folder), written by the
daemon after every batch: several daemons can run side by side, and readers need no IPC.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

from carla_launcher.errors import LauncherError, display_path
from carla_launcher.jsonout import iso, seconds
from carla_launcher.state import read_json, state_dir

STATE_VERSION = 1


def folder_key(folder: Path | str) -> str:
    """A file-name-safe key for a folder: its name (readable), a hash of its real path (unique)."""
    real = os.path.realpath(folder)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(real).name) or "root"
    return f"{name}-{hashlib.sha256(real.encode()).hexdigest()[:10]}"


def state_name(folder: Path | str) -> str:
    """The state file's name inside state_dir() (for state.read_json/write_json)."""
    return f"daemon-{folder_key(folder)}.json"


def lock_path(folder: Path | str) -> Path:
    return state_dir() / f"daemon-{folder_key(folder)}.lock"


def read_state(folder: Path | str) -> dict[str, Any]:
    """The raw state the daemon last wrote for a folder ({} if none)."""
    data = read_json(state_name(folder))
    return data if data.get("version") == STATE_VERSION else {}


def _process(pid: Any, started: Any) -> Any:
    """The daemon's psutil.Process if it is still the same process (pids get reused), else None."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    import psutil  # lazily: `carla-launch status` should not pay for it when nothing runs

    try:
        proc = psutil.Process(pid)
        if isinstance(started, (int, float)) and abs(proc.create_time() - started) > 1.0:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _epoch(value: Any) -> float | None:
    """A time the daemon wrote (seconds since the epoch), or None for anything else."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def daemon_status(folder: Path | str, check: bool = True) -> dict[str, Any]:
    """Is a daemon keeping `folder` current, and are its variants current right now?

    Keys (the shape of `daemon status --json`, schemas/daemon-status.schema.json): folder,
    running, pid (int|None), started (ISO 8601|None), uptime_s, rss_bytes, address,
    last_sync (ISO 8601|None), last_sync_age_s, syncs (variants written since start),
    variants (list of {path, source, state}), current (bool|None: every variant current and no
    error; None when unknown), errors (list of str), checked (bool: states come from comparing
    the files now, not from the daemon's last word), state_file.

    With check=True the variants are planned again with the daemon's address and compared with
    the disk (about 50 ms), so `current` is true even if the daemon is dead or lagging.
    """
    folder = Path(folder)
    state = read_state(folder)
    proc = _process(state.get("pid"), state.get("pid_started"))
    now = time.time()
    started = _epoch(state.get("started")) if proc is not None else None
    last_sync = _epoch(state.get("last_sync"))
    out: dict[str, Any] = {
        "folder": os.path.realpath(folder),
        "state_file": str(state_dir() / state_name(folder)),
        "running": proc is not None,
        "pid": proc.pid if proc is not None else None,
        "started": iso(started),
        "uptime_s": seconds(max(0.0, now - started)) if started is not None else None,
        "rss_bytes": None,
        "address": state.get("address"),
        "last_sync": iso(last_sync),
        "last_sync_age_s": seconds(max(0.0, now - last_sync)) if last_sync is not None else None,
        "syncs": state.get("syncs", 0),
        "variants": [
            {"path": p, "source": v.get("source"), "state": v.get("state")}
            for p, v in sorted((state.get("variants") or {}).items())
        ],
        "errors": list(state.get("errors") or []),
        "current": None,
        "checked": False,
    }
    if proc is not None:
        with contextlib.suppress(Exception):  # it may exit between the two calls
            out["rss_bytes"] = proc.memory_info().rss
    if check and state.get("address"):
        _check(folder, state, out)
    elif state:
        from carla_launcher.compose.service import VariantState

        out["current"] = not out["errors"] and all(
            v["state"] == VariantState.CURRENT for v in out["variants"]
        )
    return out


def _check(folder: Path, state: dict[str, Any], out: dict[str, Any]) -> None:
    """Plan the folder with the daemon's target and compare: the truth, whoever wrote the files."""
    from carla_launcher.compose.service import Mode, VariantState, sync_folder
    from carla_launcher.compose.sync import Target

    target = Target(state["address"], state.get("port"), state.get("simulator"))
    try:
        report = sync_folder(folder, target, Mode.CHECK)
    except LauncherError as e:
        out.update(current=False, checked=True, errors=[str(e)])
        return
    variants: list[dict[str, Any]] = []
    errors: list[str] = []
    for entry in report.entries:
        if entry.error is not None:
            errors.append(str(entry.error))
        for v in entry.variants:
            if v.error is not None:  # a folder or FIFO where the variant should be
                errors.append(str(v.error))
                continue
            variants.append({"path": str(v.path), "source": str(entry.entry), "state": v.state})
    out.update(
        variants=sorted(variants, key=lambda v: v["path"]),
        errors=errors,
        checked=True,
        current=not errors and all(v["state"] == VariantState.CURRENT for v in variants),
    )


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


def format_status(s: dict[str, Any]) -> list[str]:
    """Human lines for a daemon_status() dict (shared by `daemon status` and `status`)."""
    where = display_path(s["folder"])
    if s["running"]:
        rss = f", {s['rss_bytes'] / 2**20:.0f} MB" if s.get("rss_bytes") else ""
        up = f", up {_age(s['uptime_s'])}" if s.get("uptime_s") is not None else ""
        head = f"daemon: running for {where} (pid {s['pid']}{up}{rss})"
    else:
        head = f"daemon: not running for {where}"
    lines = [head]
    if s.get("last_sync") is not None:
        age = _age(s.get("last_sync_age_s") or 0)
        lines.append(f"last sync: {age} ago, address {s.get('address')}")
    variants = s.get("variants") or []
    if variants:
        from carla_launcher.compose.service import VariantState  # only when there is one

        n = sum(1 for v in variants if v["state"] == VariantState.CURRENT)
        lines.append(f"variants: {n} of {len(variants)} current")
        for v in variants:
            if v["state"] != VariantState.CURRENT:
                lines.append(f"  {display_path(v['path'])}: {v['state']}")
    elif s.get("current") is None:
        lines.append("variants: unknown (the daemon never ran for this folder)")
    for e in s.get("errors") or []:
        lines.append(f"error: {e}")
    return lines
