"""nvidia-smi's CSV (`nvidia/smi.py`) and whose process is whose (`nvidia/roles.py`): pure
functions over the real formats of the tools."""

from __future__ import annotations

import pytest

from carla_launcher.nvidia import roles, smi
from tests.harness.recordings import GPU_8, GPU_10, GPU_12, MIG_FIELDS, report


# -- parsing --------------------------------------------------------------------------------------
def test_gpu_line_in_every_field() -> None:
    (g,) = smi.parse_gpus(GPU_8, MIG_FIELDS)
    assert g == smi.Gpu(
        0, "NVIDIA GeForce RTX 3070", "GPU-8f1c", 8192, 412, 7568, 3, "535.183.01", None
    )


@pytest.mark.parametrize(
    "value",
    ["[N/A]", "[Not Supported]", "N/A", "", "[Unknown Error]", "[Insufficient Permissions]"],
)
def test_missing_values_are_none_not_zero(value: str) -> None:
    assert smi.parse_int(value) is None


def test_units_are_tolerated_when_nounits_was_not_honoured() -> None:
    assert smi.parse_int("12288 MiB") == 12288
    assert smi.parse_int(" 37 %") == 37


def test_free_is_derived_when_nvidia_smi_says_na() -> None:
    (g,) = smi.parse_gpus(GPU_10, MIG_FIELDS)
    assert g.free_mib is None and g.free == 10240 - 1034
    assert g.util_pct is None


def test_old_driver_without_mig_field() -> None:
    (g,) = smi.parse_gpus(
        "0, GeForce GTX 1070, GPU-71c3, 8119, 1245, 6874, [Not Supported], 418.87.01"
    )
    assert (g.name, g.total_mib, g.util_pct, g.mig) == ("GeForce GTX 1070", 8119, None, None)


def test_mig_mode() -> None:
    (g,) = smi.parse_gpus(
        "0, NVIDIA A100-SXM4-40GB, GPU-9d3f, 40960, 37, 40327, [N/A], 535.129.03, Enabled",
        MIG_FIELDS,
    )
    assert g.mig is True
    (h,) = smi.parse_gpus(
        "1, Tesla T4, GPU-e7d2, 15360, 3, 15032, 0, 535.104.05, Disabled", MIG_FIELDS
    )
    assert h.mig is False and h.index == 1


def test_two_gpus_and_blank_lines() -> None:
    gpus = smi.parse_gpus(
        f"\n{GPU_8}\n\n1, Tesla T4, GPU-e7d2, 15360, 3, 15032, 0, 535.104.05, Disabled\n",
        MIG_FIELDS,
    )
    assert [g.index for g in gpus] == [0, 1]


def test_process_paths_keep_commas_and_na_memory() -> None:
    procs = smi.parse_apps(
        "GPU-c41d, 4242, /home/u/a,b/CarlaUE4-Linux-Shipping, 6012\n"
        "GPU-c41d, 77, /usr/bin/python3, [N/A]\n"
        "No running processes found\n"
    )
    assert [(p.pid, p.name, p.used_mib) for p in procs] == [
        (4242, "/home/u/a,b/CarlaUE4-Linux-Shipping", 6012),
        (77, "/usr/bin/python3", None),
    ]


@pytest.mark.parametrize(
    ("rc", "out", "status", "words"),
    [
        (6, "No devices were found\n", "no-devices", "No devices were found"),
        (
            18,
            "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: "
            "550.120\n",
            "mismatch",
            "NVML library 550.120",
        ),
        (
            9,
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make "
            "sure that "
            "the latest NVIDIA driver is installed and running.\n",
            "no-driver",
            "cannot talk to the NVIDIA driver",
        ),
        (127, "nvidia-smi: not found", "missing", "not found"),
        (2, 'Field "mig.mode.current" is not a valid field to query.\n', "error", "exit 2"),
        (0, "", "no-devices", "listed no GPU"),
    ],
)
def test_failures_are_told_apart(rc: int, out: str, status: str, words: str) -> None:
    r = smi.smi_report(rc, out, None, "")
    assert r.status == status and words in r.message and r.gpus == ()
    assert status in smi.SMI_FIXES


def test_a_working_run_is_not_a_failure() -> None:
    assert smi.classify_smi_failure(0, GPU_8) is None
    assert smi.unknown_field('Field "mig.mode.current" is not a valid field to query.')


def test_failed_process_query_keeps_the_gpus() -> None:
    r = smi.smi_report(0, GPU_12, 2, "garbage", MIG_FIELDS)
    assert r.status == "ok" and len(r.gpus) == 1 and r.processes == ()


# -- whose process --------------------------------------------------------------------------------
def info(name: str, user: str | None = "me", container: bool = False) -> roles.ProcInfo:
    return roles.ProcInfo(name, user, name, container)


def test_roles_here() -> None:
    me = frozenset({"me"})
    assert roles.process_role(info("CarlaUE4-Linux-Shipping"), None, me) == "carla"
    assert roles.process_role(info("CarlaUnreal-Linux-Shipping", "root"), None, me) == "carla"
    assert roles.process_role(info("python3"), None, me) == "agent"
    assert roles.process_role(info("python3.10", "alice"), None, me) is None  # someone else's job
    assert roles.process_role(info("ros2", "root", container=True), None, me) == "agent"
    assert roles.process_role(info("blender"), None, me) is None


def test_roles_on_a_box() -> None:
    owners = frozenset({"carla", "bob"})
    assert roles.process_role(info("CarlaUE4-Linux-Shipping", "carla"), owners, None) == "carla"
    assert (
        roles.process_role(info("CarlaUE4-Linux-Shipping", "alice"), owners, None) is None
    )  # her server
    assert (
        roles.process_role(info("python3", "bob"), owners, None) is None
    )  # no agent runs on the box


def test_table_names_are_used_only_for_the_same_program() -> None:
    r = report(
        GPU_12,
        apps="GPU-2b6e, 10, /opt/x/CarlaUE4-Linux-Shipping, 5000\n"
        "GPU-2b6e, 11, /usr/bin/python3, 100",
    )
    table = {
        10: roles.ProcInfo(
            "CarlaUE4-Linux-Shipping", "carla", "/opt/x/CarlaUE4-Linux-Shipping -RenderOffScreen"
        ),
        11: roles.ProcInfo("bash", "root", "bash"),
    }  # pid 11 here is another program (pid namespaces)
    named = roles.with_roles(r, table, agent_users=frozenset({"root"}))
    carla, other = named.processes
    assert (carla.user, carla.role) == ("carla", "carla")
    assert (other.name, other.user, other.role) == ("/usr/bin/python3", None, None)


def test_container_cgroups() -> None:
    assert roles.cgroup_in_container("0::/system.slice/docker-3f2a1b.scope\n")
    assert roles.cgroup_in_container("12:memory:/docker/3f2a1b\n")
    assert not roles.cgroup_in_container("0::/user.slice/user-1000.slice/session-2.scope\n")
