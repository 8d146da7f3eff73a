"""A box's GPU report: the GPU facts of `box/facts.py`, in one round trip over `box/transport`.

The box is asked for nvidia-smi's CSV and `ps` of the GPU processes in one script, so a report
costs one ssh connection; a box that does not answer is a report too ("unreachable"), so
that a pool of boxes renders with the one that failed among the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carla_launcher import parallel, proc
from carla_launcher.box import facts as box_facts
from carla_launcher.box import transport
from carla_launcher.box.explain import classify
from carla_launcher.gpu.local import local_report
from carla_launcher.nvidia import smi

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

BOX_TIMEOUT = 20.0


def box_label(profile: Profile, host: str | None) -> str:
    """How a report names the box: its host, or this machine for `connector: local`."""
    return "this machine (connector: local)" if profile.remote.connector == "local" else str(host)


def gpu_script(profile: Profile) -> str:
    """The box script that prints the GPU facts (also run in a loop by `watch.BoxStream`)."""
    return box_facts.facts_script(
        box_facts.GPU, server_user=profile.server.user, session=profile.server.tmux_session
    )


def parse_gpu(stdout: str, profile: Profile, host: str | None) -> smi.GpuReport:
    """The report in what `gpu_script` printed, processes marked with their roles."""
    where = box_label(profile, host)
    return box_facts.parse_facts(stdout, where=where, server_user=profile.server.user).gpu


def box_report(profile: Profile, host: str | None, timeout: float = BOX_TIMEOUT) -> smi.GpuReport:
    """A box's GPUs through one ssh round trip (the GPU sections of the box script)."""
    where = box_label(profile, host)
    r = transport.run(profile, host, gpu_script(profile), timeout)
    if r.rc == proc.TIMED_OUT:
        return smi.GpuReport(
            "unreachable", message=f"no answer from {host} within {timeout:.0f} s", where=where
        )
    if profile.remote.connector != "local":
        ssh = classify(r.rc, r.stderr)
        if ssh.kind != "ok":
            return smi.GpuReport(
                "unreachable", message=f"cannot reach {host}: {ssh.line}", where=where
            )
    return parse_gpu(r.stdout, profile, host)


def reports(profile: Profile | None) -> list[smi.GpuReport]:
    """This machine's report, or one per host of the profile (asked in parallel)."""
    if profile is None:
        return [local_report()]
    hosts: list[str | None] = list(profile.remote.hosts) or [None]
    return parallel.each(hosts, lambda h: box_report(profile, h))
