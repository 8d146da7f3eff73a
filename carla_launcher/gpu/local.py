"""This machine's GPU report: NVML when it answers, else nvidia-smi's CSV; processes named.

`CARLA_LAUNCH_GPU_BACKEND=smi` forces the CSV path (the tests set it: no GPU here), `nvml` or
`auto` (the default) try NVML first. psutil names the processes and is imported on first use.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from carla_launcher import proc
from carla_launcher.gpu.nvml import nvml_snapshot
from carla_launcher.nvidia import roles, smi

SMI_TIMEOUT = 15.0  # nvidia-smi can take seconds when the driver wakes the GPU up


def smi_snapshot(where: str = "this machine") -> smi.GpuReport:
    """Both CSV queries through the nvidia-smi on PATH (real, or the tests' fake)."""
    r = proc.run(smi.smi_gpu_argv(with_mig=True), SMI_TIMEOUT)
    fields: tuple[str, ...] = (*smi.GPU_FIELDS, smi.MIG_FIELD)
    if r.rc != 0 and smi.unknown_field(r.stdout + r.stderr):
        r = proc.run(smi.smi_gpu_argv(with_mig=False), SMI_TIMEOUT)
        fields = smi.GPU_FIELDS
    said = r.stdout + r.stderr
    if r.rc != 0 or smi.classify_smi_failure(r.rc, said):
        return smi.smi_report(r.rc, said, None, "", fields, where)
    apps = proc.run(smi.smi_apps_argv(), SMI_TIMEOUT)
    return smi.smi_report(r.rc, r.stdout, apps.rc, apps.stdout, fields, where)


def _cgroup_says_container(pid: int) -> bool:
    """From /proc/PID/cgroup; False when it cannot be read (then the parents tell)."""
    try:
        return roles.cgroup_in_container(Path(f"/proc/{pid}/cgroup").read_text(encoding="utf-8"))
    except OSError:
        return False


def describe_local(pids: list[int]) -> dict[int, roles.ProcInfo]:
    """Name local pids through psutil: name, user, command line, started by a container?"""
    import psutil

    out: dict[int, roles.ProcInfo] = {}
    for pid in pids:
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                name = p.name()
                user = p.username()
                cmd = " ".join(p.cmdline())
            in_container = _cgroup_says_container(pid)
            if not in_container:
                in_container = any("containerd-shim" in a.name() for a in p.parents())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        out[pid] = roles.ProcInfo(name=name, user=user, cmdline=cmd, in_container=in_container)
    return out


def local_report() -> smi.GpuReport:
    """This machine's GPUs, processes named and marked."""
    backend = os.environ.get("CARLA_LAUNCH_GPU_BACKEND", "auto")
    report = None
    if backend in ("auto", "nvml"):
        report = nvml_snapshot()
    if report is None:
        report = smi_snapshot()
    me = getpass.getuser()
    table = describe_local([p.pid for p in report.processes])
    return roles.with_roles(report, table, owners=None, agent_users=frozenset({me}))
