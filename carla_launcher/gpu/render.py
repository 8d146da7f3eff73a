"""What `carla-launch gpu` prints: a table per machine and what it means for CARLA, or JSON. Pure.

The last line applies the VRAM rule (`vram.py`): on this machine, whether server and agent fit
on one GPU (local mode); on a box, whether there is room for the server.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from carla_launcher.gpu.vram import DEFAULT_NEED_MIB, box_vram, gib, local_verdict
from carla_launcher.nvidia import smi

ROLE_LABEL: dict[str | None, str] = {"carla": "CARLA", "agent": "agent", None: "other"}
ROOM_WORDS = {
    "ok": "room for the CARLA server",
    "warning": "tight for the CARLA server",
    "failing": "no room for the CARLA server",
}
#: Columns of numbers, right-aligned.
_RIGHT = {"USED", "TOTAL", "FREE", "UTIL", "VRAM", "PID", "GPU"}
#: Memory a GPU reports in use that no listed process accounts for, worth a line.
_UNLISTED_MIB = 256


def _pct(used: int | None, total: int | None) -> str:
    return f"{100 * used / total:.0f}%" if used is not None and total else "?"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Columns padded to their widest cell; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [
            c.rjust(w) if rows[0][i] in _RIGHT else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=False))
        ]
        out.append("  ".join(cells).rstrip())
    return out


def _gpu_rows(report: smi.GpuReport) -> list[str]:
    rows: list[tuple[str, ...]] = [("GPU", "NAME", "USED", "TOTAL", "FREE", "UTIL", "")]
    for g in report.gpus:
        note = "MIG on: no graphics for CARLA" if g.mig else ""
        rows.append(
            (
                str(g.index),
                g.name,
                f"{gib(g.used_mib)} ({_pct(g.used_mib, g.total_mib)})",
                gib(g.total_mib),
                gib(g.free),
                "?" if g.util_pct is None else f"{g.util_pct}%",
                note,
            )
        )
    return _table(rows)


def _process_rows(report: smi.GpuReport) -> list[str]:
    if not report.processes:
        return ["no process holds GPU memory (nvidia-smi lists compute processes only)"]
    rows: list[tuple[str, ...]] = [("WHO", "GPU", "VRAM", "PID", "USER", "PROCESS")]
    for p in sorted(
        report.processes,
        key=lambda p: (report.gpu_index(p.gpu_uuid) or 0, -(p.used_mib or 0)),
    ):
        idx = report.gpu_index(p.gpu_uuid)
        name = p.name.rsplit("/", 1)[-1] + (" (container)" if p.in_container else "")
        rows.append(
            (
                ROLE_LABEL[p.role],
                "?" if idx is None else str(idx),
                gib(p.used_mib),
                str(p.pid),
                p.user or "?",
                name,
            )
        )
    return _table(rows)


def _unlisted(report: smi.GpuReport) -> list[str]:
    """Memory held by processes nvidia-smi does not list (graphics, other containers)."""
    lines = []
    for g in report.gpus:
        on = report.processes_on(g)
        listed = sum(p.used_mib or 0 for p in on)
        known = bool(on) and all(p.used_mib is not None for p in on)
        if g.used_mib is not None and known and g.used_mib - listed >= _UNLISTED_MIB:
            lines.append(
                f"GPU {g.index}: {gib(g.used_mib - listed)} held by processes not listed "
                "(graphics, other containers)"
            )
    return lines


def render(report: smi.GpuReport, *, box: bool, need_mib: int = DEFAULT_NEED_MIB) -> str:
    """The table for one machine, and the line that says what it means for running CARLA."""
    lines: list[str] = []
    if report.status != "ok":
        lines.append(f"{report.where}: no usable NVIDIA GPU: {report.message}")
        fix = smi.SMI_FIXES.get(report.status)
        if fix:
            lines.append(f"  fix: {fix}")
    else:
        drivers = sorted({g.driver for g in report.gpus if g.driver})
        src = " via NVML" if report.source == "nvml" else ""
        lines.append(
            f"{report.where}: {len(report.gpus)} GPU{'s' if len(report.gpus) != 1 else ''}"
            f" · driver {', '.join(drivers) or '?'}{src}"
        )
        lines += _gpu_rows(report)
        lines.append("")
        lines += _process_rows(report)
        lines += _unlisted(report)
    lines.append("")
    if box:
        status, detail = box_vram(report)
        lines.append(f"{ROOM_WORDS[status]}: {detail}")
    else:
        v = local_verdict(report, need_mib)
        lines.append(f"verdict: {v.mode}: {v.reason}")
    return "\n".join(lines)


def to_json(
    report: smi.GpuReport, *, box: bool, need_mib: int = DEFAULT_NEED_MIB, host: str | None = None
) -> dict[str, Any]:
    """One entry of `gpu --json`'s `hosts` (schemas/gpu.schema.json): the facts, each process's
    GPU index, the verdict. `host`: the profile's host (None: this machine)."""
    d = {"host": host, **asdict(report)}
    for p, src in zip(d["processes"], report.processes, strict=True):
        p["gpu"] = report.gpu_index(src.gpu_uuid)
    if box:
        status, detail = box_vram(report)
        d["server_room"] = {"status": status, "detail": detail}
    else:
        v = local_verdict(report, need_mib)
        d["verdict"] = {"mode": v.mode, "reason": v.reason, "gpu": v.gpu}
    return d
