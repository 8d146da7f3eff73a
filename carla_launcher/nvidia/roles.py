"""Whose process is it: a CARLA server of ours, an agent, or someone else's. Pure.

The process table (psutil here, `ps` on a box) names what nvidia-smi lists by pid; the role
decides which VRAM counts as ours (it would be replaced, not added) in the VRAM rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from carla_launcher.nvidia.smi import GpuReport, Role

_CARLA = re.compile(r"Carla(UE4|Unreal)", re.IGNORECASE)
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
_CONTAINER_CGROUP = re.compile(r"docker|containerd|libpod|kubepods|/lxc/")


def is_carla(name: str) -> bool:
    """Is this program name (or path) a CARLA server's (CarlaUE4*, CarlaUnreal*)?"""
    return bool(_CARLA.search(name))


@dataclass(frozen=True)
class ProcInfo:
    """What the process table says about a pid (psutil here, `ps` on a box)."""

    name: str
    user: str | None = None
    cmdline: str = ""
    in_container: bool = False


def process_role(
    info: ProcInfo, owners: frozenset[str] | None = None, agent_users: frozenset[str] | None = None
) -> Role | None:
    """Whose GPU memory is it? "carla": a CARLA server (CarlaUE4*/CarlaUnreal*) run by one of
    `owners` (None: any user counts, as on this machine). "agent": something a container runs,
    or a python process of one of `agent_users` (None: no agent runs on this machine, as on a
    box). None: someone else's, the thing that makes a shared GPU too small."""
    exe = info.cmdline.split(" ", 1)[0] if info.cmdline else ""
    if _CARLA.search(info.name) or _CARLA.search(exe):
        return (
            "carla" if owners is None or (info.user is not None and info.user in owners) else None
        )
    if agent_users is None:
        return None
    base = info.name.rsplit("/", 1)[-1]
    if info.in_container or (
        _PYTHON.match(base) and info.user is not None and info.user in agent_users
    ):
        return "agent"
    return None


def cgroup_in_container(cgroup_text: str) -> bool:
    """/proc/PID/cgroup of a process docker (or podman, k8s, lxc) started."""
    return bool(_CONTAINER_CGROUP.search(cgroup_text))


def same_program(smi_name: str, table_name: str) -> bool:
    """Does the process table's name fit nvidia-smi's? nvidia-smi shows host pids: when we run
    inside a container, the same pid here is another program, and its name must not be used."""
    a = smi_name.rsplit("/", 1)[-1][:15]
    b = table_name.rsplit("/", 1)[-1][:15]
    return bool(a and b) and (a.startswith(b) or b.startswith(a))


def with_roles(
    report: GpuReport,
    table: dict[int, ProcInfo] | None = None,
    *,
    owners: frozenset[str] | None = None,
    agent_users: frozenset[str] | None = None,
) -> GpuReport:
    """Name the GPU's processes from the process table where it knows them, and mark roles."""
    table = table or {}
    procs = []
    for p in report.processes:
        info = table.get(p.pid)
        known = p.name not in ("?", "") and not p.name.startswith("[")
        if info and (not known or same_program(p.name, info.name)):
            p = replace(
                p,
                name=info.name or p.name,
                user=info.user,
                cmdline=info.cmdline,
                in_container=info.in_container,
            )
        role = process_role(
            ProcInfo(p.name, p.user, p.cmdline, p.in_container), owners, agent_users
        )
        procs.append(replace(p, role=role))
    return replace(report, processes=tuple(procs))


def parse_ps(text: str) -> dict[int, ProcInfo]:
    """The box script's `ps` section: `PID CONTAINER(0|1) USER ARGS...` per line."""
    out: dict[int, ProcInfo] = {}
    for line in text.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        args = parts[3] if len(parts) > 3 else ""
        exe = args.split(" ", 1)[0].rsplit("/", 1)[-1] if args else "?"
        out[int(parts[0])] = ProcInfo(
            name=exe, user=parts[2], cmdline=args, in_container=parts[1] == "1"
        )
    return out
