"""Recorded lines of `nvidia-smi --query-gpu ... --format=csv,noheader,nounits`, one per card, and
the report the parser makes of them: shared by the parser, rule, doctor and box-facts tests.

Short uuids (GPU-8f1c) stand for the real ones: apps lines in the tests name them the same way.
"""

from __future__ import annotations

from carla_launcher.nvidia import smi

GPU_8 = "0, NVIDIA GeForce RTX 3070, GPU-8f1c, 8192, 412, 7568, 3, 535.183.01, [N/A]"
GPU_12 = "0, NVIDIA GeForce RTX 3060, GPU-2b6e, 12288, 306, 11721, 0, 550.54.14, [N/A]"
GPU_10 = "0, NVIDIA GeForce RTX 3080, GPU-0e4a, 10240, 1034, [N/A], [N/A], 545.23.08, [N/A]"
MIG_FIELDS = (*smi.GPU_FIELDS, smi.MIG_FIELD)


def report(*gpu_lines: str, apps: str = "") -> smi.GpuReport:
    """The report of a successful run that printed these GPU lines (and these apps lines)."""
    return smi.smi_report(0, "\n".join(gpu_lines), 0, apps, MIG_FIELDS)
