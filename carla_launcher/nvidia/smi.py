"""nvidia-smi's CSV interface: the command lines, and pure parsers of what they print.

Why CSV and not nvidia-smi's table: the `--query-*` CSV output is the interface NVIDIA keeps
stable for scripts; the table changes layout between drivers. Everything here takes text and
returns plain data (no processes): `gpu/local.py` runs the commands here, `box/facts.py` on a box.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

#: Whose GPU memory a process holds (see `nvidia.roles`); None: someone else's.
Role = Literal["carla", "agent"]

# -- nvidia-smi queries ---------------------------------------------------------------------------
GPU_FIELDS = (
    "index",
    "name",
    "uuid",
    "memory.total",
    "memory.used",
    "memory.free",
    "utilization.gpu",
    "driver_version",
)
#: Asked for too, so that MIG shows; drivers before R450 do not know it and we then ask without.
MIG_FIELD = "mig.mode.current"
APP_FIELDS = ("gpu_uuid", "pid", "process_name", "used_memory")


def smi_gpu_argv(with_mig: bool = True) -> list[str]:
    fields = GPU_FIELDS + ((MIG_FIELD,) if with_mig else ())
    return ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]


def smi_apps_argv() -> list[str]:
    return [
        "nvidia-smi",
        f"--query-compute-apps={','.join(APP_FIELDS)}",
        "--format=csv,noheader,nounits",
    ]


def unknown_field(output: str) -> bool:
    """nvidia-smi's answer to a field its driver does not know (old drivers and "
    "`mig.mode.current`)."""
    return "is not a valid field to query" in output


Status = Literal["ok", "missing", "no-devices", "mismatch", "no-driver", "error", "unreachable"]


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    uuid: str
    total_mib: int | None
    used_mib: int | None
    free_mib: int | None
    util_pct: int | None
    driver: str | None
    mig: bool | None = None  # None: the driver could not say

    @property
    def free(self) -> int | None:
        """Free MiB; derived from total - used where nvidia-smi said [N/A]."""
        if self.free_mib is not None:
            return self.free_mib
        if self.total_mib is not None and self.used_mib is not None:
            return self.total_mib - self.used_mib
        return None


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    gpu_uuid: str
    name: str  # nvidia-smi's process_name, replaced by what the process table says when known
    used_mib: int | None
    user: str | None = None
    in_container: bool = False
    cmdline: str = ""
    role: Role | None = None


@dataclass(frozen=True)
class GpuReport:
    """What one machine's GPUs look like, or why we cannot tell (status != ok)."""

    status: Status
    gpus: tuple[Gpu, ...] = ()
    processes: tuple[GpuProcess, ...] = ()
    message: str = ""
    where: str = "this machine"
    source: str = "nvidia-smi"

    def gpu_index(self, uuid: str) -> int | None:
        for g in self.gpus:
            if g.uuid == uuid:
                return g.index
        return None

    def processes_on(self, gpu: Gpu) -> list[GpuProcess]:
        return [p for p in self.processes if p.gpu_uuid == gpu.uuid]


# -- parsing --------------------------------------------------------------------------------------
_UNIT = re.compile(r"\s*(MiB|%|W|MHz|C)$")


def parse_int(value: str) -> int | None:
    """`1234`, `1234 MiB` -> 1234; `[N/A]`, `[Not Supported]`, `N/A`, `` -> None."""
    v = _UNIT.sub("", value.strip())
    if not v or v.startswith("[") or v.upper() == "N/A":
        return None
    try:
        return int(float(v))
    except ValueError:
        return None


def _text(value: str) -> str | None:
    v = value.strip()
    return None if not v or v.startswith("[") or v.upper() == "N/A" else v


def _split(line: str, n: int, free_at: int) -> list[str] | None:
    """Split a CSV line of n fields. nvidia-smi separates with ", " and does not quote, so a
    field at `free_at` (a name or a path) may hold the separator: the extra parts are joined
    back into it. Returns None for a line with too few fields."""
    sep = ", " if line.count(", ") >= n - 1 else ","
    parts = line.split(sep)
    if len(parts) < n:
        return None
    extra = len(parts) - n
    if extra:
        parts = [
            *parts[:free_at],
            sep.join(parts[free_at : free_at + extra + 1]),
            *parts[free_at + extra + 1 :],
        ]
    return [p.strip() for p in parts]


def _rows(text: str, names: list[str], free_field: str) -> Iterator[dict[str, str]]:
    """Each CSV line as {field: value}; `free_field` (a name or path) may hold commas.
    Blank lines and nvidia-smi's "No running processes found" are skipped."""
    for line in text.splitlines():
        if not line.strip() or "No running" in line:
            continue
        parts = _split(line, len(names), names.index(free_field))
        if parts is not None:
            yield dict(zip(names, parts, strict=False))


def parse_gpus(text: str, fields: Iterable[str] = GPU_FIELDS) -> tuple[Gpu, ...]:
    """`--query-gpu=<fields> --format=csv,noheader,nounits` -> Gpu per line."""
    out: list[Gpu] = []
    for row in _rows(text, list(fields), "name"):
        index = parse_int(row.get("index", ""))
        if index is None:
            continue
        mig_text = (_text(row.get(MIG_FIELD, "")) or "").lower()
        out.append(
            Gpu(
                index=index,
                name=row.get("name", "").strip(),
                uuid=row.get("uuid", "").strip(),
                total_mib=parse_int(row.get("memory.total", "")),
                used_mib=parse_int(row.get("memory.used", "")),
                free_mib=parse_int(row.get("memory.free", "")),
                util_pct=parse_int(row.get("utilization.gpu", "")),
                driver=_text(row.get("driver_version", "")),
                mig={"enabled": True, "disabled": False}.get(mig_text),
            )
        )
    return tuple(out)


def parse_apps(text: str, fields: Iterable[str] = APP_FIELDS) -> tuple[GpuProcess, ...]:
    """`--query-compute-apps=<fields> --format=csv,noheader,nounits` -> GpuProcess per line.
    Process names are paths and may hold commas; they are kept whole."""
    out: list[GpuProcess] = []
    for row in _rows(text, list(fields), "process_name"):
        pid = parse_int(row.get("pid", ""))
        if pid is None:
            continue
        out.append(
            GpuProcess(
                pid=pid,
                gpu_uuid=row.get("gpu_uuid", "").strip(),
                name=_text(row.get("process_name", "")) or "?",
                used_mib=parse_int(row.get("used_memory", "")),
            )
        )
    return tuple(out)


def classify_smi_failure(rc: int, output: str) -> tuple[Status, str] | None:
    """Why nvidia-smi gave no table, as (status, one line for a user); None if it worked.

    rc 127 is the shell's "command not found" (the remote script reports it that way too)."""
    text = output.strip()
    first = text.splitlines()[0].strip() if text else ""
    if rc == 127 or (rc != 0 and "not found" in first and "nvidia-smi" in first):
        return "missing", "nvidia-smi not found: no NVIDIA driver installed"
    if "No devices were found" in text:
        return "no-devices", "No devices were found: the NVIDIA driver sees no GPU"
    if "version mismatch" in text:
        lib = re.search(r"NVML library version:\s*(\S+)", text)
        extra = f" (NVML library {lib.group(1)})" if lib else ""
        return (
            "mismatch",
            f"Driver/library version mismatch{extra}: the driver was upgraded, the old kernel "
            f"module is still loaded",
        )
    if (
        "couldn't communicate with the NVIDIA driver" in text
        or "NVIDIA driver is not loaded" in text
    ):
        return "no-driver", "nvidia-smi cannot talk to the NVIDIA driver (kernel module not loaded)"
    if rc != 0:
        return "error", f"nvidia-smi failed (exit {rc}): {first or 'no output'}"
    if not text:
        return "no-devices", "nvidia-smi listed no GPU"
    return None


def smi_report(
    gpu_rc: int,
    gpu_out: str,
    apps_rc: int | None,
    apps_out: str,
    fields: Iterable[str] = GPU_FIELDS,
    where: str = "this machine",
) -> GpuReport:
    """The two nvidia-smi queries -> one report. A failed process query keeps the GPUs."""
    failure = classify_smi_failure(gpu_rc, gpu_out)
    if failure:
        return GpuReport(status=failure[0], message=failure[1], where=where)
    gpus = parse_gpus(gpu_out, fields)
    if not gpus:
        return GpuReport(
            status="error",
            message=f"could not read nvidia-smi's output: {gpu_out.strip()[:80]!r}",
            where=where,
        )
    procs = parse_apps(apps_out) if apps_rc == 0 else ()
    return GpuReport(status="ok", gpus=gpus, processes=procs, where=where)


#: One-line fixes for each way nvidia-smi can fail.
SMI_FIXES: dict[str, str] = {
    "missing": "install the NVIDIA driver (Ubuntu: `sudo ubuntu-drivers install`), or run the "
    "server on a GPU box",
    "no-devices": "check `lspci | grep -i nvidia`: the GPU may be off, unseated or passed through "
    "to a VM",
    "mismatch": "reboot: the driver was upgraded and the loaded kernel module is the old one",
    "no-driver": "load the driver (`sudo modprobe nvidia`, or reboot; with Secure Boot, enrol the "
    "module key)",
    "error": "run `nvidia-smi` by hand to see the full error",
    "unreachable": "fix the ssh connection first (see the box checks)",
}
