"""Collecting the doctor's facts: the imperative shell around the pure checks.

The local facts (nvidia-smi or NVML, `docker info`, 50-500 ms each) are gathered while every
box answers its one round trip (the DOCTOR facts of `box/facts.py`; DOCTOR_SLURM on a Slurm
login node), so a whole run costs about one nvidia-smi plus one ssh connection.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING

from carla_launcher import parallel, proc
from carla_launcher.box import facts as box_facts
from carla_launcher.box import transport
from carla_launcher.doctor.checks_box import box_checks
from carla_launcher.doctor.checks_local import TOOLKIT_PROGRAMS, LocalFacts, local_checks
from carla_launcher.doctor.model import Mode, Report, verdict_of
from carla_launcher.gpu.local import local_report
from carla_launcher.gpu.vram import DEFAULT_NEED_MIB
from carla_launcher.nvidia.smi import GpuReport

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

LOCAL_PROGRAMS = ("tmux", "ssh", *TOOLKIT_PROGRAMS)
DOCKER_INFO = ("docker", "info", "--format", "{{json .}}")
DOCKER_TIMEOUT = 10.0
SSH_TIMEOUT = 20.0


def _docker_info() -> proc.Result | None:
    """`docker info` as JSON; None when there is no docker CLI."""
    return proc.run(DOCKER_INFO, DOCKER_TIMEOUT) if shutil.which("docker") else None


def gather_local() -> LocalFacts:
    """The local facts; nvidia-smi and docker run in parallel (each takes 50-500 ms)."""
    which = {p: shutil.which(p) for p in LOCAL_PROGRAMS}
    asks: list[Callable[[], GpuReport | proc.Result | None]] = [local_report, _docker_info]
    answers = parallel.each(asks, lambda ask: ask())
    gpu = next(a for a in answers if isinstance(a, GpuReport))
    docker = next((a for a in answers if isinstance(a, proc.Result)), None)
    return LocalFacts(gpu, docker, which)


def run_doctor(
    profile: Profile | None,
    need_mib: int = DEFAULT_NEED_MIB,
    forced: Mode | None = None,
    ssh_timeout: float = SSH_TIMEOUT,
) -> Report:
    """All checks: the local ones while the boxes answer their one round trip each."""
    hosts: list[str] = list(profile.remote.hosts) if profile else []
    script = (
        box_facts.facts_script(
            box_facts.DOCTOR_SLURM if profile.server.mode == "slurm" else box_facts.DOCTOR,
            root=profile.server.package.root,
            server_user=profile.server.user,
            session=profile.server.tmux_session,
        )
        if profile is not None
        else ""
    )

    def ask(host: str | None) -> LocalFacts | proc.Result:
        """This machine (None) or one box."""
        if host is None or profile is None:
            return gather_local()
        return transport.run(profile, host, script, ssh_timeout)

    answers = parallel.each([None, *hosts], ask)
    facts = next(a for a in answers if isinstance(a, LocalFacts))
    checks, local = local_checks(facts, need_mib, forced)
    if profile is not None:
        boxes = [a for a in answers if isinstance(a, proc.Result)]
        for h, r in zip(hosts, boxes, strict=True):
            checks += box_checks(profile, h, r.rc, r.stdout, r.stderr)
    return verdict_of(checks, local, profile, forced)
