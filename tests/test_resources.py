"""The pure core of `gpu` and `doctor`: nvidia-smi's CSV, the 10 GB rule, the box script's
sections, ssh's failure messages. Inputs are in the real formats of the tools."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest

from carla_launcher import resources as R

GPU_8 = "0, NVIDIA GeForce RTX 3070, GPU-8f1c, 8192, 412, 7568, 3, 535.183.01, [N/A]"
GPU_12 = "0, NVIDIA GeForce RTX 3060, GPU-2b6e, 12288, 306, 11721, 0, 550.54.14, [N/A]"
GPU_10 = "0, NVIDIA GeForce RTX 3080, GPU-0e4a, 10240, 1034, [N/A], [N/A], 545.23.08, [N/A]"
MIG_FIELDS = R.GPU_FIELDS + (R.MIG_FIELD,)


def report(*gpu_lines: str, apps: str = "") -> R.GpuReport:
    return R.smi_report(0, "\n".join(gpu_lines), 0, apps, MIG_FIELDS)


# -- parsing --------------------------------------------------------------------------------------
def test_gpu_line_in_every_field() -> None:
    (g,) = R.parse_gpus(GPU_8, MIG_FIELDS)
    assert g == R.Gpu(
        0, "NVIDIA GeForce RTX 3070", "GPU-8f1c", 8192, 412, 7568, 3, "535.183.01", None
    )


@pytest.mark.parametrize(
    "value",
    ["[N/A]", "[Not Supported]", "N/A", "", "[Unknown Error]", "[Insufficient Permissions]"],
)
def test_missing_values_are_none_not_zero(value: str) -> None:
    assert R.parse_int(value) is None


def test_units_are_tolerated_when_nounits_was_not_honoured() -> None:
    assert R.parse_int("12288 MiB") == 12288
    assert R.parse_int(" 37 %") == 37


def test_free_is_derived_when_nvidia_smi_says_na() -> None:
    (g,) = R.parse_gpus(GPU_10, MIG_FIELDS)
    assert g.free_mib is None and g.free == 10240 - 1034
    assert g.util_pct is None


def test_old_driver_without_mig_field() -> None:
    (g,) = R.parse_gpus(
        "0, GeForce GTX 1070, GPU-71c3, 8119, 1245, 6874, [Not Supported], 418.87.01"
    )
    assert (g.name, g.total_mib, g.util_pct, g.mig) == ("GeForce GTX 1070", 8119, None, None)


def test_mig_mode() -> None:
    (g,) = R.parse_gpus(
        "0, NVIDIA A100-SXM4-40GB, GPU-9d3f, 40960, 37, 40327, [N/A], 535.129.03, Enabled",
        MIG_FIELDS,
    )
    assert g.mig is True
    (h,) = R.parse_gpus(
        "1, Tesla T4, GPU-e7d2, 15360, 3, 15032, 0, 535.104.05, Disabled", MIG_FIELDS
    )
    assert h.mig is False and h.index == 1


def test_two_gpus_and_blank_lines() -> None:
    gpus = R.parse_gpus(
        f"\n{GPU_8}\n\n1, Tesla T4, GPU-e7d2, 15360, 3, 15032, 0, 535.104.05, Disabled\n",
        MIG_FIELDS,
    )
    assert [g.index for g in gpus] == [0, 1]


def test_process_paths_keep_commas_and_na_memory() -> None:
    procs = R.parse_apps(
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
            "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 550.120\n",
            "mismatch",
            "NVML library 550.120",
        ),
        (
            9,
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that "
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
    r = R.smi_report(rc, out, None, "")
    assert r.status == status and words in r.message and r.gpus == ()
    assert status in R.SMI_FIXES


def test_a_working_run_is_not_a_failure() -> None:
    assert R.classify_smi_failure(0, GPU_8) is None
    assert R.unknown_field('Field "mig.mode.current" is not a valid field to query.')


def test_failed_process_query_keeps_the_gpus() -> None:
    r = R.smi_report(0, GPU_12, 2, "garbage", MIG_FIELDS)
    assert r.status == "ok" and len(r.gpus) == 1 and r.processes == ()


# -- whose process --------------------------------------------------------------------------------
def info(name: str, user: str | None = "me", container: bool = False) -> R.ProcInfo:
    return R.ProcInfo(name, user, name, container)


def test_roles_here() -> None:
    me = frozenset({"me"})
    assert R.process_role(info("CarlaUE4-Linux-Shipping"), None, me) == "carla"
    assert R.process_role(info("CarlaUnreal-Linux-Shipping", "root"), None, me) == "carla"
    assert R.process_role(info("python3"), None, me) == "agent"
    assert R.process_role(info("python3.10", "alice"), None, me) is None  # someone else's job
    assert R.process_role(info("ros2", "root", container=True), None, me) == "agent"
    assert R.process_role(info("blender"), None, me) is None


def test_roles_on_a_box() -> None:
    owners = frozenset({"carla", "bob"})
    assert R.process_role(info("CarlaUE4-Linux-Shipping", "carla"), owners, None) == "carla"
    assert (
        R.process_role(info("CarlaUE4-Linux-Shipping", "alice"), owners, None) is None
    )  # her server
    assert R.process_role(info("python3", "bob"), owners, None) is None  # no agent runs on the box


def test_table_names_are_used_only_for_the_same_program() -> None:
    r = report(
        GPU_12,
        apps="GPU-2b6e, 10, /opt/x/CarlaUE4-Linux-Shipping, 5000\nGPU-2b6e, 11, /usr/bin/python3, 100",
    )
    table = {
        10: R.ProcInfo(
            "CarlaUE4-Linux-Shipping", "carla", "/opt/x/CarlaUE4-Linux-Shipping -RenderOffScreen"
        ),
        11: R.ProcInfo("bash", "root", "bash"),
    }  # pid 11 here is another program (pid namespaces)
    named = R.with_roles(r, table, agent_users=frozenset({"root"}))
    carla, other = named.processes
    assert (carla.user, carla.role) == ("carla", "carla")
    assert (other.name, other.user, other.role) == ("/usr/bin/python3", None, None)


def test_container_cgroups() -> None:
    assert R.cgroup_in_container("0::/system.slice/docker-3f2a1b.scope\n")
    assert R.cgroup_in_container("12:memory:/docker/3f2a1b\n")
    assert not R.cgroup_in_container("0::/user.slice/user-1000.slice/session-2.scope\n")


# -- the 10 GB rule -------------------------------------------------------------------------------
def test_8_gb_is_distributed() -> None:
    v = R.local_verdict(report(GPU_8))
    assert v.mode == "distributed" and "too small" in v.reason and "more than 10.0 GB" in v.reason


def test_12_gb_is_local() -> None:
    v = R.local_verdict(report(GPU_12))
    assert v.mode == "local" and v.gpu == 0 and "11.4 GB available" in v.reason


def test_exactly_10_gb_is_not_more_than_10() -> None:
    assert R.local_verdict(report(GPU_10)).mode == "distributed"


def test_threshold_is_configurable() -> None:
    assert R.local_verdict(report(GPU_8), need_mib=6 * 1024).mode == "local"
    assert R.local_verdict(report(GPU_12), need_mib=16 * 1024).mode == "distributed"


def test_memory_of_our_own_processes_counts_as_available() -> None:
    busy = "0, NVIDIA GeForce RTX 3060, GPU-2b6e, 12288, 9000, 3027, 80, 550.54.14, [N/A]"
    apps = "GPU-2b6e, 10, CarlaUE4-Linux-Shipping, 6000\nGPU-2b6e, 11, python3, 2700"
    table = {10: R.ProcInfo("CarlaUE4-Linux-Shipping", "me"), 11: R.ProcInfo("python3", "me")}
    ours = R.with_roles(report(busy, apps=apps), table, agent_users=frozenset({"me"}))
    assert R.local_verdict(ours).mode == "local"
    theirs = R.with_roles(
        report(busy, apps=apps), {11: R.ProcInfo("python3", "alice")}, agent_users=frozenset({"me"})
    )
    v = R.local_verdict(theirs)  # CARLA counts (any user here), alice's 2.6 GB does not
    assert v.mode == "distributed" and "used by other programs" in v.reason


def test_best_of_two_gpus() -> None:
    r = report(
        "0, Tesla T4, GPU-a, 15360, 13105, 1930, 100, 535.104.05, Disabled",
        "1, Tesla T4, GPU-b, 15360, 3, 15032, 0, 535.104.05, Disabled",
    )
    v = R.local_verdict(r)
    assert (v.mode, v.gpu) == ("local", 1) and "graphicsadapter" in v.reason


def test_mig_gpus_cannot_render() -> None:
    r = report("0, NVIDIA A100-SXM4-40GB, GPU-9d3f, 40960, 37, 40327, [N/A], 535.129.03, Enabled")
    v = R.local_verdict(r)
    assert v.mode == "distributed" and "MIG" in v.reason


def test_no_gpu_is_distributed() -> None:
    v = R.local_verdict(R.smi_report(6, "No devices were found", None, ""))
    assert v.mode == "distributed" and "No devices were found" in v.reason


def test_room_on_the_box_names_who_else_uses_it() -> None:
    busy = "0, NVIDIA GeForce RTX 3090, GPU-x, 24576, 20000, 4200, 99, 550.54.14, [N/A]"
    r = R.with_roles(
        report(busy, apps="GPU-x, 5, /opt/conda/bin/python, 19900"),
        {5: R.ProcInfo("python", "alice")},
        owners=frozenset({"carla"}),
    )
    status, detail = R.box_vram(r)
    assert (
        status == "failing" and "python (alice, 19.4 GB)" in detail and "at least 6.0 GB" in detail
    )
    assert R.box_vram(report(GPU_8))[0] == "warning"  # 7.4 GB: enough, 8 recommended
    assert R.box_vram(report(GPU_12))[0] == "ok"
    assert R.box_vram(report(GPU_12), gpu_index=3)[0] == "failing"


def test_carla_usage_for_status() -> None:
    r = R.with_roles(report(GPU_12, apps="GPU-2b6e, 10, CarlaUE4-Linux-Shipping, 6000"))
    assert [(p.pid, p.used_mib) for p in R.carla_usage(r)] == [(10, 6000)]


# -- the box round trip ---------------------------------------------------------------------------
def test_sections_ignore_a_login_banner_and_keep_exit_codes() -> None:
    out = (
        "Welcome to Ubuntu\n\n##carla-launch## gpus\nfields=index\n0\n\n##carla-launch## rc 0\n"
        "##carla-launch## tmux\n\n##carla-launch## rc 1\n##carla-launch## cut"
    )
    s = R.parse_sections(out)
    assert s["gpus"] == R.Section("fields=index\n0", 0)
    assert s["tmux"].rc == 1 and s["cut"].rc is None


def test_df() -> None:
    df = (
        "Filesystem     1024-blocks     Used Available Capacity Mounted on\n"
        "/dev/nvme0n1p2   960302804 871234560  40241572      96% /\n"
    )
    assert R.parse_df_free_kib(df) == 40241572
    assert R.parse_df_free_kib("df: /x: No such file or directory") is None


def test_listeners_from_ss_and_proc() -> None:
    ss = (
        'LISTEN 0      4096         0.0.0.0:2000      0.0.0.0:*    users:(("CarlaUE4-Linux-",pid=4242,fd=61))\n'
        "LISTEN 0      128             [::]:2001         [::]:*\n"
        "LISTEN 0      128        127.0.0.1:631       0.0.0.0:*\n"
    )
    assert R.parse_listeners(ss) == (
        R.Listener(2000, "CarlaUE4-Linux-"),
        R.Listener(2001),
        R.Listener(631),
    )
    proc = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 00000000:07D0 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1\n"
        "   1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 2 1\n"
    )
    assert R.parse_listeners(proc) == (R.Listener(2000),)


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("Host key verification failed.\r\n", "host-key"),
        (
            "No ED25519 host key is known for [10.77.0.2]:22 and you have requested strict checking.\n"
            "Host key verification failed.\n",
            "host-key",
        ),
        (
            "@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n",
            "host-key-changed",
        ),
        ("ssh: Could not resolve hostname gpu-box: Name or service not known\n", "dns"),
        ("ssh: connect to host 10.77.0.2 port 22: Connection refused\n", "refused"),
        ("ssh: connect to host 10.77.9.2 port 22: Connection timed out\n", "timeout"),
        ("ssh: connect to host 10.9.9.9 port 22: No route to host\n", "unreachable"),
        ("carla@10.77.0.2: Permission denied (publickey).\n", "auth"),
        ("kex_exchange_identification: read: Connection reset by peer\n", "other"),
    ],
)
def test_ssh_failures(stderr: str, kind: str) -> None:
    o = R.classify_ssh(255, stderr)
    assert o.kind == kind and o.line


def test_ssh_success_and_a_new_key() -> None:
    assert R.classify_ssh(0, "") == R.SshOutcome("ok")
    o = R.classify_ssh(
        3, "Warning: Permanently added '10.77.0.2' (ED25519) to the list of known hosts.\r\n"
    )
    assert o.kind == "ok" and o.new_key  # exit 3 is the remote script's, not ssh's


def test_box_script_is_posix_and_quotes_profile_values(tmp_path) -> None:
    evil = tmp_path / "pkg dir; touch PWNED 'x'"
    script = R.box_script(package_root=str(evil), server_user="carla", session="carla")
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    # fed on stdin, as OpenSSH's `sh -s` gets it: every command reads /dev/null, the script runs to the end
    out = subprocess.run(
        ["sh", "-s"],
        input=script,
        text=True,
        capture_output=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    ).stdout
    assert not (tmp_path / "PWNED").exists()
    facts = R.parse_box(out, "here", "carla")
    assert facts.package_root == str(evil)
    assert facts.free_kib and facts.free_kib > 0
    assert facts.gpu.status == "missing"  # no nvidia-smi on that PATH
    assert "tmux" in R.parse_sections(out)  # the last section ran


def test_parse_box_reads_every_section() -> None:
    out = "\n".join(
        [
            "##carla-launch## id",
            "1000",
            "alice",
            "server_user=alice yes",
            "##carla-launch## rc 0",
            "##carla-launch## gpus",
            "fields=" + ",".join(MIG_FIELDS),
            GPU_12,
            "##carla-launch## rc 0",
            "##carla-launch## apps",
            "GPU-2b6e, 4242, /home/alice/C/CarlaUE4-Linux-Shipping, 6000",
            "##carla-launch## rc 0",
            "##carla-launch## ps",
            "4242 0 alice /home/alice/C/CarlaUE4-Linux-Shipping -RenderOffScreen",
            "##carla-launch## rc 0",
            "##carla-launch## vulkan",
            "/usr/share/vulkan/icd.d/nvidia_icd.json",
            "vulkaninfo=yes",
            "\tdeviceName         = NVIDIA GeForce RTX 3060",
            "##carla-launch## rc 0",
            "##carla-launch## disk",
            "root=/home/alice/CARLA_Leaderboard_20",
            "Filesystem 1024-blocks Used Available Capacity Mounted on",
            "/dev/sda1 100 50 50000000 50% /",
            "##carla-launch## rc 0",
            "##carla-launch## package",
            "marker=yes",
            "sha256=" + "a" * 64,
            "url=https://x/y.tar.xz",
            "launcher=yes",
            "##carla-launch## rc 0",
            "##carla-launch## ports",
            "LISTEN 0 4096 0.0.0.0:2000 0.0.0.0:*",
            "##carla-launch## rc 0",
            "##carla-launch## tmux",
            "carla",
            "##carla-launch## rc 0",
        ]
    )
    f = R.parse_box(out, "box", "carla")
    assert (f.uid, f.login_user, f.server_user, f.server_user_exists) == (
        1000,
        "alice",
        "alice",
        True,
    )
    assert (
        f.gpu.status == "ok"
        and f.gpu.processes[0].role == "carla"
        and f.gpu.processes[0].user == "alice"
    )
    assert f.icd_files == ("/usr/share/vulkan/icd.d/nvidia_icd.json",) and f.vulkaninfo is True
    assert f.free_kib == 50000000 and f.package_root == "/home/alice/CARLA_Leaderboard_20"
    assert f.marker == {"sha256": "a" * 64, "url": "https://x/y.tar.xz"} and f.launcher
    assert [lst.port for lst in f.listeners] == [2000] and f.tmux_sessions == ("carla",)
    assert replace(f.gpu, processes=()).gpus == f.gpu.gpus
