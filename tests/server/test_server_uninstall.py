"""`carla-launch server uninstall P`: the box as it was before the first deploy (the server user's
home, the listening ports), only what carla-launch made removed, `--dry-run` removes nothing,
and without a terminal it needs `--yes`."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from carla_launcher.box.shell import prologue
from carla_launcher.server.probe import probe_version
from carla_launcher.server.uninstall import Item, Uninstall, parse, render, script
from tests.harness.netns_box import Box
from tests.harness.polling import wait_for


# -- pure ----------------------------------------------------------------------------------------
def test_the_box_answer_is_read_with_paths_last() -> None:
    out = (
        "noise from a login banner\n"
        "remove\t2048\tthe CARLA install\t/home/c/CARLA\twith a tab\n"
        "keep\tnot installed by carla-launch\t/opt/carla\n"
        "user\tremove\tcarla\t/home/carla\n"
    )
    found = parse(out)
    assert found.items == [Item("/home/c/CARLA\twith a tab", "the CARLA install", 2048)]
    assert found.kept == [("/opt/carla", "not installed by carla-launch")]
    assert found.user == ("remove", "carla", "/home/carla")
    lines = render("gpu", found, dry_run=True)
    assert lines[0] == "gpu: would remove 2.0 MB:"
    assert "/opt/carla: not installed by carla-launch" in lines[2]
    assert lines[-1] == "gpu: would remove the user carla and its home /home/carla"
    assert render("gpu", Uninstall(), dry_run=False) == [
        "gpu: nothing of this profile's server to remove"
    ]


# -- on a box ------------------------------------------------------------------------------------
def home_listing(b: Box) -> list[str]:
    home = b.server_home
    return sorted(str(p.relative_to(home)) for p in home.rglob("*"))


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def on_a_terminal(b: Box, answer: str, *args: str) -> str:
    """The CLI with a pseudo-terminal as its stdin and stdout; `answer` typed at the prompt."""
    master, slave = os.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "carla_launcher", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=str(b.dir),
    )
    os.close(slave)
    seen = b""
    answered = False
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        if not answered and b"[y/N]" in seen:
            os.write(master, answer.encode())
            answered = True
    os.close(master)
    assert child.wait(timeout=60) in (0, 1)
    return seen.decode(errors="replace")


def uninstall(b: Box, *args: str) -> subprocess.CompletedProcess:
    return b.cli("server", "uninstall", *args, str(b.profile_path))


@pytest.mark.root
def test_uninstall_with_user_leaves_the_box_as_before_the_first_deploy(box: Box) -> None:
    ports = box.listening()
    assert not user_exists(box.server_user)
    box.install_standin()
    box.deploy()
    assert user_exists(box.server_user) and 2000 in box.listening()

    done = uninstall(box, "--user", "--yes")
    assert done.returncode == 0, done.stderr
    assert f"removed the user {box.server_user}" in done.stdout
    assert not user_exists(box.server_user)
    assert not box.server_home.exists()
    assert box.listening() == ports
    assert box.server_processes() == [] and box.carla_pid() is None


@pytest.mark.root
def test_uninstall_removes_what_the_deploy_made_and_keeps_a_user_it_did_not(box: Box) -> None:
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", box.server_user], check=True)
    before, ports = home_listing(box), box.listening()
    box.install_standin()
    box.deploy()
    assert box.root.is_dir() and box.session_dir.is_dir()

    # not on a terminal and no --yes: one line, exit 2, nothing touched
    refused = uninstall(box)
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and "--yes" in refused.stderr
    dry = uninstall(box, "--dry-run", "--user")
    assert dry.returncode == 0, dry.stderr
    assert f"{box.root} (the CARLA install)" in dry.stdout
    assert f"{box.session_dir} (the launch files and the server log)" in dry.stdout
    assert re.search(rf"^ +[0-9.]+ (KB|MB)  {re.escape(str(box.root))} ", dry.stdout, re.M)
    assert f"would keep the user {box.server_user}: not created by carla-launch" in dry.stdout
    assert box.root.is_dir() and box.carla_pid() is not None

    # on a terminal it lists, then asks; "n" keeps everything
    asked = on_a_terminal(box, "n\n", "server", "uninstall", str(box.profile_path))
    assert "would remove" in asked and "Remove these from the box? [y/N]" in asked
    assert box.root.is_dir() and box.carla_pid() is not None

    done = uninstall(box, "--yes", "--user")
    assert done.returncode == 0, done.stderr
    assert f"kept the user {box.server_user}: not created by carla-launch" in done.stdout
    assert user_exists(box.server_user)
    assert home_listing(box) == before
    assert box.listening() == ports and box.carla_pid() is None
    again = uninstall(box, "--yes")
    assert again.returncode == 0 and "nothing of this profile's server to remove" in again.stdout


@pytest.mark.root
def test_a_root_carla_launch_did_not_install_is_kept(box: Box) -> None:
    box.preinstall()
    box.write_profile(server={"package": {"url": None, "sha256": None}})  # "use it as it is"
    box.deploy()
    (box.root / ".carla-launch-package").unlink()
    outside = Path(f"/tmp/cl-box-{box.n}-carla")  # a root outside the home, not ours either
    outside.mkdir(exist_ok=True)
    (outside / "CarlaUE4.sh").write_text("#!/bin/sh\n")
    try:
        done = uninstall(box, "--yes")
        assert done.returncode == 0, done.stderr
        assert f"kept {box.root}: not installed by carla-launch" in done.stdout
        assert (box.root / "CarlaUE4.sh").is_file()
        assert not box.session_dir.exists() and box.carla_pid() is None

        box.write_profile(server={"package": {"root": str(outside)}})
        done = uninstall(box, "--yes")
        assert f"kept {outside}: not installed by carla-launch" in done.stdout
        assert (outside / "CarlaUE4.sh").is_file()
    finally:
        subprocess.run(["rm", "-rf", str(outside)], check=True)


@pytest.mark.root
def test_the_login_user_is_never_removed(box_factory) -> None:  # type: ignore[no-untyped-def]
    box = box_factory(login="user")
    box.install_standin()
    box.deploy()
    marker = box.server_home / ".carla-launch" / "user-created-by-carla-launch"
    marker.write_text("forged\n")  # even a marker does not make the login user ours
    done = uninstall(box, "--user", "--yes")
    assert done.returncode == 0, done.stderr
    assert f"kept the user {box.user}: it is the login user" in done.stdout
    assert user_exists(box.user) and box.server_home.is_dir()
    assert not box.root.exists()


@pytest.mark.root
def test_a_root_another_profiles_server_uses_is_kept(box: Box) -> None:
    box.preinstall()
    box.deploy()
    other = box.profile_path.with_name("other.yaml")  # same root, its own session and port
    data = json.loads(json.dumps(box.profile_data))
    data["server"].update({"tmux_session": "carla2", "port": 2003})
    other.write_text(json.dumps(data))  # JSON is YAML
    done = box.cli("deploy", str(other))
    assert done.returncode == 0, done.stderr

    dry = uninstall(box, "--dry-run")
    assert f"would keep {box.root}: used by session carla2" in dry.stdout
    done = uninstall(box, "--yes")
    assert done.returncode == 0, done.stderr
    assert f"kept {box.root}: used by session carla2" in done.stdout
    assert (box.root / "CarlaUE4.sh").is_file() and not box.session_dir.exists()
    assert probe_version(box.address, 2003) == "0.9.15"  # the other server runs on

    done = box.cli("server", "uninstall", "--yes", str(other))  # the last one takes it
    assert done.returncode == 0, done.stderr
    assert f"removed {box.root} (the CARLA install)" in done.stdout
    assert not box.root.exists() and "the deploy lock" in done.stdout


def install_lock(b: Box) -> Path:
    """The deploy's lock of the box's root (deploy/boxlib.py: lock_install), by POSIX cksum."""
    done = subprocess.run(["cksum"], input=str(b.root), capture_output=True, text=True)
    return b.server_home / ".carla-launch" / f"install-{done.stdout.split()[0]}.lock"


@pytest.mark.root
def test_a_deploy_that_holds_the_install_lock_is_not_undercut(box: Box) -> None:
    box.preinstall()
    box.deploy()
    lock = install_lock(box)
    before = lock.read_text()  # the pid of the deploy above
    holder = subprocess.Popen(  # as a deploy does: flock, then its pid in the file
        ["flock", str(lock), "sh", "-c", f"echo $$ > {lock}; exec sleep 600"],
        start_new_session=True,
    )
    try:
        pid = wait_for(
            lambda: (t := lock.read_text()) != before and t.strip().isdigit() and t.strip(),
            10,
            "the holder's pid in the lock",
        )
        done = uninstall(box, "--yes")
        assert done.returncode == 1
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, done.stderr
        assert f"a deploy of {box.root} runs on this box (pid {pid})" in errors[0]
        assert (box.root / "CarlaUE4.sh").is_file() and box.carla_pid() is not None
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    done = uninstall(box, "--yes")
    assert done.returncode == 0, done.stderr
    assert not box.root.exists() and not lock.exists()


@pytest.mark.root
@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox (its ps has no -u)")
def test_the_user_is_kept_while_it_runs_processes_with_busybox_ps(box: Box, tmp_path: Path) -> None:
    box.preinstall()
    (box.server_home / ".carla-launch").mkdir()
    (box.server_home / ".carla-launch" / "user-created-by-carla-launch").write_text("yes\n")
    box.run("setsid -f sleep 600 </dev/null >/dev/null 2>&1", user=box.server_user)
    sleeper = wait_for(lambda: box.server_processes(), 10, "the server user's sleep")[0]
    tools = tmp_path / "busybox-ps"
    tools.mkdir()
    (tools / "ps").symlink_to(shutil.which("busybox") or "busybox")
    srv = box.profile_data["server"]
    body = prologue(box.server_user, "carla", srv["package"]["root"]) + script(
        None, remove_user=True, compose=False, remove=True
    )
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
    done = subprocess.run(["sh", "-s"], input=body, capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert f"the user {box.server_user} still runs processes ({sleeper})" in done.stderr
    assert user_exists(box.server_user)


@pytest.mark.root
def test_the_cached_archive_stays_while_another_install_root_came_from_it(box: Box) -> None:
    box.install_standin()
    box.deploy()
    other = box.profile_path.with_name("other.yaml")  # its own root, session and port
    data = json.loads(json.dumps(box.profile_data))
    data["server"].update({"tmux_session": "carla2", "port": 2003})
    data["server"]["package"]["root"] = "~/CARLA_other"
    other.write_text(json.dumps(data))  # JSON is YAML
    done = box.cli("deploy", str(other))
    assert done.returncode == 0, done.stderr
    second = box.server_home / "CARLA_other"
    assert box.package_path is not None
    archive = box.server_home / ".carla-launch" / "downloads" / box.package_path.name
    why = f"{archive}: for {second}, installed from the same archive"

    dry = uninstall(box, "--dry-run")
    assert f"would keep {why}" in dry.stdout, dry.stdout
    done = uninstall(box, "--yes")
    assert done.returncode == 0, done.stderr
    assert f"kept {why}" in done.stdout, done.stdout
    assert not box.root.exists() and archive.is_file()
    assert probe_version(box.address, 2003) == "0.9.15"  # the other server runs on

    done = box.cli("server", "uninstall", "--yes", str(other))  # the last one takes it
    assert done.returncode == 0, done.stderr
    assert f"removed {archive} (the download cache)" in done.stdout, done.stdout
    assert not second.exists() and not archive.parent.exists()
    assert not list((box.server_home / ".carla-launch").glob("download-*.lock"))


@pytest.mark.root
def test_a_cached_archive_a_deploy_uses_now_is_kept(box: Box) -> None:
    box.install_standin()
    box.deploy()
    assert box.package_path is not None
    name = box.package_path.name
    archive = box.server_home / ".carla-launch" / "downloads" / name
    lock = box.server_home / ".carla-launch" / f"download-{name}.lock"  # boxlib: lock_archive
    before = lock.read_text()  # the pid of the deploy above
    holder = subprocess.Popen(  # as another root's deploy unpacking it: flock, then its pid
        ["flock", "-s", str(lock), "sh", "-c", f"echo $$ > {lock}; exec sleep 600"],
        start_new_session=True,
    )
    try:
        pid = wait_for(
            lambda: (t := lock.read_text()) != before and t.strip().isdigit() and t.strip(),
            10,
            "the holder's pid in the lock",
        )
        done = uninstall(box, "--yes")
        assert done.returncode == 0, done.stderr
        assert f"kept {archive}: a deploy on this box uses it now (pid {pid})" in done.stdout
        assert archive.is_file() and not box.root.exists()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    done = uninstall(box, "--yes")
    assert f"removed {archive} (the download cache)" in done.stdout, done.stdout
    assert not archive.exists() and not lock.exists()


@pytest.mark.root
def test_uninstall_stops_and_removes_every_server_of_the_profile(box_factory) -> None:  # type: ignore[no-untyped-def]
    from tests.deploy.test_deploy_gpus import fake_smi_on_box

    box: Box = box_factory(login="user")
    fake_smi_on_box(box, "two-t4-idle")
    box.preinstall()
    box.write_profile(server={"gpus": "all"})
    box.deploy()
    first, top = box.session_dir, box.session_dir.parent
    second = top / f"{first.name}-1"
    assert (second / "launch.sh").is_file() and {2000, 2003} <= box.listening()
    retired = top / f"{first.name}-5"  # what a deploy leaves of a server it retired: its log
    retired.mkdir()
    (retired / "server.log").write_text("an old server's log\n")
    others = top / f"{first.name}2"  # another profile's session folder: not this profile's
    others.mkdir()
    (others / "server.log").write_text("another profile's log\n")
    subprocess.run(["chown", "-R", f"{box.server_user}:", str(retired), str(others)], check=True)

    dry = uninstall(box, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{box.root} (the CARLA install)" in dry.stdout, dry.stdout  # not "used by carla-1"
    for folder in (first, second, retired):
        assert f"{folder} (the launch files and the server log)" in dry.stdout
    assert str(others) not in dry.stdout and box.carla_pid() is not None

    done = uninstall(box, "--yes")
    assert done.returncode == 0, done.stderr
    assert "kept" not in done.stdout, done.stdout
    assert not box.root.exists()
    assert not first.exists() and not second.exists() and not retired.exists()
    assert (others / "server.log").is_file()
    assert not set(range(2000, 2006)) & box.listening()
    assert box.carla_pid() is None
