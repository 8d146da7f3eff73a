"""Which service is the CARLA simulator, what names reach it, and what cannot be distributed.

Pure functions over the resolved model of `project.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from carla_launcher.compose.hosts import world_port_of
from carla_launcher.compose.project import Service
from carla_launcher.errors import InputError


@dataclass(frozen=True)
class Simulator:
    name: str
    file: Path
    host_names: tuple[str, ...]
    world_port: int


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


def host_names(sim: Service, services: dict[str, Service], project: str) -> tuple[str, ...]:
    """Every name by which other containers can reach the simulator ('*' = a container number)."""
    names = {sim.name, *sim.aliases}
    if sim.hostname:
        names.add(sim.hostname)
    if sim.container_name:
        names.add(sim.container_name)
    for other in services.values():
        for link in other.links:
            target, _, alias = link.partition(":")
            if target == sim.name and alias:
                names.add(alias)
    for prefix in ("${COMPOSE_PROJECT_NAME}", "$COMPOSE_PROJECT_NAME", project):
        if prefix:
            names.add(f"{prefix}-{sim.name}-*")
    if project:
        names.add(f"{project}_{sim.name}_*")
    return tuple(sorted(names))


def simulator_of(sim: Service, services: dict[str, Service], project: str) -> Simulator:
    return Simulator(sim.name, sim.file, host_names(sim, services, project), world_port_of(sim.command_text()))


def check_distributable(sim: Service, services: dict[str, Service]) -> None:
    """Refuse what cannot work once the simulator runs elsewhere."""
    own = {f"service:{sim.name}"}
    if sim.container_name:
        own.add(f"container:{sim.container_name}")
    for s in services.values():
        if s.name == sim.name:
            continue
        if s.network_mode in own:
            raise InputError(
                s.file,
                s.field_lines.get("network_mode") or s.line,
                f"service {s.name} shares the simulator's network ({s.network_mode}); "
                "it cannot run apart from it",
                "network_mode",
            )
        for vf in s.volumes_from:
            target = vf.split(":")[0] if not vf.startswith(("service:", "container:")) else vf.split(":")[1]
            if target in (sim.name, sim.container_name):
                raise InputError(
                    s.file,
                    s.field_lines.get("volumes_from") or s.line,
                    f"service {s.name} mounts the simulator's volumes ({vf}); "
                    "they do not exist on this machine once the simulator runs remotely",
                    "volumes_from",
                )
