"""The deploy plan (pure: facts in, steps out), port choice, and the scripts it produces:
every script is valid POSIX sh, and the launch loop restarts a crashed server with backoff."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from carla_launcher.box.facts import BoxFacts
from carla_launcher.box.parsers import Listener
from carla_launcher.box.ports import NoFreePort, choose_port
from carla_launcher.box.shell import USER_CREATED
from carla_launcher.deploy.apt import NET_TIMEOUT, TOTAL_TIMEOUT
from carla_launcher.deploy.package import PackageSource, package_source
from carla_launcher.deploy.plan import STEPS, LocalInputs, plan_host
from carla_launcher.errors import InputError
from carla_launcher.profile import Profile, read_profile
from carla_launcher.server.launch import LaunchConfig, render_launch_script, server_args
from carla_launcher.server.scripts import start_script, status_script, stop_script

SHA = "ab" * 32


@pytest.fixture
def profile(tmp_path: Path) -> Profile:
    p = tmp_path / "profiles" / "gpu.yaml"
    p.parent.mkdir()
    p.write_text(f"""\
remote:
  host: gpu
server:
  package: {{url: "http://10.0.0.1/CARLA_Leaderboard_2.0.tar.xz", sha256: {SHA}}}
  os_packages: [tmux, curl, libomp5]
  args: [-RenderOffScreen, "-foo=a b; c"]
""")
    return read_profile(p)


def listening(*ports: int) -> tuple[Listener, ...]:
    return tuple(Listener(p) for p in ports)


def fresh(**kw: object) -> BoxFacts:
    f = BoxFacts(
        uid=0,
        login_user="root",
        privilege="root",
        server_user="carla",
        server_home="/home/carla",
        server_user_exists=False,
        package_root="/home/carla/CARLA_Leaderboard_20",
        session_dir="/home/carla/.carla-launch/carla",
        packages={"tmux": True, "curl": True, "libomp5": False},
        listeners=listening(22),
    )
    return replace(f, **kw)


def local(profile: Profile) -> LocalInputs:
    return LocalInputs(
        package_source(profile.server.package.url, profile.server.package.sha256, profile.base_dir)
    )


def deployed(launch_sha: str) -> BoxFacts:
    """A box where everything is done and the server runs, from the launch script `launch_sha`."""
    return fresh(
        server_user_exists=True,
        packages={"tmux": True, "curl": True, "libomp5": True},
        root_exists=True,
        launcher=True,
        marker={"sha256": SHA},
        tmux_sessions=("carla",),
        launch_sha=launch_sha,
        deployed_port=2000,
        status={"state": "running"},
        listeners=listening(22, 2000, 2001, 2002),
    )


def changing(plan) -> list[str]:  # type: ignore[no-untyped-def]
    return [s.name for s in plan.steps if s.changes]


def test_a_fresh_box_as_root_gets_everything(profile: Profile) -> None:
    plan = plan_host(profile, "gpu", fresh(), local(profile), "10.0.0.5")
    assert plan.error is None and plan.port == 2000
    assert changing(plan) == [s for s in STEPS if s != "Upload the CARLA package"]
    packages = plan.steps[1].script or ""
    assert "apt-get" in packages and "libomp5" in packages and "sudo" not in packages


def test_a_deployed_box_is_a_no_op(profile: Profile) -> None:
    first = plan_host(profile, "gpu", fresh(), local(profile), "10.0.0.5")
    done = deployed(launch_sha=first.launch_sha)
    plan = plan_host(profile, "gpu", done, local(profile), "10.0.0.5")
    assert changing(plan) == [] and plan.port == 2000
    assert [s.why for s in plan.steps][-1] == "running in tmux session carla"


def test_a_changed_launch_script_restarts_the_running_server(profile: Profile) -> None:
    done = deployed(launch_sha="0" * 64)
    plan = plan_host(profile, "gpu", done, local(profile), "10.0.0.5")
    assert changing(plan) == ["Write the launch script", "Start the CARLA server"]
    assert "restart" in plan.steps[-1].why and "stop_server" in (plan.steps[-1].script or "")


def test_missing_packages_without_sudo_is_one_clear_error(profile: Profile) -> None:
    facts = fresh(uid=1000, login_user="alice", privilege="none", server_user="alice")
    plan = plan_host(profile, "gpu", facts, local(profile), "10.0.0.5")
    assert plan.error == (
        "missing OS packages: libomp5; install them (sudo apt-get install "
        "libomp5) or log in as root or as a user with sudo"
    )
    with_sudo = plan_host(profile, "gpu", replace(facts, privilege="sudo"), local(profile), None)
    assert "sudo -n env DEBIAN_FRONTEND=noninteractive timeout" in (with_sudo.steps[1].script or "")
    assert not with_sudo.steps[0].changes  # no user to create when not root


def test_a_foreign_install_root_is_never_overwritten(profile: Profile) -> None:
    plan = plan_host(profile, "gpu", fresh(root_exists=True), local(profile), None)
    assert plan.error and "not installed by carla-launch" in plan.error


def test_without_a_url_the_root_must_hold_carla(profile: Profile) -> None:
    src = LocalInputs(PackageSource("none", None, None, None, None))
    assert "no CarlaUE4.sh" in (plan_host(profile, "gpu", fresh(), src, None).error or "")
    ok = plan_host(profile, "gpu", fresh(launcher=True, root_exists=True), src, None)
    assert ok.error is None and not ok.steps[3].changes and not ok.steps[4].changes


def test_a_verified_download_is_not_fetched_again(profile: Profile) -> None:
    plan = plan_host(profile, "gpu", fresh(download_verified=SHA), local(profile), None)
    assert not plan.steps[3].changes and plan.steps[4].changes


def test_without_a_sha256_a_cached_archive_is_taken_only_from_the_same_place(
    tmp_path: Path,
) -> None:
    p = tmp_path / "gpu.yaml"
    p.write_text("remote: {host: gpu}\nserver: {package: {url: 'http://10.0.0.1/a/C.tar.gz'}}\n")
    prof = read_profile(p)
    cached = {"download_verified": SHA}
    for origin, fetched in (
        ("http://10.0.0.1/a/C.tar.gz", False),  # the same URL: downloaded before
        (None, False),  # a record that does not say where from (older deploys): trusted
        ("http://10.0.0.1/b/C.tar.gz", True),  # same name, another URL: downloaded anew
    ):
        plan = plan_host(prof, "gpu", fresh(**cached, download_origin=origin), local(prof), None)
        assert plan.error is None and plan.steps[3].changes is fetched, origin
        assert plan.steps[4].changes


def test_a_local_archive_is_uploaded(profile: Profile, tmp_path: Path) -> None:
    archive = tmp_path / "CARLA.tar.xz"
    archive.write_bytes(b"x" * 10)
    src = package_source(str(archive), None, tmp_path)
    plan = plan_host(profile, "gpu", fresh(upload_owner="812.4242"), LocalInputs(src, 10), None)
    upload = plan.steps[2]
    # a name of its own: two deploys of one archive at once never write one file
    assert upload.changes and upload.upload == (
        str(archive),
        "/home/carla/.carla-launch/downloads/CARLA.tar.xz.upload-812.4242.part",
    )
    assert not plan.steps[3].changes
    # a box that names no owner: the deploy's own nonce
    plan = plan_host(profile, "gpu", fresh(), LocalInputs(src, 10, nonce="beef"), None)
    assert plan.steps[2].upload == (
        str(archive),
        "/home/carla/.carla-launch/downloads/CARLA.tar.xz.upload-tbeef.part",
    )


def test_a_file_url_is_refused_and_a_local_path_still_uploads(tmp_path: Path) -> None:
    for url in ("file:///etc/shadow", "FILE:///data/CARLA.tar.gz"):
        with pytest.raises(InputError) as e:
            package_source(url, None, tmp_path)
        assert e.value.field == "server.package.url" and "file://" in e.value.message
        assert e.value.exit_code == 2
    src = package_source("pkgs/CARLA 0.9.15.tar.gz", None, tmp_path)
    assert src.kind == "local" and src.local_path == tmp_path / "pkgs" / "CARLA 0.9.15.tar.gz"
    assert src.archive_name == "CARLA_0.9.15.tar.gz"


def test_apt_runs_only_for_missing_packages_and_is_bounded(profile: Profile) -> None:
    have_all = fresh(packages={"tmux": True, "curl": True, "libomp5": True})
    plan = plan_host(profile, "gpu", have_all, local(profile), None)
    assert plan.steps[1] == replace(plan.steps[1], script=None, why="all present")
    script = plan_host(profile, "gpu", fresh(), local(profile), None).steps[1].script or ""
    assert f"timeout -k 10 {TOTAL_TIMEOUT} sh -c" in script
    assert f"Acquire::http::Timeout={NET_TIMEOUT}" in script and "Acquire::Retries=1" in script
    assert f'every 2 apt {TOTAL_TIMEOUT} since "$start"' in script  # progress: seconds so far
    assert "PKGS=libomp5" in script and "tmux" not in script.split("PKGS=", 1)[1].split("\n")[0]
    assert "set server.os_packages: [] in the profile" in script


def test_leftovers_of_a_killed_unpack_are_tidied_without_a_restart(profile: Profile) -> None:
    first = plan_host(profile, "gpu", fresh(), local(profile), "10.0.0.5")
    left = ("/home/carla/.carla-launch-unpack.CARLA_Leaderboard_20.x1y2z3",)
    done = replace(deployed(launch_sha=first.launch_sha or ""), leftovers=left)
    plan = plan_host(profile, "gpu", done, local(profile), "10.0.0.5")
    assert changing(plan) == ["Unpack the CARLA package"]
    assert left[0] in plan.steps[4].why and "clean_leftovers" in (plan.steps[4].script or "")
    unpack = plan_host(profile, "gpu", replace(fresh(), leftovers=left), local(profile), None)
    assert "clean_leftovers" in (unpack.steps[4].script or "")  # a new install tidies first


def test_a_user_made_by_a_deploy_is_marked_as_ours(profile: Profile) -> None:
    plan = plan_host(profile, "gpu", fresh(), local(profile), None)
    script = plan.steps[0].script or ""
    assert "useradd -m" in script
    assert f'"$SHOME/.carla-launch/{USER_CREATED}"' in script
    existing = plan_host(profile, "gpu", fresh(server_user_exists=True), local(profile), None)
    assert not existing.steps[0].changes


def test_a_start_under_the_lock_leaves_a_server_another_deploy_started(
    profile: Profile,
) -> None:
    plan = plan_host(profile, "gpu", fresh(), local(profile), None)
    start = plan.steps[6].script or ""
    assert "lock_install" in start and str(plan.launch_sha) in start
    assert start.index("another deploy") < start.index("stop_server\n")
    assert "( exec 9>&-; start_server )" in start  # tmux must not keep the lock


def test_ports_step_by_three_and_keep_our_server() -> None:
    assert choose_port(2000, {22}) == 2000
    assert choose_port(2000, {2001}) == 2003  # any of N, N+1, N+2 taken -> next triple
    assert choose_port(2000, {2000, 2001, 2002, 2005}) == 2006
    assert choose_port(2000, {2000, 2001, 2002}, ours=2000) == 2000  # ours: we would replace it
    assert choose_port(2000, {2003, 2004, 2005}, ours=2003) == 2003  # stays, even if 2000 is free
    with pytest.raises(NoFreePort):
        choose_port(65530, {65530, 65535})


def test_a_busy_port_moves_the_server_with_a_warning(profile: Profile) -> None:
    plan = plan_host(profile, "gpu", fresh(listeners=listening(22, 2002)), local(profile), None)
    assert plan.port == 2003 and any("using 2003" in w for w in plan.warnings)


def test_server_args_put_our_port_gpu_and_settings_in_once() -> None:
    args = server_args(
        (
            "-RenderOffScreen",
            "-world-port=3000",
            "--carla-rpc-port=1",
            "-graphicsadapter=0",
            "-carla-settings=old.ini",
        ),
        2003,
        gpu=1,
        settings_remote="/home/carla/.carla-launch/carla/CarlaSettings.ini",
    )
    assert args == (
        "-RenderOffScreen",
        "-carla-rpc-port=2003",
        "-graphicsadapter=1",
        "-carla-settings=/home/carla/.carla-launch/carla/CarlaSettings.ini",
    )


@pytest.mark.skipif(shutil.which("dash") is None and shutil.which("sh") is None, reason="needs sh")
def test_every_script_is_valid_posix_sh(profile: Profile, tmp_path: Path) -> None:
    shell = shutil.which("dash") or "sh"
    archive = tmp_path / "CARLA.zip"
    archive.write_bytes(b"x")
    scripts = [s.script for s in plan_host(profile, "gpu", fresh(), local(profile), None).steps]
    up = plan_host(
        profile, "gpu", fresh(), LocalInputs(package_source(str(archive), None, tmp_path), 1), None
    )
    scripts += [up.steps[2].script, up.steps[2].after_upload]
    tidy = replace(deployed("0" * 64), leftovers=("/x/.carla-launch-unpack.y.abcdef",))
    scripts += [s.script for s in plan_host(profile, "gpu", tidy, local(profile), None).steps]
    from carla_launcher.box.shell import prologue

    head = prologue("carla", "carla")
    scripts += [
        head + status_script(),
        head + start_script(),
        head + stop_script(),
        head + status_script("compose"),
    ]
    for script in filter(None, scripts):
        done = subprocess.run(
            [shell, "-n"], input=script, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr + script


def test_the_launch_loop_restarts_a_crash_with_backoff_and_records_it(tmp_path: Path) -> None:
    """The real loop, run here with a fake CarlaUE4.sh that crashes once."""
    root, sdir = tmp_path / "root dir", tmp_path / "state"
    root.mkdir()
    (root / "CarlaUE4.sh").write_text(
        "#!/bin/sh\n"
        'printf "%s\\n" "$@" > "$(dirname "$0")/args"\n'
        'if [ ! -f "$(dirname "$0")/crashed" ]; then touch "$(dirname "$0")/crashed"; '
        'echo "Signal 11 caught."; kill -SEGV $$; fi\n'
        "echo running; exec sleep 60\n"
    )
    (root / "CarlaUE4.sh").chmod(0o755)
    script = render_launch_script(
        LaunchConfig(str(root), str(sdir), ("-a b", "it's"), 2000, "on-failure", "test")
    )
    (tmp_path / "launch.sh").write_text(script)
    loop = subprocess.Popen(
        ["sh", str(tmp_path / "launch.sh")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        status: dict[str, str] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                status = dict(
                    line.split("=", 1)
                    for line in (sdir / "status").read_text().splitlines()
                    if "=" in line
                )
            if status.get("restarts") == "1" and status.get("state") == "running":
                break
            time.sleep(0.1)
        assert status.get("restarts") == "1" and status.get("state") == "running", status
        assert status["last_crash"] == "Signal 11 caught."
        assert status["last_exit"] == "139"
        assert (root / "args").read_text() == "-a b\nit's\n"
        pgid = int(status["pid"])
        os.killpg(pgid, 0)  # the server runs in its own process group
        assert pgid != os.getpgid(loop.pid)
        log = (sdir / "server.log").read_text()
        assert "carla-launch: restarting in 1 s" in log
        loop.send_signal(signal.SIGTERM)  # as `tmux kill-session` (HUP) or `server stop`
        loop.wait(timeout=10)
        time.sleep(0.2)
        # the loop's own record (what `server status` makes of it, with the session gone and
        # no stop asked for, is server/control.py's business)
        recorded = dict(
            line.split("=", 1) for line in (sdir / "status").read_text().splitlines() if "=" in line
        )
        assert recorded["state"] == "stopped" and recorded["restarts"] == "1"
        with pytest.raises(ProcessLookupError):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                os.killpg(pgid, 0)
                if _only_zombies(pgid):
                    raise ProcessLookupError
                time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(loop.pid, signal.SIGKILL)
        loop.wait()


def _only_zombies(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return False
    return True


def test_a_non_root_login_warns_only_about_a_server_user_someone_chose(profile: Profile) -> None:
    """Logged in as `me`, the server runs as `me`: worth a word only when the profile asked
    for another user, not when server.user is the default that `init` writes."""
    me = fresh(uid=1000, login_user="me", privilege="sudo", server_user="me")
    plan = plan_host(profile, "gpu", me, local(profile), "10.0.0.5")
    assert not [w for w in plan.warnings if "server.user" in w], plan.warnings
    chosen = replace(profile, server=replace(profile.server, user="svc"))
    plan = plan_host(chosen, "gpu", me, local(chosen), "10.0.0.5")
    assert [w for w in plan.warnings if "server.user" in w] == [
        "logged in as me, not root: the server runs as me (server.user is only used when "
        "logging in as root)"
    ]
