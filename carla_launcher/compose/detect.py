"""Find a project's compose folder and its simulator service (for `init`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from carla_launcher.compose.discover import find_entries
from carla_launcher.compose.project import Project
from carla_launcher.compose.simulator import find_simulator
from carla_launcher.errors import InputError

CANDIDATE_DIRS = (".", "build", "docker", "compose", "deploy", "docker-compose", ".devcontainer")


@dataclass(frozen=True)
class Detected:
    folder: Path
    simulator: str
    entries: tuple[Path, ...]


def detect(root: Path, folders: tuple[str, ...] = CANDIDATE_DIRS) -> Detected | None:
    """The first folder whose compose files hold a simulator, and its most common name."""
    for name in folders:
        folder = root / name
        if not folder.is_dir():
            continue
        project = Project()
        sims: Counter[str] = Counter()
        entries = []
        for entry in find_entries(folder):
            try:
                services = project.model(entry)
                sim = find_simulator(entry, services, None, required=False)
            except InputError:
                continue
            if sim is not None and len(services) > 1:
                sims[sim.name] += 1
                entries.append(entry)
        if sims:
            return Detected(folder, sims.most_common(1)[0][0], tuple(entries))
    return None
