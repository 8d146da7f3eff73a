"""`carla-launch deploy` for real: pyinfra over SSH into network-namespace boxes, the stand-in
CARLA package over HTTP from this machine's end of the veth, the server probed with CARLA's RPC.
"""

from __future__ import annotations

import json
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from carla_launcher.server.probe import probe_version
from tests.harness.netns_box import Box, pool_profile
from tests.harness.standin_carla import wait_listening

pytestmark = pytest.mark.root


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> str:
    assert done.returncode == 1, done.stderr
    errors = error_lines(done.stderr)
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


def test_first_deploy_brings_the_server_up_and_a_second_changes_nothing(box: Box) -> None:
    box.install_standin()
    first = box.deploy()
    # the box's real address, not docker0's 172.17.0.1 that `hostname -I` lists first
    assert f"CARLA 0.9.15 ready at {box.address}:2000" in first.stdout
    assert probe_version(box.address, 2000) == "0.9.15"
    for progress in ("creating the user", "downloading", "unpacking", "starting CARLA"):
        assert progress in first.stderr, first.stderr
    pid = box.carla_pid()
    assert pid is not None
    assert Path(f"/proc/{pid}").stat().st_uid != 0  # CARLA refuses root: it runs as the server user
    launch = box.session_dir / "launch.sh"
    mtime = launch.stat().st_mtime_ns

    second = box.deploy("--json")
    report = json.loads(second.stdout)
    host = report["hosts"][0]
    assert report["ok"] and host["changed"] == [] and host["address"] == box.address
    assert host["version"] == "0.9.15"
    assert box.carla_pid() == pid  # the same server process, untouched
    assert launch.stat().st_mtime_ns == mtime

    dry = box.deploy("--dry-run")
    assert "would change nothing" in dry.stdout
    assert box.carla_pid() == pid


def test_dry_run_on_a_fresh_box_changes_nothing(box: Box) -> None:
    box.install_standin()
    done = box.deploy("--dry-run")
    assert "would Create the server user" in done.stdout
    assert "Download the CARLA package" in done.stdout and "Start the CARLA server" in done.stdout
    assert not box.server_home.exists()


def test_checksum_mismatch_leaves_nothing_unpacked(box: Box) -> None:
    _, _, good = box.install_standin(sha="0" * 64)
    done = box.deploy(check=False)
    assert_one_line_error(done, "checksum mismatch", good)
    assert not box.root.exists()
    leftovers = [
        p.name for p in box.server_home.iterdir() if p.name.startswith(".carla-launch-unpack")
    ]
    assert leftovers == []
    downloads = box.server_home / ".carla-launch" / "downloads"
    assert not any(downloads.iterdir())  # the bad archive is gone; a rerun downloads again
    box.write_profile(server={"package": {"sha256": good}})
    box.deploy()
    assert (box.root / "CarlaUE4.sh").is_file()


def test_broken_download_resumes(box: Box) -> None:
    srv, url, _ = box.install_standin(padding=400_000)  # incompressible: a real transfer
    name = url.rsplit("/", 1)[1]
    size = srv.files[name].stat().st_size
    srv.break_after[name] = size // 2  # the first transfer dies half way
    done = box.deploy()
    assert "resuming" in done.stderr
    gets = [r for r in srv.requests if r.method == "GET" and r.path == name]
    assert gets[0].range is None and gets[0].sent == size // 2
    assert any(
        r.range
        and r.range.startswith("bytes=")
        and int(r.range[6:].split("-")[0]) > 0
        and r.status == 206
        for r in gets[1:]
    )
    assert srv.bytes_sent(name) < size * 1.2  # resumed, not downloaded again
    assert probe_version(box.address, 2000) == "0.9.15"


def test_new_package_formats_replace_the_install_and_restart(box: Box) -> None:
    box.preinstall()  # as after a first deploy: no download, the server starts at once
    first = box.deploy()
    assert "ready at" in first.stdout and "downloading" not in first.stderr
    for fmt, version in (("tar.xz", "0.9.16"), ("zip", "abd96a94")):
        box.install_standin(fmt, version=version)
        done = box.deploy("--json")
        host = json.loads(done.stdout)["hosts"][0]
        assert host["version"] == version
        assert "Unpack the CARLA package" in host["changed"]
        assert "Start the CARLA server" in host["changed"]
    olds = [p for p in box.server_home.iterdir() if ".old." in p.name or "unpack" in p.name]
    assert olds == []


def test_a_local_archive_is_uploaded(box: Box) -> None:
    from tests.harness.standin_carla import build_package, sha256

    pkg = build_package(box.dir / "local", "tar.gz")
    box.write_profile(server={"package": {"url": str(pkg), "sha256": sha256(pkg)}})
    done = box.deploy()
    assert "uploading" in done.stderr and "ready at" in done.stdout


def test_values_with_spaces_quotes_and_semicolons_reach_the_remote_shell_as_data(box: Box) -> None:
    canary = Path(f"/tmp/cl-box-{box.n}-pwned")
    canary.unlink(missing_ok=True)
    args = [
        f"-foo=a b; touch {canary}",
        "it's",
        '"quoted"',
        f"$(touch {canary})",
        f"`touch {canary}`",
        "-nosound",
    ]
    root = f"~/CARLA dir; touch {canary} $(id) `id` & |"
    box.write_profile(server={"args": args, "package": {"root": root}})
    box.install_standin()
    box.deploy()
    assert not canary.exists()
    assert (box.root / "CarlaUE4.sh").is_file()  # the odd folder name, verbatim
    log = (box.session_dir / "server.log").read_text()
    argv_line = next(line for line in log.splitlines() if line.startswith("StandIn: argv="))
    assert json.loads(argv_line.split("=", 1)[1]) == [*args, "-carla-rpc-port=2000"]


def test_unreachable_host_fails_within_the_connect_timeout_with_one_line(box: Box) -> None:
    nowhere = f"10.77.{box.n}.99"  # in the box's subnet, but nobody is there
    box.write_profile(remote={"host": nowhere, "connect_timeout": 2})
    # bounded waits: a child still running after connect timeout + start-up (10 s), rather
    # than TCP's minutes, fails with TimeoutExpired; bench/deploy.py measures how long it takes
    done = box.deploy(check=False, timeout=2 + 8)
    assert_one_line_error(done, nowhere)
    addr = box.cli("address", str(box.profile_path), timeout=2 + 8)
    assert addr.returncode == 1 and len(addr.stderr.strip().splitlines()) == 1, addr.stderr


def test_unknown_host_key_is_refused_by_default(box: Box) -> None:
    box.install_standin()
    box.known_hosts.write_text("")
    done = box.deploy(check=False)
    assert_one_line_error(done, "host key", "--accept-new-host-key")
    assert not box.server_home.exists()  # nothing happened on the box
    addr = box.cli("address", str(box.profile_path))
    assert addr.returncode == 1 and "host key" in addr.stderr and addr.stdout == ""
    ok = box.deploy("--accept-new-host-key")
    assert "ready at" in ok.stdout
    assert box.host_key in box.known_hosts.read_text()
    assert box.deploy().returncode == 0  # known now: strict checking passes


def test_missing_os_packages_without_sudo_are_listed_in_one_line(box_factory) -> None:  # type: ignore[no-untyped-def]
    b: Box = box_factory(login="nosudo")
    b.install_standin()
    b.write_profile(server={"os_packages": ["tmux", "carla-launch-test-missing", "curl"]})
    done = b.deploy(check=False)
    assert_one_line_error(done, "missing OS packages: carla-launch-test-missing", "sudo")


def test_non_root_login_runs_the_server_as_that_user(box_factory) -> None:  # type: ignore[no-untyped-def]
    b: Box = box_factory(login="user")
    b.install_standin()
    done = b.deploy()
    assert f"ready at {b.address}:2000" in done.stdout
    pid = b.carla_pid()
    assert pid is not None and Path(f"/proc/{pid}").stat().st_uid == pwd.getpwnam(b.user).pw_uid


def test_pool_deploys_every_host_and_steps_over_busy_ports(box_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a: Box = box_factory(login="user")
    b: Box = box_factory(login="nosudo")
    # someone else's server already holds 2000 on box b
    squatter = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            b.netns,
            "python3",
            "-c",
            "import socket,time; s=socket.socket(); s.bind(('0.0.0.0', 2000)); "
            "s.listen(); time.sleep(600)",
        ]
    )
    try:
        profile = pool_profile([a, b], tmp_path)
        for x in (a, b):
            x.preinstall()
        wait_listening(b.address, 2000)
        done = subprocess.run(
            [sys.executable, "-m", "carla_launcher", "deploy", "--json", str(profile)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        hosts = {h["host"]: h for h in json.loads(done.stdout)["hosts"]}
        assert (hosts[a.alias]["port"], hosts[b.alias]["port"]) == (2000, 2003)
        assert probe_version(a.address, 2000) == "0.9.15"
        assert probe_version(b.address, 2003) == "0.9.15"
        assert "using 2003" in done.stderr
    finally:
        squatter.kill()
        squatter.wait()


def test_not_enough_disk_space_fails_before_anything_is_unpacked(box: Box) -> None:
    box.install_standin(padding=300_000)
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", box.server_user], check=True)
    home = box.server_home
    # a small disk under the server user's home, as SSH sessions on the box see it
    box.run_as_sshd(
        f"mount -t tmpfs -o size=256k,mode=755 tmpfs {home} && chown {box.server_user}: {home}"
    )
    try:
        done = box.deploy(check=False)
        assert_one_line_error(done, "not enough disk space", "need", "have")
        listing = box.run_as_sshd(f"ls -A {home} {home}/.carla-launch/downloads").stdout
        assert "CARLA_Leaderboard_20" not in listing and ".part" not in listing, listing
    finally:
        box.run_as_sshd(f"umount -l {home}", check=False)


def test_settings_file_and_gpu_choice_reach_the_server(box: Box) -> None:
    settings = box.dir / "CustomCarlaSettings.ini"
    settings.write_text("[CARLA/Server]\nUseNetworking=true\n")
    box.write_profile(server={"settings": str(settings), "gpu": 1})
    box.preinstall()
    done = box.deploy()
    assert "no NVIDIA GPU found" in done.stderr  # the facts say what the box has
    uploaded = box.session_dir / "CarlaSettings.ini"
    assert uploaded.read_text() == settings.read_text()
    log = (box.session_dir / "server.log").read_text()
    argv = json.loads(
        next(line for line in log.splitlines() if line.startswith("StandIn: argv=")).split("=", 1)[
            1
        ]
    )
    assert f"-carla-settings={uploaded}" in argv and "-graphicsadapter=1" in argv
    settings.write_text("[CARLA/Server]\nUseNetworking=false\n")  # a new settings file restarts
    again = json.loads(box.deploy("--json").stdout)["hosts"][0]
    assert again["changed"] == ["Write the launch script", "Start the CARLA server"]
    assert "UseNetworking=false" in uploaded.read_text()
