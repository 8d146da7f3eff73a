"""The VRAM rule (`gpu/vram.py`): local or distributed, room on the box. Inputs are reports
parsed from nvidia-smi's real CSV."""

from __future__ import annotations

from carla_launcher.gpu import vram
from carla_launcher.nvidia import roles, smi
from tests.harness.recordings import GPU_8, GPU_10, GPU_12, report


# -- the 10 GB rule -------------------------------------------------------------------------------
def test_8_gb_is_distributed() -> None:
    v = vram.local_verdict(report(GPU_8))
    assert v.mode == "distributed" and "too small" in v.reason and "more than 10.0 GB" in v.reason


def test_12_gb_is_local() -> None:
    v = vram.local_verdict(report(GPU_12))
    assert v.mode == "local" and v.gpu == 0 and "11.4 GB available" in v.reason


def test_exactly_10_gb_is_not_more_than_10() -> None:
    assert vram.local_verdict(report(GPU_10)).mode == "distributed"


def test_threshold_is_configurable() -> None:
    assert vram.local_verdict(report(GPU_8), need_mib=6 * 1024).mode == "local"
    assert vram.local_verdict(report(GPU_12), need_mib=16 * 1024).mode == "distributed"


def test_memory_of_our_own_processes_counts_as_available() -> None:
    busy = "0, NVIDIA GeForce RTX 3060, GPU-2b6e, 12288, 9000, 3027, 80, 550.54.14, [N/A]"
    apps = "GPU-2b6e, 10, CarlaUE4-Linux-Shipping, 6000\nGPU-2b6e, 11, python3, 2700"
    table = {
        10: roles.ProcInfo("CarlaUE4-Linux-Shipping", "me"),
        11: roles.ProcInfo("python3", "me"),
    }
    ours = roles.with_roles(report(busy, apps=apps), table, agent_users=frozenset({"me"}))
    assert vram.local_verdict(ours).mode == "local"
    theirs = roles.with_roles(
        report(busy, apps=apps),
        {11: roles.ProcInfo("python3", "alice")},
        agent_users=frozenset({"me"}),
    )
    v = vram.local_verdict(theirs)  # CARLA counts (any user here), alice's 2.6 GB does not
    assert v.mode == "distributed" and "used by other programs" in v.reason


def test_best_of_two_gpus() -> None:
    r = report(
        "0, Tesla T4, GPU-a, 15360, 13105, 1930, 100, 535.104.05, Disabled",
        "1, Tesla T4, GPU-b, 15360, 3, 15032, 0, 535.104.05, Disabled",
    )
    v = vram.local_verdict(r)
    assert (v.mode, v.gpu) == ("local", 1) and "graphicsadapter" in v.reason


def test_mig_gpus_cannot_render() -> None:
    r = report("0, NVIDIA A100-SXM4-40GB, GPU-9d3f, 40960, 37, 40327, [N/A], 535.129.03, Enabled")
    v = vram.local_verdict(r)
    assert v.mode == "distributed" and "MIG" in v.reason


def test_no_gpu_is_distributed() -> None:
    v = vram.local_verdict(smi.smi_report(6, "No devices were found", None, ""))
    assert v.mode == "distributed" and "No devices were found" in v.reason


def test_room_on_the_box_names_who_else_uses_it() -> None:
    busy = "0, NVIDIA GeForce RTX 3090, GPU-x, 24576, 20000, 4200, 99, 550.54.14, [N/A]"
    r = roles.with_roles(
        report(busy, apps="GPU-x, 5, /opt/conda/bin/python, 19900"),
        {5: roles.ProcInfo("python", "alice")},
        owners=frozenset({"carla"}),
    )
    status, detail = vram.box_vram(r)
    assert (
        status == "failing" and "python (alice, 19.4 GB)" in detail and "at least 6.0 GB" in detail
    )
    assert vram.box_vram(report(GPU_8))[0] == "warning"  # 7.4 GB: enough, 8 recommended
    assert vram.box_vram(report(GPU_12))[0] == "ok"
    assert vram.box_vram(report(GPU_12), gpu_index=3)[0] == "failing"


def test_carla_usage_for_status() -> None:
    r = roles.with_roles(report(GPU_12, apps="GPU-2b6e, 10, CarlaUE4-Linux-Shipping, 6000"))
    assert [(p.pid, p.used_mib) for p in vram.carla_usage(r)] == [(10, 6000)]
    assert vram.server_vram(r) == (1, 6000)
    assert vram.server_vram(report(GPU_12)) == (0, None)
    unknown = roles.with_roles(report(GPU_12, apps="GPU-2b6e, 10, CarlaUE4-Linux-Shipping, [N/A]"))
    assert vram.server_vram(unknown) == (1, None)
