"""How other containers reach the simulator (its names and addresses), and what cannot be
distributed because it shares more than a network address with it.

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
    project: str = ""  # compose's project name, part of the containers' names


def own_names(svc: Service) -> set[str]:
    """The names and static addresses a service answers to on its own networks."""
    names = {svc.name, *svc.aliases, *svc.addresses}
    if svc.hostname:
        names.add(svc.hostname)
    if svc.container_name:
        names.add(svc.container_name)
    return names


def host_names(sim: Service, services: dict[str, Service]) -> tuple[str, ...]:
    """Every name by which other containers reach the simulator, but those compose makes
    from the project name (`hosts.Rewrite` matches those in every spelling)."""
    names = own_names(sim)
    for other in services.values():
        for link in other.links:
            target, _, alias = link.partition(":")
            if target == sim.name and alias:
                names.add(alias)
    return tuple(sorted(names))


def simulator_of(sim: Service, services: dict[str, Service], project: str) -> Simulator:
    return Simulator(
        sim.name, sim.file, host_names(sim, services), world_port_of(sim.command_text()), project
    )


def check_distributable(sim: Service, services: dict[str, Service]) -> None:
    """Refuse what cannot work once the simulator runs elsewhere."""
    own = {f"service:{sim.name}"}
    if sim.container_name:
        own.add(f"container:{sim.container_name}")
    for s in services.values():
        if s.name == sim.name:
            continue
        if s.network_mode in own:
            raise _refuse(
                s,
                "network_mode",
                f"shares the simulator's network ({s.network_mode}); it cannot run apart from it",
            )
        for vf in s.volumes_from:
            target = (
                vf.split(":")[0]
                if not vf.startswith(("service:", "container:"))
                else vf.split(":")[1]
            )
            if target in (sim.name, sim.container_name):
                raise _refuse(
                    s,
                    "volumes_from",
                    f"mounts the simulator's volumes ({vf}); "
                    "they do not exist on this machine once the simulator runs remotely",
                )


def _refuse(s: Service, field: str, why: str) -> InputError:
    """The error for a service `field` that ties `s` to the simulator's machine."""
    return InputError(s.file, s.field_lines.get(field) or s.line, f"service {s.name} {why}", field)
