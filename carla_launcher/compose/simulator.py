"""Which service is the CARLA simulator: the strongest evidence first.

Pure functions over the resolved model of `project.py`.
"""

from __future__ import annotations

from pathlib import Path

from carla_launcher.compose.project import Service
from carla_launcher.errors import InputError


def find_simulator(
    entry: Path,
    services: dict[str, Service],
    wanted: str | None,
    required: bool,
    entry_line: int | None = None,
) -> Service | None:
    """`wanted` if given; else the one service that runs CarlaUE4, else the one with a carla image."""
    if wanted:
        if wanted in services:
            return services[wanted]
        if not required:
            return None
        names = ", ".join(sorted(services)) or "none"
        raise InputError(
            entry, entry_line, f"no service named {wanted!r} (services: {names})", "--simulator"
        )
    strong = [s for s in services.values() if "carlaue4" in s.command_text().lower()]
    weak = [s for s in services.values() if s.image and "carla" in s.image.lower()]
    for candidates in (strong, weak):
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            where = ", ".join(f"{c.name} ({_loc(c)})" for c in candidates)
            first = candidates[0]
            raise InputError(
                first.file,
                first.line,
                f"several candidate simulators: {where}; choose one with --simulator NAME",
            )
    if required:
        raise InputError(
            entry,
            entry_line,
            "no simulator found (no service runs CarlaUE4 or uses a carla image); "
            "name it with --simulator NAME",
        )
    return None


def _loc(s: Service) -> str:
    return f"{s.file.name}:{s.line}" if s.line else s.file.name
