"""Small state files that commands share: discovered addresses, daemon state.

Kept under $XDG_STATE_HOME/carla-launch (default ~/.local/state/carla-launch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from carla_launcher.errors import InputError
from carla_launcher.fsutil import atomic_write
from carla_launcher.netaddr import address_problem, describe


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


def discovered_address(profile: str, host: str | None = None) -> str | None:
    """What `address`/`deploy` remembered for a profile. The file lies outside the profile,
    but it must not smuggle code into variants: what is not an address is refused here,
    once for every reader, naming the file and the box (`host`)."""
    value = read_json("addresses.json").get(profile)
    if not isinstance(value, str) or not value:
        return None
    if problem := address_problem(value):
        raise InputError(
            state_dir() / "addresses.json",
            None,
            f"{host or profile}: the remembered address is {describe(value, problem)}; "
            "run `carla-launch address P` again",
        )
    return value


def remember_address(profile: str, address: str) -> None:
    data = read_json("addresses.json")
    data[profile] = address
    write_json("addresses.json", data)
