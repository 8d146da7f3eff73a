"""`server.mode: compose`: the simulator service of the local compose project, run on the box.

The service is taken as compose resolves it (`docker compose config --format json`, with
includes, extends and variables applied; the project model of `compose/` when no compose CLI is
installed here), then reduced to what can run alone on the box (`remote_service`, pure): no
depends_on, links or networks; CARLA's ports set to the chosen port and published as N, N+1,
N+2; the GPU reservation (`deploy.resources.reservations.devices`, `gpus`, `runtime`) kept;
bind mounts of local paths dropped with a warning (they do not exist on the box).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carla_launcher import proc
from carla_launcher.errors import InputError
from carla_launcher.server.launch import PORT_FLAGS

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

DROP_KEYS = (
    "depends_on",
    "links",
    "networks",
    "container_name",
    "extends",
    "external_links",
    "volumes_from",
    "build",
    "develop",
    "profiles",
)


@dataclass
class SimulatorSource:
    name: str
    file: Path
    service: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _set_port_flags(items: list[str], port: int) -> list[str]:
    out, found = [], False
    for item in items:
        flag = item.split("=", 1)[0].lower().replace("--", "-", 1)
        if flag in PORT_FLAGS:
            if not found:
                out.append(f"{item.split('=', 1)[0]}={port}")
                found = True
            continue
        out.append(item)
    if not found and any("carlaue4" in i.lower() for i in items):
        out.append(f"-carla-rpc-port={port}")
    return out


def _port_in(command: Any) -> int | None:
    items = shlex.split(command) if isinstance(command, str) else [str(c) for c in command or []]
    for item in items:
        flag, _, value = item.partition("=")
        if flag.lower().replace("--", "-", 1) in PORT_FLAGS and value.isdigit():
            return int(value)
    return 2000 if any("carlaue4" in i.lower() for i in items) else None


def _replace_port(test: Any, old: int, new: int) -> Any:
    pattern = re.compile(rf"(?<![0-9]){old}(?![0-9])")
    if isinstance(test, str):
        return pattern.sub(str(new), test)
    if isinstance(test, list):
        return [pattern.sub(str(new), t) if isinstance(t, str) else t for t in test]
    return test


def remote_service(
    service: dict[str, Any], port: int, restart: str
) -> tuple[dict[str, Any], list[str]]:
    """The simulator service as it runs alone on the box, and what was dropped (warnings)."""
    svc = copy.deepcopy(service)
    warnings = []
    if not svc.get("image"):
        raise ValueError("the simulator service has no `image:` (a `build:` cannot run on the box)")
    for key in DROP_KEYS:
        svc.pop(key, None)
    for key in [k for k, v in svc.items() if v is None]:  # `entrypoint: null` from `config`
        del svc[key]
    command = svc.get("command")
    old_port = _port_in(command)
    if isinstance(command, str):
        svc["command"] = _set_port_flags(shlex.split(command), port)
    elif isinstance(command, list):
        svc["command"] = _set_port_flags([str(c) for c in command], port)
    if svc.get("network_mode") not in (None, "host"):
        warnings.append(f"network_mode {svc['network_mode']!r} dropped")
        svc.pop("network_mode")
    if svc.get("network_mode") == "host":
        svc.pop("ports", None)
    else:
        svc["ports"] = [f"{p}:{p}" for p in (port, port + 1, port + 2)]
    kept = []
    for vol in svc.get("volumes") or []:
        if isinstance(vol, dict) and vol.get("type") == "bind":
            warnings.append(
                f"bind mount {vol.get('source')} -> {vol.get('target')} dropped "
                "(local path; it does not exist on the box)"
            )
            continue
        if isinstance(vol, str) and vol.split(":", 1)[0].startswith((".", "/", "~")):
            warnings.append(f"bind mount {vol} dropped (local path; it does not exist on the box)")
            continue
        kept.append(vol)
    if "volumes" in svc:
        svc["volumes"] = kept
    check = svc.get("healthcheck")
    if isinstance(check, dict) and old_port and old_port != port and "test" in check:
        check["test"] = _replace_port(check["test"], old_port, port)
    svc["restart"] = {"no": "no", "on-failure": "on-failure", "always": "always"}[restart]
    labels = svc.get("labels") or {}
    if isinstance(labels, list):
        labels = dict(item.split("=", 1) if "=" in item else (item, "") for item in labels)
    labels["carla-launch.port"] = str(port)
    svc["labels"] = labels
    return svc, warnings


def render_remote_compose(src: SimulatorSource, profile: Profile, port: int) -> str:
    """The compose file written to the box (JSON, which compose reads as YAML)."""
    svc, _ = remote_service(src.service, port, profile.server.restart)
    doc: dict[str, Any] = {
        "name": f"carla-launch-{profile.server.tmux_session}".lower(),
        "services": {src.name: svc},
    }
    volumes = [
        str(v["source"])
        for v in svc.get("volumes") or []
        if isinstance(v, dict) and v.get("type") == "volume" and v.get("source")
    ]
    if volumes:
        doc["volumes"] = {v: {} for v in volumes}
    header = {"x-carla-launch": f"generated from {src.file.name}; do not edit"}
    return json.dumps({**header, **doc}, indent=2) + "\n"


def compose_cli() -> list[str] | None:
    """How to run compose here: `docker compose` or `docker-compose`, else None."""
    if shutil.which("docker") and proc.run(["docker", "compose", "version"], 20).ok:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def load_simulator(profile: Profile) -> SimulatorSource:
    """Find the simulator service in the profile's compose folder, as compose resolves it."""
    from carla_launcher.compose.discover import find_entries
    from carla_launcher.compose.project import Project
    from carla_launcher.compose.simulator import find_simulator

    folder = profile.compose_dir
    entries = (
        [profile.local_path(profile.compose.file)] if profile.compose.file else find_entries(folder)
    )
    project = Project()
    for entry in entries:
        services = project.model(entry)
        sim = find_simulator(
            entry, services, profile.compose.simulator, required=bool(profile.compose.file)
        )
        if sim is None:
            continue
        resolved = _resolved(entry, sim.name)
        if resolved is None:
            raw = project.file(sim.file).services.get(sim.name)
            resolved = _plain(raw)
            if sim.image:
                resolved["image"] = sim.image
            if sim.command is not None:
                resolved["command"] = sim.command
        return SimulatorSource(sim.name, entry, resolved)
    raise InputError(
        profile.path,
        None,
        f"no compose file in {folder} has a simulator service "
        "(set compose.file or compose.simulator)",
        "server.mode",
    )


def _resolved(entry: Path, name: str) -> dict[str, Any] | None:
    cli = compose_cli()
    if cli is None:
        return None
    done = proc.run(
        [*cli, "-f", str(entry), "config", "--format", "json"], 60, cwd=str(entry.parent)
    )
    if not done.ok:
        return None
    try:
        service: dict[str, Any] = json.loads(done.stdout)["services"][name]
    except (ValueError, KeyError):
        return None
    return service


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def compose_up_script() -> str:
    """Deploy step: run the simulator service with docker compose, as the login user."""
    return """P=$CL_PROJECT
command -v docker >/dev/null 2>&1 || die "docker is not installed on the box (server.mode: compose)"
docker compose version >/dev/null 2>&1 || die "docker compose v2 is not available on the box"
echo "starting the simulator with docker compose (project $P)"
docker compose -p "$P" -f "$SDIR/compose.yaml" up -d --remove-orphans >&2 ||
  die "docker compose up failed"
rm -f "$SDIR/stopped"  # running again: no longer stopped on purpose
"""
