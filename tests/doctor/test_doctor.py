"""`carla-launch doctor`: the checks as pure functions over real tool output, and the CLI as a
user runs it (the FAKE nvidia-smi first on PATH, the real docker CLI, a controlled PATH)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from carla_launcher import proc
from carla_launcher.box.explain import classify
from carla_launcher.box.facts import BoxFacts
from carla_launcher.box.parsers import Listener
from carla_launcher.doctor.checks_box import (
    box_vram_check,
    connection_checks,
    disk_check,
    package_check,
    ports_check,
    user_check,
    vulkan_check,
)
from carla_launcher.doctor.checks_local import (
    LocalFacts,
    docker_checks,
    local_checks,
    tool_checks,
    toolkit_check,
)
from carla_launcher.doctor.model import BOTH, DIST, LOCAL, Check, verdict_of
from carla_launcher.doctor.render import render, to_json
from carla_launcher.nvidia import smi
from carla_launcher.profile import read_profile
from tests.harness import recordings
from tests.harness.compose_loader import compose_binary
from tests.harness.fake_nvidia_smi import install
from tests.harness.recordings import GPU_8, GPU_12, MIG_FIELDS

# `docker info --format '{{json .}}'` as the real CLI prints it (trimmed to the keys we read)
DOCKER_DOWN = proc.Result(
    1,
    json.dumps(
        {"ServerVersion": "", "Runtimes": None, "ClientInfo": {"Version": "28.2.2", "Plugins": []}}
    ),
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
    "Is the docker daemon running?\n",
)
DOCKER_DENIED = proc.Result(
    1,
    json.dumps({"ServerVersion": "", "ClientInfo": {"Plugins": []}}),
    "permission denied while trying to connect to the Docker daemon socket at "
    "unix:///var/run/docker.sock: "
    'Get "http://%2Fvar%2Frun%2Fdocker.sock/v1.50/info": '
    "dial unix /var/run/docker.sock: connect: permission denied\n",
)
DOCKER_UP = proc.Result(
    0,
    json.dumps(
        {
            "ServerVersion": "28.2.2",
            "Runtimes": {"io.containerd.runc.v2": {}, "nvidia": {}, "runc": {}},
            "ClientInfo": {
                "Version": "28.2.2",
                "Plugins": [
                    {
                        "SchemaVersion": "0.1.0",
                        "Vendor": "Docker Inc.",
                        "Version": "v2.40.3",
                        "Name": "compose",
                        "Path": "/usr/libexec/docker/cli-plugins/docker-compose",
                    }
                ],
            },
        }
    ),
    "",
)
ALL_TOOLS = {"tmux": "/usr/bin/tmux", "ssh": "/usr/bin/ssh", "nvidia-ctk": "/usr/bin/nvidia-ctk"}


def by_name(checks) -> dict[str, Check]:  # type: ignore[no-untyped-def]
    return {c.name: c for c in checks}


# -- local checks ---------------------------------------------------------------------------------
def test_healthy_12_gb_machine_is_local_and_exits_0() -> None:
    checks, v = local_checks(LocalFacts(recordings.report(GPU_12), DOCKER_UP, ALL_TOOLS))
    assert [c.status for c in checks] == ["ok"] * 6
    report = verdict_of(checks, v, None)
    assert (report.verdict, report.exit_code) == ("local", 0)
    assert by_name(checks)["docker compose"].detail == "plugin v2.40.3"
    assert "nvidia" in by_name(checks)["docker"].detail


def test_8_gb_machine_is_distributed_and_the_vram_check_only_warns() -> None:
    checks, v = local_checks(LocalFacts(recordings.report(GPU_8), DOCKER_UP, ALL_TOOLS))
    vram = by_name(checks)["local VRAM"]
    assert vram.status == "warning" and "carla-launch doctor P" in vram.fix
    report = verdict_of(checks, v, None)
    assert (report.verdict, report.exit_code) == ("distributed", 0)
    assert report.reason.endswith("`carla-launch doctor P` checks a GPU box")


def test_a_broken_driver_fails_the_vram_check_but_only_blocks_local() -> None:
    broken = smi.smi_report(
        18, "Failed to initialize NVML: Driver/library version mismatch", None, ""
    )
    checks, v = local_checks(LocalFacts(broken, DOCKER_UP, ALL_TOOLS))
    vram = by_name(checks)["local VRAM"]
    assert vram.status == "failing" and vram.blocks == LOCAL and vram.fix.startswith("reboot")
    assert verdict_of(checks, v, None).exit_code == 0  # distributed is still possible
    assert verdict_of(checks, v, None, forced="local").exit_code == 1


def test_docker_daemon_down_blocks_both_modes() -> None:
    checks = by_name(docker_checks(DOCKER_DOWN))
    assert checks["docker"].status == "failing" and checks["docker"].blocks == BOTH
    assert "Cannot connect to the Docker daemon" in checks["docker"].detail
    assert "systemctl start docker" in checks["docker"].fix
    assert (
        checks["docker compose"].status == "failing"
        and "docker-compose-plugin" in checks["docker compose"].fix
    )


def test_docker_permission_denied_says_docker_group() -> None:
    c = by_name(docker_checks(DOCKER_DENIED))["docker"]
    assert c.status == "failing" and "usermod -aG docker" in c.fix


def test_no_docker_cli() -> None:
    assert [c.status for c in docker_checks(None)] == ["failing", "failing"]


def test_container_toolkit_blocks_local_only() -> None:
    tools = {"tmux": "/usr/bin/tmux", "ssh": "/usr/bin/ssh"}
    local = toolkit_check(LocalFacts(recordings.report(GPU_12), DOCKER_UP, tools), "local")
    assert (
        local.status == "failing"
        and local.blocks == LOCAL
        and "nvidia-ctk runtime configure" in local.fix
    )
    assert (
        toolkit_check(LocalFacts(recordings.report(GPU_8), DOCKER_UP, tools), "distributed").status
        == "warning"
    )
    none = smi.smi_report(127, "", None, "")
    assert toolkit_check(LocalFacts(none, DOCKER_UP, tools), "distributed").status == "ok"


def test_tmux_warns_and_ssh_blocks_distributed() -> None:
    tmux, ssh = tool_checks({"tmux": None, "ssh": None})
    assert tmux.status == "warning" and "apt install tmux" in tmux.fix
    assert ssh.status == "failing" and ssh.blocks == DIST


def test_asking_for_local_mode_on_a_small_gpu_fails() -> None:
    checks, v = local_checks(
        LocalFacts(recordings.report(GPU_8), DOCKER_UP, ALL_TOOLS), forced="local"
    )
    vram = by_name(checks)["local VRAM"]
    assert vram.status == "failing" and vram.blocks == LOCAL
    assert verdict_of(checks, v, None, forced="local").exit_code == 1


def test_exit_code_follows_the_chosen_mode() -> None:
    tools = {"tmux": "/usr/bin/tmux", "ssh": None, "nvidia-ctk": "/usr/bin/nvidia-ctk"}
    checks, v = local_checks(
        LocalFacts(
            recordings.report(
                GPU_12, "1, Tesla T4, GPU-b, 15360, 3, 15032, 0, 535.104.05, Disabled"
            ),
            DOCKER_UP,
            tools,
        ),
        forced="distributed",
    )
    assert v.mode == "local"
    assert verdict_of(checks, v, None, forced="distributed").exit_code == 1  # distributed needs ssh
    assert verdict_of(checks, v, None).exit_code == 0  # the verdict, local, does not


# -- box checks -----------------------------------------------------------------------------------
@pytest.fixture
def profile(tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(extra: str = "") -> object:
        p = tmp_path / "profiles" / "box.yaml"
        p.parent.mkdir(exist_ok=True)
        p.write_text("remote:\n  host: gpu-box\nserver:\n  port: 2000\n" + extra)
        return read_profile(p)

    return make


def facts(**kw) -> BoxFacts:  # type: ignore[no-untyped-def]
    kw.setdefault("gpu", recordings.report(GPU_12))
    return BoxFacts(**kw)


def test_unreachable_box_stops_after_one_failing_check() -> None:
    checks = connection_checks(
        "gpu-box",
        classify(255, "ssh: connect to host gpu-box port 22: Connection refused"),
        False,
    )
    assert [(c.name, c.status) for c in checks] == [("box reachable", "failing")]
    assert "sshd" in checks[0].fix and checks[0].blocks == DIST


def test_unknown_and_changed_host_keys() -> None:
    unknown = connection_checks("gpu-box", classify(255, "Host key verification failed.\n"), False)
    assert [(c.name, c.status) for c in unknown] == [
        ("box reachable", "ok"),
        ("box host key", "failing"),
    ]
    assert "accept_new_host_key" in unknown[1].fix
    changed = connection_checks(
        "gpu-box",
        classify(255, "@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @"),
        False,
    )
    assert "ssh-keygen -R gpu-box" in changed[1].fix
    auth = connection_checks(
        "gpu-box", classify(255, "carla@gpu-box: Permission denied (publickey)."), False
    )
    assert [c.status for c in auth] == ["ok", "ok", "failing"] and "ssh-copy-id" in auth[2].fix


def test_root_login_is_fine_with_a_server_user(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile()
    c = user_check(
        facts(uid=0, login_user="root", server_user="carla", server_user_exists=False), p, "gpu-box"
    )
    assert c.status == "ok" and "runs as user carla (will be created by deploy)" in c.detail
    assert (
        user_check(facts(uid=1000, login_user="bob"), p, "gpu-box").detail
        == "logged in as bob (not root)"
    )


def test_vulkan(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile()
    icd = ("/usr/share/vulkan/icd.d/nvidia_icd.json",)
    none = vulkan_check(
        facts(icd_files=("/usr/share/vulkan/icd.d/lvp_icd.x86_64.json",), vulkaninfo=True), p, "h"
    )
    assert (
        none.status == "failing" and "nvidia_icd.json" in none.detail and "libnvidia-gl" in none.fix
    )
    unconfirmed = vulkan_check(facts(icd_files=icd, vulkaninfo=False), p, "h")
    assert unconfirmed.status == "warning" and "vulkan-tools" in unconfirmed.fix

    def device(line: str) -> Check:
        """The check where vulkaninfo ran and printed this deviceName line."""
        return vulkan_check(facts(icd_files=icd, vulkaninfo=True, vulkan_lines=(line,)), p, "h")

    llvmpipe = device("deviceName = llvmpipe (LLVM 15.0.6, 256 bits)")
    assert llvmpipe.status == "failing" and "llvmpipe" in llvmpipe.detail
    good = device("deviceName         = NVIDIA GeForce RTX 3060")
    assert good.status == "ok"


def test_disk_for_the_package(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile()
    small = disk_check(
        facts(free_kib=30 * 1024 * 1024, package_root="/home/carla/CARLA_Leaderboard_20"), p, "h"
    )
    assert small.status == "failing" and small.detail.startswith(
        "30.0 GB free at /home/carla/CARLA_Leaderboard_20"
    )
    assert (
        disk_check(facts(free_kib=30 * 1024 * 1024, marker={}), p, "h").status == "ok"
    )  # already there
    assert disk_check(facts(free_kib=100 * 1024 * 1024), p, "h").status == "ok"


def test_ports_free_ours_or_taken(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile()
    assert ports_check(facts(listeners=(Listener(22),)), p, "h").status == "ok"
    ours = ports_check(
        facts(listeners=(Listener(2000), Listener(2001)), tmux_sessions=("carla",)), p, "h"
    )
    assert ours.status == "ok" and "our server (tmux session 'carla')" in ours.detail
    by_name_ = ports_check(facts(listeners=(Listener(2000, "CarlaUE4-Linux-"),)), p, "h")
    assert by_name_.status == "ok"
    taken = ports_check(facts(listeners=(Listener(2001, "python3"), Listener(2003))), p, "h")
    assert (
        taken.status == "failing"
        and taken.detail == "port 2001 in use by python3, not by our server"
    )
    assert "server.port: 2006" in taken.fix  # 2003 is busy: next window of three free ports


def test_package_marker_and_checksum(profile) -> None:  # type: ignore[no-untyped-def]
    sha = "ab" * 32
    p = profile(f"  package:\n    sha256: {sha}\n")
    assert package_check(facts(marker={"sha256": sha}), p, "h").status == "ok"
    other = package_check(facts(marker={"sha256": "cd" * 32}), p, "h")
    assert (
        other.status == "warning"
        and "another archive" in other.detail
        and other.fix == "carla-launch deploy box"
    )
    assert "not installed" in package_check(facts(), p, "h").detail
    assert "did not install it" in package_check(facts(launcher=True), p, "h").detail
    compose = profile("  mode: compose\n")
    assert package_check(facts(), compose, "h").status == "ok"


def test_box_failures_make_the_distributed_verdict_exit_1(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile()
    local, v = local_checks(LocalFacts(recordings.report(GPU_8), DOCKER_UP, ALL_TOOLS))
    box = connection_checks("gpu-box", classify(255, "Host key verification failed."), False)
    box = [Check(c.name, c.status, c.detail, c.fix, c.blocks, "gpu-box") for c in box]
    report = verdict_of(local + box, v, p)
    assert report.verdict == "distributed" and report.exit_code == 1
    assert "run the server on gpu-box (fix 1 failing box check first)" in report.reason
    text = render(report, p)
    assert "box gpu-box (profile box)" in text
    assert (
        text.splitlines()[-1]
        == "blocked: distributed mode cannot start until box host key (gpu-box) is fixed"
    )


def test_json_shape(profile) -> None:  # type: ignore[no-untyped-def]
    checks, v = local_checks(LocalFacts(recordings.report(GPU_8), DOCKER_DOWN, ALL_TOOLS))
    data = to_json(verdict_of(checks, v, None))
    assert set(data) == {"schema_version", "verdict", "reason", "mode", "checks"}
    assert data["verdict"] == "distributed"
    for c in data["checks"]:
        assert {"name", "status", "detail", "fix"} <= set(c) and c["status"] in (
            "ok",
            "warning",
            "failing",
        )
    assert next(c for c in data["checks"] if c["name"] == "docker")["blocks"] == [
        "distributed",
        "local",
    ]


# -- the CLI, as a user runs it -------------------------------------------------------------------
@pytest.fixture
def tools(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A PATH that holds exactly what a test wants: the fake nvidia-smi, python3 for it, and the
    named real tools. Docker points at a socket where no daemon runs (deterministic: failing)."""

    def make(case: str, *programs: str, compose: bool = True) -> dict[str, str]:
        bin_dir = tmp_path / f"bin-{case}"
        install(bin_dir, case)
        (bin_dir / "python3").symlink_to(sys.executable)
        for prog in programs:
            real = shutil.which(prog)
            if real:
                (bin_dir / prog).symlink_to(real)
        docker_config = tmp_path / "docker-config"
        (docker_config / "cli-plugins").mkdir(parents=True, exist_ok=True)
        binary = compose_binary()
        plugin = docker_config / "cli-plugins" / "docker-compose"
        if compose and binary and not plugin.exists():
            plugin.symlink_to(binary)
        env = dict(os.environ)
        env.update(
            PATH=str(bin_dir),
            DOCKER_CONFIG=str(docker_config),
            CARLA_LAUNCH_GPU_BACKEND="smi",
            DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock",
        )
        env.pop("FAKE_NVIDIA_SMI_CASE", None)
        return env

    return make


def doctor(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carla_launcher", "doctor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def lines_of(text: str) -> dict[str, list[str]]:
    """`  STATUS  NAME  detail` rows of the doctor screen, by check name."""
    out = {}
    for ln in text.splitlines():
        parts = ln.split(None, 1)
        if parts and parts[0] in ("ok", "warning", "FAILING"):
            for name in sorted((c for c in NAMES if parts[1].startswith(c)), key=len, reverse=True)[
                :1
            ]:
                out[name] = [parts[0], parts[1][len(name) :].strip()]
    return out


NAMES = (
    "local VRAM",
    "docker compose",
    "docker",
    "NVIDIA container toolkit",
    "tmux",
    "ssh",
    "box reachable",
    "box host key",
    "box login",
    "box user",
    "box GPU driver",
    "box Vulkan",
    "box VRAM",
    "box disk",
    "box ports",
    "box package",
)


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI")
def test_cli_12_gb_machine(tools) -> None:  # type: ignore[no-untyped-def]
    env = tools("rtx3060-12gb", "docker", "tmux", "ssh")
    r = doctor(env)
    rows = lines_of(r.stdout)
    assert rows["local VRAM"] == [
        "ok",
        "GPU 0 (NVIDIA GeForce RTX 3060, 12.0 GB) has 11.4 GB available; "
        "server and agent together need more than 10.0 GB",
    ]
    assert rows["docker"][0] == "FAILING" and "daemon not reachable" in rows["docker"][1]
    if compose_binary():
        assert rows["docker compose"][0] == "ok" and rows["docker compose"][1].startswith(
            "plugin v2."
        )
    assert rows["NVIDIA container toolkit"][0] == "FAILING"
    assert rows["tmux"][0] == "ok" and rows["ssh"][0] == "ok"
    assert (
        "verdict: local: GPU 0 (NVIDIA GeForce RTX 3060, 12.0 GB) has 11.4 GB available" in r.stdout
    )
    assert r.stdout.splitlines()[-1].startswith("blocked: local mode cannot start until docker")
    assert r.returncode == 1


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI")
def test_cli_8_gb_machine_json(tools) -> None:  # type: ignore[no-untyped-def]
    env = tools("rtx3070-8gb", "docker", "ssh", compose=False)
    r = doctor(env, "--json")
    data = json.loads(r.stdout)
    assert data["verdict"] == "distributed"
    assert data["reason"].startswith("GPU 0 (NVIDIA GeForce RTX 3070, 8.0 GB) is too small")
    status = {c["name"]: c["status"] for c in data["checks"]}
    assert status == {
        "local VRAM": "warning",
        "docker": "failing",
        "docker compose": "failing",
        "NVIDIA container toolkit": "warning",
        "tmux": "warning",
        "ssh": "ok",
    }
    assert r.returncode == 1  # the docker daemon blocks distributed mode too
    assert doctor(env, "--json", "--need-gb", "6").stdout.count('"verdict": "local"') == 1


def test_cli_mismatch_and_no_gpu(tools) -> None:  # type: ignore[no-untyped-def]
    r = doctor(tools("mismatch", "ssh"), "--json")
    data = json.loads(r.stdout)
    vram = data["checks"][0]
    assert (vram["name"], vram["status"]) == ("local VRAM", "failing") and vram["fix"].startswith(
        "reboot"
    )
    assert data["verdict"] == "distributed" and "version mismatch" in data["reason"]
    r = doctor(tools("none", "ssh"))
    assert "verdict: distributed: no usable NVIDIA GPU here (No devices were found" in r.stdout


def test_cli_bad_profile_is_a_usage_error(tools, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = doctor(tools("rtx3060-12gb"), "nope", cwd=tmp_path)
    assert r.returncode == 2 and "profile 'nope' not found" in r.stderr


def test_cli_box_is_this_machine(tools, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`connector: local`: the box checks run the same script through sh here, end to end."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        prof = tmp_path / "profiles" / "here.yaml"
        prof.parent.mkdir()
        prof.write_text(
            f"remote:\n  connector: local\nserver:\n  port: {port}\n  user: nobody\n"
            f"  package:\n    root: {tmp_path}/CARLA_Leaderboard_20\n"
        )
        r = doctor(
            tools(
                "rtx3070-8gb",
                "ssh",
                "sh",
                "ss",
                "df",
                "id",
                "awk",
                "grep",
                "ps",
                "getent",
                "cut",
                "dirname",
                "ls",
                "tr",
                "head",
                "cat",
                "timeout",
                "runuser",
                "env",
                "tmux",
            ),
            "here",
            "--json",
            cwd=tmp_path,
        )
        data = json.loads(r.stdout)
        box = {c["name"]: c for c in data["checks"] if c.get("host")}
        assert box["box reachable"]["detail"] == "connector: local (this machine is the box)"
        assert (
            box["box GPU driver"]["status"] == "ok"
            and "NVIDIA GeForce RTX 3070" in box["box GPU driver"]["detail"]
        )
        assert (
            box["box VRAM"]["status"] == "warning"
        )  # 7.4 GB: enough for the server, 8 recommended
        assert box["box ports"]["status"] == "failing"
        assert box["box ports"]["detail"].startswith(f"port {port} in use")
        assert (
            f"server.port: {port + 3}" in box["box ports"]["fix"]
            or "server.port:" in box["box ports"]["fix"]
        )
        assert (
            box["box package"]["detail"] == f"not installed at {tmp_path}/CARLA_Leaderboard_20 yet"
        )
        assert box["box disk"]["detail"].split()[2:4] == ["free", "at"]
        assert data["verdict"] == "distributed" and "run the server on localhost" in data["reason"]
        assert r.returncode == 1
    finally:
        busy.close()


# -- with a real docker daemon: the exit-0 path, end to end ---------------------------------------
@pytest.mark.docker
def test_cli_real_docker_and_8_gb_is_distributed_and_exits_0(tools, dockerd) -> None:  # type: ignore[no-untyped-def]
    env = tools("rtx3070-8gb", "docker", "tmux", "ssh")
    env.update(dockerd.env)  # DOCKER_HOST of the test daemon, DOCKER_CONFIG with the compose plugin
    r = doctor(env, "--json")
    data = json.loads(r.stdout)
    status = {c["name"]: (c["status"], c["detail"]) for c in data["checks"]}
    assert status["docker"][0] == "ok" and status["docker"][1].startswith(
        f"daemon {dockerd.server_version}"
    )
    assert status["docker compose"][0] == "ok"
    assert (
        status["NVIDIA container toolkit"][0] == "warning"
    )  # distributed: only GPU agents need it
    assert data["verdict"] == "distributed" and r.returncode == 0
    # asked for local mode instead: the missing toolkit now blocks it
    forced = doctor(env, "--mode", "local")
    assert forced.returncode == 1
    assert forced.stdout.splitlines()[-1] == (
        "blocked: local mode cannot start until local VRAM, NVIDIA container toolkit are fixed"
    )


def test_box_vram_judges_the_gpu_the_server_will_use(profile) -> None:  # type: ignore[no-untyped-def]
    two = smi.smi_report(
        0,
        "0, Tesla T4, GPU-a, 15360, 13105, 1930, 100, 535.104.05, Disabled\n"
        "1, Tesla T4, GPU-b, 15360, 3, 15032, 0, 535.104.05, Disabled",
        0,
        "",
        MIG_FIELDS,
    )
    c = box_vram_check(facts(gpu=two), profile(), "h")
    assert c is not None and c.status == "failing" and c.blocks == DIST
    assert c.detail.startswith("GPU 0 (Tesla T4): 1.9 GB available of 15.0 GB")
    assert c.fix.startswith("set server.gpu: 1 in the profile: GPU 1 (Tesla T4): 14.7 GB available")
    pinned = box_vram_check(facts(gpu=two), profile("  gpu: 1\n"), "h")
    assert pinned is not None and pinned.status == "ok"
