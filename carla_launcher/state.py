"""Where the tool keeps what outlives a command: small JSON files under one folder.

$XDG_STATE_HOME/carla-launch (default ~/.local/state/carla-launch): the records of servers
and sessions (records.py), the daemons' state, the SSH configs made for boxes. Written
atomically, so that a reader never sees half a file; a missing or broken file reads as empty.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from carla_launcher.fsutil import atomic_write


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "carla-launch"


def read_json(name: str) -> dict[str, Any]:
    try:
        data = json.loads((state_dir() / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(name: str, data: dict[str, Any]) -> None:
    path = state_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
