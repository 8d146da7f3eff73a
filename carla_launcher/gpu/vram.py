"""The VRAM rule: run server and agent on one GPU, or the server on a box? Pure.

Takes a `GpuReport` (nvidia/smi.py, roles marked by nvidia/roles.py) and returns verdicts:
no processes, no clock, no files. `gpu/local.py` and `gpu/remote.py` gather the reports;
`gpu` renders the verdicts, `doctor` turns them into checks, `status` reads `server_vram`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from carla_launcher.nvidia.smi import Gpu, GpuProcess, GpuReport

# -- the rule -------------------------------------------------------------------------------------
#: Server and agent on one GPU need *more than* this much VRAM (the 10 GB rule; GB = GiB, as
#: cards are sold: a "12 GB" card reports 12288 MiB). Configurable via `need_mib`.
DEFAULT_NEED_MIB = 10 * 1024
#: CARLA's own documentation: the server needs at least a 6 GB GPU, 8 GB recommended. Used for
#: the box, where only the server runs.
SERVER_MIN_MIB = 6 * 1024
SERVER_RECOMMENDED_MIB = 8 * 1024


@dataclass(frozen=True)
class Verdict:
    """Where to run the server, and the one sentence that says why."""

    mode: Literal["local", "distributed"]
    reason: str
    gpu: int | None = None  # the GPU the verdict is about


def gib(mib: int | None) -> str:
    """MiB as the GB users read on their card's box ("?" when unknown)."""
    return "?" if mib is None else f"{mib / 1024:.1f} GB"


def available_mib(report: GpuReport, gpu: Gpu) -> int | None:
    """Free VRAM plus what CARLA and the agent already hold: they would be replaced, not added."""
    free = gpu.free
    if free is None:
        return None
    ours = sum(p.used_mib or 0 for p in report.processes_on(gpu) if p.role is not None)
    return free + ours


def local_verdict(report: GpuReport, need_mib: int = DEFAULT_NEED_MIB) -> Verdict:
    """Run server and agent here only when one GPU has more than `need_mib` available.

    Not on a MIG GPU (MIG instances have no graphics, so no Vulkan for CARLA); the best GPU is
    the one with the most available memory."""
    need = f"server and agent together need more than {gib(need_mib)}"
    if report.status != "ok":
        return Verdict("distributed", f"no usable NVIDIA GPU here ({report.message})")
    usable = [g for g in report.gpus if not g.mig]
    if not usable:
        return Verdict("distributed", "every GPU here is in MIG mode (no Vulkan for CARLA)")
    scored = [(available_mib(report, g), g) for g in usable]
    known = [(a, g) for a, g in scored if a is not None]
    if not known:
        return Verdict("distributed", "nvidia-smi reports no memory figures here")
    best_avail, best = max(known, key=lambda t: (t[0], -t[1].index))
    label = f"GPU {best.index} ({best.name}, {gib(best.total_mib)})"
    if best_avail > need_mib:
        pin = (
            f" (pin CARLA to it: server.gpu / -graphicsadapter, whose Vulkan index may differ "
            f"from {best.index})"
            if len(report.gpus) > 1
            else ""
        )
        return Verdict("local", f"{label} has {gib(best_avail)} available; {need}{pin}", best.index)
    if best.total_mib is not None and best.total_mib <= need_mib:
        return Verdict("distributed", f"{label} is too small: {need}", best.index)
    others = (best.total_mib or 0) - best_avail
    return Verdict(
        "distributed",
        f"{label} has only {gib(best_avail)} available ({gib(others)} used by other programs); "
        f"{need}",
        best.index,
    )


def box_vram(
    report: GpuReport,
    gpu_index: int | None = None,
    minimum_mib: int = SERVER_MIN_MIB,
    recommended_mib: int = SERVER_RECOMMENDED_MIB,
) -> tuple[Literal["ok", "warning", "failing"], str]:
    """Is there room for the CARLA server on the box (only the server runs there)?
    Names who else holds memory, since a shared box is the usual reason there is none."""
    gpus = [g for g in report.gpus if gpu_index is None or g.index == gpu_index]
    if report.status != "ok" or not gpus:
        return "failing", report.message or f"no GPU {gpu_index} on the box"
    scored = [(available_mib(report, g) or 0, g) for g in gpus if not g.mig]
    if not scored:
        return "failing", "every GPU is in MIG mode (no graphics for CARLA)"
    avail, g = max(scored, key=lambda t: (t[0], -t[1].index))
    others = [p for p in report.processes_on(g) if p.role is None]
    who = ", ".join(
        f"{p.name.rsplit('/', 1)[-1]} ({p.user or 'pid ' + str(p.pid)}, {gib(p.used_mib)})"
        for p in others[:3]
    )
    detail = f"GPU {g.index} ({g.name}): {gib(avail)} available of {gib(g.total_mib)}"
    if who:
        detail += f"; others using it: {who}"
    if avail < minimum_mib:
        return "failing", detail + f"; the server needs at least {gib(minimum_mib)}"
    if avail < recommended_mib:
        return "warning", detail + f"; {gib(recommended_mib)} recommended"
    return "ok", detail


def carla_usage(report: GpuReport) -> list[GpuProcess]:
    """The CARLA server's processes and their VRAM (for `status`)."""
    return [p for p in report.processes if p.role == "carla"]


def server_vram(report: GpuReport) -> tuple[int, int | None]:
    """(number of CARLA processes, MiB they hold) for `status`; MiB None when unknown."""
    carla = carla_usage(report)
    if not carla:
        return 0, None
    used = [p.used_mib for p in carla]
    return len(carla), None if any(u is None for u in used) else sum(
        u for u in used if u is not None
    )
