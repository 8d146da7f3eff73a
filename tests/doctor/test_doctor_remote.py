"""`doctor P` and `gpu P` against real boxes: network namespaces with their own sshd
(tests/harness/netns_box.py), reached with real OpenSSH, strict host keys. The FAKE nvidia-smi
(no GPU here) is installed on the box where a login shell would find it (~/.local/bin of the login
user); a root login gets none, which is the "no driver on the box" case.
"""

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

from tests.harness.fake_nvidia_smi import install, set_case, set_pids
from tests.harness.netns_box import Box
from tests.harness.polling import wait_for
from tests.harness.tmux import detached_pane

pytestmark = pytest.mark.root

NVIDIA_ICD_HERE = any(
    any(Path(d).glob("nvidia_icd*.json")) for d in ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d")
)


@pytest.fixture
def local_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake on this machine too (the local half of doctor): an 8 GB card, so the verdict is
    distributed and the box is what matters. box.cli() inherits this environment."""
    bin_dir = install(tmp_path / "localbin", "rtx3070-8gb").parent
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CARLA_LAUNCH_GPU_BACKEND", "smi")
    monkeypatch.delenv("FAKE_NVIDIA_SMI_CASE", raising=False)
    return bin_dir


def fake_on_box(b: Box, case: str) -> Path:
    """Install the fake as `nvidia-smi` in the login user's ~/.local/bin on the box."""
    home = Path(f"/home/{b.user}")
    bin_dir = install(home / ".local" / "bin", case).parent
    subprocess.run(["chown", "-R", f"{b.user}:", str(home / ".local")], check=True)
    return bin_dir


_DIRS: list[Path] = []


@pytest.fixture(autouse=True)
def _remove_sleeper_dirs():  # type: ignore[no-untyped-def]
    yield
    while _DIRS:
        shutil.rmtree(_DIRS.pop(), ignore_errors=True)


def sleeper(b: Box, name: str, user: str) -> subprocess.Popen[bytes]:
    """A process on the box (inside its namespace) named like `name`, run by `user`; the box's
    teardown kills it with everything else in the namespace."""
    d = Path(
        tempfile.mkdtemp(prefix="cl-doctor-")
    )  # not below pytest's 0700 folders: `user` runs it
    d.chmod(0o755)
    _DIRS.append(d)
    exe = d / name
    shutil.copy2("/bin/sleep", exe)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", b.netns, "runuser", "-u", user, "--", str(exe), "120"]
    )
    for _ in range(50):  # runuser forks: wait for the program itself
        out = subprocess.run(
            ["pgrep", "-u", user, "-f", str(exe)], capture_output=True, text=True
        ).stdout.split()
        if out:
            proc.real_pid = int(out[0])  # type: ignore[attr-defined]
            return proc
        time.sleep(0.05)
    raise RuntimeError(f"{exe} did not start")


def checks_of(
    done: subprocess.CompletedProcess[str],
) -> tuple[dict[str, object], dict[str, dict[str, str]]]:
    assert done.stdout.strip(), done.stderr
    data = json.loads(done.stdout)
    return data, {c["name"]: c for c in data["checks"] if c.get("host")}


def test_doctor_on_a_healthy_box(box_factory, local_fake: Path) -> None:  # type: ignore[no-untyped-def]
    """A user login with the package installed and verified, a 24 GB GPU running our CARLA."""
    b = box_factory(login="user")
    b.preinstall()
    smi = fake_on_box(b, "rtx4090-24gb-carla")
    carla = sleeper(b, "CarlaUE4-Linux-Shipping", b.server_user)
    set_pids(smi, carla=carla.real_pid, agent=4194301)  # type: ignore[attr-defined]
    done = b.cli("doctor", str(b.profile_path), "--json")  # how long: bench/doctor.py
    data, box_checks = checks_of(done)
    status = {k: v["status"] for k, v in box_checks.items()}
    assert status == {
        "box reachable": "ok",
        "box host key": "ok",
        "box user": "ok",
        "box GPU driver": "ok",
        "box Vulkan": "ok" if NVIDIA_ICD_HERE else "failing",
        "box VRAM": "ok",
        "box disk": "ok",
        "box ports": "ok",
        "box package": "ok",
    }, box_checks
    assert box_checks["box user"]["detail"] == f"logged in as {b.user} (not root)"
    assert (
        box_checks["box GPU driver"]["detail"]
        == "driver 560.35.03; GPUs 0: NVIDIA GeForce RTX 4090"
    )
    # our CARLA's 5.9 GB counts as available; the unknown pid's 2.7 GB does not
    assert box_checks["box VRAM"]["detail"].startswith(
        "GPU 0 (NVIDIA GeForce RTX 4090): 20.4 GB available of 24.0 GB"
    )
    sha = b.profile_data["server"]["package"]["sha256"]
    assert box_checks["box package"]["detail"] == (
        f"{b.root}: installed and verified (sha256 {sha[:12]}…)"
    )
    assert box_checks["box ports"]["detail"] == "2000 and 2001 are free"
    assert data["verdict"] == "distributed" and f"run the server on {b.alias}" in str(
        data["reason"]
    )


def test_doctor_names_what_blocks_a_root_box(box, local_fake: Path) -> None:  # type: ignore[no-untyped-def]
    """Root login, no driver, port 2001 taken by someone else, package not there."""
    listener = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            box.netns,
            sys.executable,
            "-c",
            "import socket, time; s = socket.create_server(('0.0.0.0', 2001)); time.sleep(120)",
        ]
    )
    try:
        for _ in range(100):
            if 2001 in box.listening():
                break
            time.sleep(0.05)
        done = box.cli("doctor", str(box.profile_path))
        assert done.returncode == 1
        screen = done.stdout
        assert f"box {box.alias} (profile {box.profile_path.stem})" in screen
        rows = {
            ln.split(None, 1)[1].split("  ")[0].strip(): ln
            for ln in screen.splitlines()
            if ln.startswith("  ") and ln.split(None, 1)[0] in ("ok", "warning", "FAILING")
        }
        assert rows["box user"].split()[0] == "ok"
        assert (
            f"logged in as root; the server runs as user {box.server_user} "
            "(will be created by deploy)" in rows["box user"]
        )
        assert (
            rows["box GPU driver"].split()[0] == "FAILING"
            and "nvidia-smi not found" in rows["box GPU driver"]
        )
        assert "box VRAM" not in rows
        assert rows["box ports"].split()[0] == "FAILING"
        assert "port 2001 in use" in rows["box ports"] and "not by our server" in rows["box ports"]
        assert (
            "fix: stop what holds it, or set server.port: 2003 (free with 2004 and 2005)" in screen
        )
        assert (
            rows["box package"].split()[0] == "warning"
            and "not installed at" in rows["box package"]
        )
        blocked = screen.splitlines()[-1]
        assert blocked.startswith("blocked: distributed mode cannot start until ")
        assert f"box GPU driver ({box.alias})" in blocked and f"box ports ({box.alias})" in blocked
    finally:
        listener.kill()
        listener.wait()


def test_doctor_unknown_host_key_and_unreachable(box, local_fake: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    box.write_profile(remote={"known_hosts": str(empty)})
    _, checks = checks_of(box.cli("doctor", str(box.profile_path), "--json"))
    assert checks["box reachable"]["status"] == "ok"
    assert (
        checks["box host key"]["status"] == "failing"
        and "accept_new_host_key" in checks["box host key"]["fix"]
    )
    assert "box GPU driver" not in checks  # nothing ran on a box we could not trust
    box.write_profile(remote={"known_hosts": None})
    pid = int(Path(box._sshd_dir / "sshd.pid").read_text())
    os.kill(pid, 15)
    wait_for(lambda: 22 not in box.listening(), 5, "sshd to stop listening")
    # gives up at once: refused, it stops after its first check (a bounded child otherwise)
    _, checks = checks_of(box.cli("doctor", str(box.profile_path), "--json", timeout=10))
    assert list(checks) == ["box reachable"]
    assert (
        checks["box reachable"]["status"] == "failing"
        and "Connection refused" in checks["box reachable"]["detail"]
    )


def test_gpu_of_a_box_marks_ours_and_theirs(box_factory, local_fake: Path) -> None:  # type: ignore[no-untyped-def]
    b = box_factory(login="user")
    smi = fake_on_box(b, "rtx4090-24gb-carla")
    carla = sleeper(b, "CarlaUE4-Linux-Shipping", b.server_user)
    theirs = sleeper(b, "python3", "nobody")
    set_pids(smi, carla=carla.real_pid, agent=theirs.real_pid)  # type: ignore[attr-defined]
    done = b.cli("gpu", str(b.profile_path))
    assert done.returncode == 0, done.stderr
    rows = [ln.split() for ln in done.stdout.splitlines()]
    assert done.stdout.splitlines()[0] == f"{b.alias}: 1 GPU · driver 560.35.03"
    assert [
        "CARLA",
        "0",
        "5.9",
        "GB",
        str(carla.real_pid),
        b.server_user,
        "CarlaUE4-Linux-Shipping",
    ] in rows  # type: ignore[attr-defined]
    assert ["other", "0", "2.7", "GB", str(theirs.real_pid), "nobody", "python3"] in rows  # type: ignore[attr-defined]
    assert done.stdout.splitlines()[-1] == (
        "room for the CARLA server: GPU 0 (NVIDIA GeForce RTX 4090): 20.4 GB "
        "available of 24.0 GB; others using it: python3 (nobody, 2.7 GB)"
    )
    js = json.loads(b.cli("gpu", str(b.profile_path), "--json").stdout)["hosts"][0]
    assert js["where"] == b.alias and js["server_room"]["status"] == "ok"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_gpu_watch_of_a_box_over_ssh(box_factory, local_fake: Path) -> None:  # type: ignore[no-untyped-def]
    b = box_factory(login="user")
    smi = fake_on_box(b, "rtx3060-12gb")
    argv = [sys.executable, "-m", "carla_launcher", "gpu", str(b.profile_path), "--watch"]
    with detached_pane(argv, width=160, height=30, cwd=b.dir) as pane:
        first = pane.wait("RTX 3060", timeout=15)
        assert (
            f"{b.alias}: 1 GPU · driver 550.54.14" in first and "room for the CARLA server" in first
        )
        set_case(smi, "two-t4-shared")
        second = pane.wait("Tesla T4", timeout=15)
        assert "RTX 3060" not in second and "2 GPUs" in second

        # one ssh connection streams the frames: no new ssh process per second
        def ssh_pids() -> list[str]:
            pattern = f"ssh -F .* {b.alias} sh -c"
            return subprocess.run(
                ["pgrep", "-f", pattern], capture_output=True, text=True
            ).stdout.split()

        ssh = ssh_pids()
        assert len(ssh) == 1
        time.sleep(2.2)
        assert ssh_pids() == ssh
