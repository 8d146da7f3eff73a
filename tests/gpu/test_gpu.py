"""`carla-launch gpu` as a user runs it, with the FAKE nvidia-smi first on PATH (this machine has
no GPU): recorded outputs of several drivers and cards, real processes named through psutil,
and `--watch` read back from a real tmux pane."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.harness.fake_nvidia_smi import install, set_case
from tests.harness.tmux import detached_pane


@pytest.fixture
def smi(tmp_path: Path) -> Path:
    """A bin folder holding the fake as `nvidia-smi`; returns the folder."""
    return install(tmp_path / "fakebin", "rtx3070-8gb").parent


def env_with(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["CARLA_LAUNCH_GPU_BACKEND"] = "smi"  # the CSV path is what runs without a GPU; say so
    env.pop("FAKE_NVIDIA_SMI_CASE", None)
    env.update(extra)
    return env


def carla_launch(
    bin_dir: Path, *args: str, case: str | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = env_with(bin_dir, **extra)
    if case:
        env["FAKE_NVIDIA_SMI_CASE"] = case
    return subprocess.run(
        [sys.executable, "-m", "carla_launcher", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_8_gb_card_says_distributed(smi: Path) -> None:
    r = carla_launch(smi, "gpu", case="rtx3070-8gb")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "this machine: 1 GPU · driver 535.183.01"
    assert lines[1].split() == ["GPU", "NAME", "USED", "TOTAL", "FREE", "UTIL"]
    assert lines[2].split() == [
        "0",
        "NVIDIA",
        "GeForce",
        "RTX",
        "3070",
        "0.4",
        "GB",
        "(5%)",
        "8.0",
        "GB",
        "7.4",
        "GB",
        "3%",
    ]
    assert lines[-1] == (
        "verdict: distributed: GPU 0 (NVIDIA GeForce RTX 3070, 8.0 GB) is too small: "
        "server and agent together need more than 10.0 GB"
    )


def test_12_gb_card_says_local(smi: Path) -> None:
    r = carla_launch(smi, "gpu", case="rtx3060-12gb")
    assert r.returncode == 0
    assert r.stdout.splitlines()[-1].startswith(
        "verdict: local: GPU 0 (NVIDIA GeForce RTX 3060, 12.0 GB) has 11.4 GB available"
    )


def test_threshold_option_and_env(smi: Path) -> None:
    assert (
        carla_launch(smi, "gpu", "--need-gb", "6", case="rtx3070-8gb")
        .stdout.splitlines()[-1]
        .startswith("verdict: local:")
    )
    r = carla_launch(smi, "gpu", case="rtx3060-12gb", CARLA_LAUNCH_NEED_GB="16")
    assert (
        r.stdout.splitlines()[-1].startswith("verdict: distributed:")
        and "more than 16.0 GB" in r.stdout
    )


def test_two_gpus_one_taken_by_someone_else(smi: Path) -> None:
    r = carla_launch(smi, "gpu", case="two-t4-shared")
    table = rows(r.stdout)
    assert table[0][:3] == ["this", "machine:", "2"]
    assert table[2][:3] == ["0", "Tesla", "T4"] and table[2][-1] == "100%"
    assert table[3][:3] == ["1", "Tesla", "T4"] and table[3][-3:] == ["14.7", "GB", "0%"]
    assert ["other", "0", "12.8", "GB", "2231", "?", "python"] in table
    assert "verdict: local: GPU 1 (Tesla T4, 15.0 GB) has 14.7 GB available" in r.stdout


def test_mig_and_na_fields(smi: Path) -> None:
    r = carla_launch(smi, "gpu", case="a100-mig")
    assert "MIG on: no graphics for CARLA" in r.stdout
    assert ["other", "0", "?", "48213", "?", "python3"] in rows(r.stdout)  # used_memory [N/A]
    assert r.stdout.splitlines()[-1].startswith(
        "verdict: distributed: every GPU here is in MIG mode"
    )
    r = carla_launch(smi, "gpu", case="rtx3080-10gb-na")
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("  0"))
    assert line.split()[-3:] == [
        "9.0",
        "GB",
        "?",
    ]  # free derived from total - used; utilisation [N/A]
    assert "verdict: distributed" in r.stdout


def test_old_driver_without_the_mig_field(smi: Path) -> None:
    r = carla_launch(smi, "gpu", case="gtx1070-8gb-418")
    assert r.returncode == 0, r.stdout
    assert "driver 418.87.01" in r.stdout and "GeForce GTX 1070" in r.stdout


@pytest.mark.parametrize(
    ("case", "says", "fix"),
    [
        ("none", "No devices were found", "lspci"),
        ("mismatch", "Driver/library version mismatch (NVML library 550.120)", "reboot"),
        ("no-driver", "cannot talk to the NVIDIA driver", "modprobe nvidia"),
    ],
)
def test_no_usable_gpu_exits_1_and_says_why(smi: Path, case: str, says: str, fix: str) -> None:
    r = carla_launch(smi, "gpu", case=case)
    assert r.returncode == 1
    first, second = r.stdout.splitlines()[:2]
    assert first.startswith("this machine: no usable NVIDIA GPU: ") and says in first
    assert second.startswith("  fix: ") and fix in second
    assert "verdict: distributed" in r.stdout


def test_no_nvidia_smi_at_all(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = env_with(empty)
    env["PATH"] = str(empty)  # no nvidia-smi anywhere
    r = subprocess.run(
        [sys.executable, "-m", "carla_launcher", "gpu"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 1
    assert "nvidia-smi not found: no NVIDIA driver installed" in r.stdout


def test_nvml_falls_back_to_the_csv_path_without_a_driver(smi: Path) -> None:
    """With nvidia-ml-py installed and no driver, NVML fails to load and nvidia-smi answers."""
    pytest.importorskip("pynvml")
    env = env_with(smi, FAKE_NVIDIA_SMI_CASE="rtx3060-12gb")
    env.pop("CARLA_LAUNCH_GPU_BACKEND")
    r = subprocess.run(
        [sys.executable, "-m", "carla_launcher", "gpu", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    data = json.loads(r.stdout)["hosts"][0]
    assert data["source"] == "nvidia-smi" and data["gpus"][0]["name"] == "NVIDIA GeForce RTX 3060"


def test_json(smi: Path) -> None:
    r = carla_launch(smi, "gpu", "--json", case="two-t4-shared")
    (m,) = json.loads(r.stdout)["hosts"]
    assert m["status"] == "ok" and m["where"] == "this machine"
    assert [g["free_mib"] for g in m["gpus"]] == [1930, 15032]
    assert (
        m["processes"][0]["pid"] == 2231
        and m["processes"][0]["gpu"] == 0
        and m["processes"][0]["role"] is None
    )
    assert m["verdict"]["mode"] == "local" and m["verdict"]["gpu"] == 1


def test_watch_and_json_do_not_go_together(smi: Path) -> None:
    r = carla_launch(smi, "gpu", "--watch", "--json")
    assert r.returncode == 2 and "--watch and --json" in r.stderr


# -- naming real processes ------------------------------------------------------------------------
@pytest.fixture
def processes(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Real processes for the recorded pids: a CARLA server (a copy of sleep named like the
    real binary), the agent (our python) and someone else's python (user nobody)."""
    carla_bin = (
        tmp_path
        / "CARLA_Leaderboard_20"
        / "CarlaUE4"
        / "Binaries"
        / "Linux"
        / "CarlaUE4-Linux-Shipping"
    )
    carla_bin.parent.mkdir(parents=True)
    shutil.copy2("/bin/sleep", carla_bin)
    started = [
        subprocess.Popen([str(carla_bin), "60"]),
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]),
    ]
    shared = Path(
        tempfile.mkdtemp(prefix="cl-gpu-")
    )  # outside pytest's 0700 folders: nobody can run it
    if os.geteuid() == 0:
        shared.chmod(0o755)
        theirs = shared / "python3"  # a python-named program of another user
        shutil.copy2("/bin/sleep", theirs)
        started.append(
            subprocess.Popen([str(theirs), "60"], user="nobody", group="nogroup", extra_groups=[])
        )
    time.sleep(0.3)
    yield started
    for p in started:
        p.kill()
        p.wait()
    shutil.rmtree(shared, ignore_errors=True)


def test_processes_are_named_and_marked(smi: Path, processes) -> None:  # type: ignore[no-untyped-def]
    carla, agent = processes[0], processes[1]
    r = carla_launch(
        smi,
        "gpu",
        case="rtx4090-24gb-carla",
        FAKE_NVIDIA_SMI_PID_CARLA=str(carla.pid),
        FAKE_NVIDIA_SMI_PID_AGENT=str(agent.pid),
    )
    import getpass

    me = getpass.getuser()
    table = rows(r.stdout)
    assert ["CARLA", "0", "5.9", "GB", str(carla.pid), me, "CarlaUE4-Linux-Shipping"] in table
    assert ["agent", "0", "2.7", "GB", str(agent.pid), me, Path(sys.executable).name] in table
    # 9214 MiB used, 8802 listed: the rest is named as unlisted
    assert "GPU 0: 0.4 GB held by processes not listed (graphics, other containers)" in r.stdout
    # CARLA and the agent would be replaced, not added: 14.5 free + 8.6 ours
    assert r.stdout.splitlines()[-1].startswith(
        "verdict: local: GPU 0 (NVIDIA GeForce RTX 4090, 24.0 GB) has 23.1 GB available"
    )


def test_someone_elses_python_is_not_the_agent(smi: Path, processes) -> None:  # type: ignore[no-untyped-def]
    if len(processes) < 3:
        pytest.skip("needs root to run a process as another user")
    theirs = processes[2]
    r = carla_launch(
        smi, "gpu", case="rtx4090-24gb-carla", FAKE_NVIDIA_SMI_PID_AGENT=str(theirs.pid)
    )
    assert ["other", "0", "2.7", "GB", str(theirs.pid), "nobody", "python3"] in rows(r.stdout)
    assert "has 20.4 GB available" in r.stdout  # their 2.7 GB does not count as available


# -- --watch in a real terminal -------------------------------------------------------------------
WATCH = [sys.executable, "-m", "carla_launcher", "gpu", "--watch"]
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


@needs_tmux
def test_watch_refreshes_in_place(smi: Path) -> None:
    with detached_pane(WATCH, env=env_with(smi), width=150, height=30) as pane:
        first = pane.wait("RTX 3070")
        assert "verdict: distributed" in first
        stamp = first.splitlines()[0]
        assert stamp.startswith("carla-launch gpu  ·  every 1 s  ·  ")
        # the next frame comes within about a second: the clock in the title moves
        pane.wait(lambda t: t.splitlines()[0] != stamp, timeout=4)
        set_case(smi, "rtx4090-24gb-carla")
        now = pane.wait("RTX 4090")
        assert "RTX 3070" not in now and "verdict: local" in now
        assert "CARLA" in now  # the process table appeared in the same screen
        # in place: the title is on the first line and nowhere else, the history holds no old frames
        assert pane.history().count("carla-launch gpu  ·  every 1 s") == 1
        set_case(smi, "none")
        gone = pane.wait("No devices were found")
        assert "RTX 4090" not in gone and "Tesla" not in gone  # the longer frame left no remains


# -- a box: `connector: local` runs the same box script here (ssh boxes: test_doctor_remote.py) ---
@pytest.fixture
def here_profile(tmp_path: Path) -> Path:
    prof = tmp_path / "proj" / "profiles" / "here.yaml"
    prof.parent.mkdir(parents=True)
    prof.write_text("remote:\n  connector: local\nserver:\n  port: 2000\n")
    return prof.parent.parent


def test_gpu_of_a_box(smi: Path, here_profile: Path) -> None:
    env = env_with(smi, FAKE_NVIDIA_SMI_CASE="two-t4-shared")
    r = subprocess.run(
        [sys.executable, "-m", "carla_launcher", "gpu", "here"],
        capture_output=True,
        text=True,
        env=env,
        cwd=here_profile,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "this machine (connector: local): 2 GPUs · driver 535.104.05"
    assert lines[-1] == "room for the CARLA server: GPU 1 (Tesla T4): 14.7 GB available of 15.0 GB"


@needs_tmux
def test_watch_a_box_streams_over_one_connection(smi: Path, here_profile: Path) -> None:
    argv = [*WATCH[:-1], "here", "--watch"]
    with detached_pane(argv, env=env_with(smi), width=150, height=30, cwd=here_profile) as pane:
        first = pane.wait("RTX 3070")
        assert first.splitlines()[0].startswith("carla-launch gpu here  ·  every 1 s")
        assert (
            "tight for the CARLA server: GPU 0 (NVIDIA GeForce RTX 3070): 7.4 GB available" in first
        )
        set_case(smi, "mismatch")
        broken = pane.wait("version mismatch")
        assert "RTX 3070" not in broken and "fix: reboot" in broken
        # one long-lived loop, not a new process per frame: the same child keeps running
        import psutil

        def loops() -> list[int]:
            """gpu's own children: the shell loop that streams the frames."""
            return [c.pid for c in psutil.Process(pane.pid()).children() if c.name() == "sh"]

        started = loops()
        assert len(started) == 1
        time.sleep(2.2)
        assert loops() == started


@needs_tmux
def test_watch_in_a_narrow_short_pane_stays_in_place(smi: Path) -> None:
    """As in `attach`'s gpu pane (30% of the window): long lines wrap or are cut, the screen
    never scrolls, so each frame still replaces the last one."""
    set_case(smi, "two-t4-shared")
    with detached_pane(WATCH, env=env_with(smi), width=48, height=12) as pane:
        first = pane.wait("Tesla T4")
        assert all(len(ln) <= 48 for ln in first.splitlines())
        stamp = first.splitlines()[0]
        pane.wait(lambda t: t.splitlines()[0] != stamp, timeout=4)
        pane.wait(lambda t: t.splitlines()[0] != stamp and "Tesla T4" in t, timeout=4)
        assert pane.history().count("carla-launch gpu  ·") == 1


def test_fit_wraps_prose_and_cuts_tables() -> None:
    from carla_launcher.term import fit

    lines = fit(
        [
            "0  Tesla T4  12.8 GB (85%)  15.0 GB   1.9 GB  100%",
            "verdict: local: GPU 1 (Tesla T4, 15.0 GB) has 14.7 GB available",
        ],
        30,
        5,
    )
    assert lines == [
        "0  Tesla T4  12.8 GB (85%)  1…",
        "verdict: local: GPU 1 (Tesla",
        "  T4, 15.0 GB) has 14.7 GB",
        "  available",
    ]
    assert len(fit([str(i) for i in range(50)], 80, 10)) == 9  # never the last row: no scroll
