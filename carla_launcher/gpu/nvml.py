"""This machine's GPUs through NVML (the `nvidia-ml-py` package, module `pynvml`). Local only.

NVML also lists graphics-only processes (a Vulkan CARLA can be one), which nvidia-smi's
`--query-compute-apps` does not, and a watcher keeps one NVML session open instead of starting
nvidia-smi every second. pynvml is imported on first use, so `carla-launch --help` stays fast
and the package stays optional.
"""

from __future__ import annotations

from typing import Any

from carla_launcher.nvidia import smi

_nvml: Any = None  # the pynvml module once nvmlInit worked; the session stays open (see top)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _mib(v: Any) -> int | None:
    """Bytes as MiB; NVML's "not available" (2**64 - 1) as None."""
    return None if v is None or v >= 2**63 else int(v) // (1024 * 1024)


def _session() -> Any:
    """The pynvml module with NVML initialised, or None when it is missing or the driver fails."""
    global _nvml
    if _nvml is None:
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception:  # noqa: BLE001  NVMLError_LibraryNotFound, _DriverNotLoaded, _LibRmVersionMismatch...
            return None
        _nvml = pynvml
    return _nvml


def nvml_snapshot(where: str = "this machine") -> smi.GpuReport | None:
    """The same report as nvidia-smi's; None when NVML is not installed or the driver does not
    answer (then nvidia-smi runs and says why in its own words)."""
    global _nvml
    n = _session()
    if n is None:
        return None
    try:
        driver = _text(n.nvmlSystemGetDriverVersion())
        gpus: list[smi.Gpu] = []
        procs: dict[int, smi.GpuProcess] = {}
        for i in range(n.nvmlDeviceGetCount()):
            h = n.nvmlDeviceGetHandleByIndex(i)
            uuid = _text(n.nvmlDeviceGetUUID(h))
            mem = n.nvmlDeviceGetMemoryInfo(h)
            try:
                util: int | None = int(n.nvmlDeviceGetUtilizationRates(h).gpu)
            except n.NVMLError:
                util = None
            try:
                mig: bool | None = n.nvmlDeviceGetMigMode(h)[0] == n.NVML_DEVICE_MIG_ENABLE
            except n.NVMLError:
                mig = None
            gpus.append(
                smi.Gpu(
                    i,
                    _text(n.nvmlDeviceGetName(h)),
                    uuid,
                    _mib(mem.total),
                    _mib(mem.used),
                    _mib(mem.free),
                    util,
                    driver,
                    mig,
                )
            )
            for fn in (
                n.nvmlDeviceGetComputeRunningProcesses,
                n.nvmlDeviceGetGraphicsRunningProcesses,
            ):
                try:
                    for p in fn(h):
                        prev = procs.get(p.pid)
                        used = _mib(p.usedGpuMemory)
                        if prev is None or (used or 0) > (prev.used_mib or 0):
                            procs[p.pid] = smi.GpuProcess(int(p.pid), uuid, "?", used)
                except n.NVMLError:
                    pass
    except Exception:  # noqa: BLE001  a driver failing mid-way: let nvidia-smi tell
        _nvml = None
        return None
    return smi.GpuReport("ok", tuple(gpus), tuple(procs.values()), where=where, source="nvml")
