"""Local archives uploaded to real boxes: two deploys at once, an upload killed halfway, and an
identity file whose path OpenSSH and paramiko read differently (`%`, a space)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from carla_launcher.server.probe import probe_version
from tests.harness.netns_box import Box
from tests.harness.polling import wait_for
from tests.harness.standin_carla import build_package, sha256

pytestmark = pytest.mark.root


def downloads(box: Box) -> Path:
    return box.server_home / ".carla-launch" / "downloads"


def start_deploy(box: Box) -> subprocess.Popen[str]:
    """`carla-launch deploy` in a session of its own (so that a test can kill all of it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "carla_launcher", "deploy", str(box.profile_path)],
        cwd=box.dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def beside_root(box: Box) -> list[str]:
    """What sits next to the install root: the root alone once a deploy is done."""
    return sorted(p.name for p in box.root.parent.iterdir() if box.root.name in p.name)


def born(pid: int) -> str:
    """A process's start time as the box reads it (field 22 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[19]


def test_two_deploys_of_one_local_archive_at_once_both_succeed(box: Box) -> None:
    pkg = build_package(box.dir / "local", padding=32 << 20)  # a second or so to upload
    box.write_profile(server={"package": {"url": str(pkg), "sha256": sha256(pkg)}})
    runs = [start_deploy(box) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in runs]
    for p, (out, err) in zip(runs, outs, strict=True):
        assert p.returncode == 0, err
        assert "ready at" in out, out
    errs = "\n".join(err for _, err in outs)
    assert "uploading" in errs and "damaged" not in errs and "mismatch" not in errs, errs
    assert probe_version(box.address, 2000) == "0.9.15"
    assert beside_root(box) == [box.root.name]  # one installed tree, nothing half-made
    assert (box.root / ".carla-launch-package").read_text().startswith(f"sha256={sha256(pkg)}")
    # the checked archive stays in the download cache; no partial upload of either deploy stays
    assert sorted(p.name for p in downloads(box).iterdir()) == [pkg.name, f"{pkg.name}.sha256"]


def test_an_upload_killed_halfway_is_removed_by_the_next_deploy(box: Box) -> None:
    pkg = build_package(box.dir / "local", padding=64 << 20)
    size = pkg.stat().st_size
    box.write_profile(server={"package": {"url": str(pkg), "sha256": sha256(pkg)}})
    first = start_deploy(box)

    def uploading() -> list[Path]:
        if not downloads(box).is_dir():
            return []
        return [p for p in downloads(box).glob("*.upload-*.part") if p.stat().st_size < size]

    try:
        wait_for(lambda: bool(uploading()), 120, "the first deploy's upload under way")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate(timeout=30)
    [left] = list(downloads(box).glob("*.upload-*.part"))
    owner = left.name.rsplit(".upload-", 1)[1].removesuffix(".part")
    pid = int(owner.split(".")[0])
    # the upload's owner is what served the killed deploy's connection: it ends with it
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, f"process {pid} to end")

    done = box.deploy()
    assert f"removing {left} (left by an interrupted upload)" in done.stderr, done.stderr
    # the checked archive stays in the download cache; no upload is left
    assert sorted(p.name for p in downloads(box).iterdir()) == [pkg.name, f"{pkg.name}.sha256"]
    assert probe_version(box.address, 2000) == "0.9.15"

    # with the package installed, a deploy still tidies what a gone upload left; an upload
    # whose deploy lives (this test process stands in for its connection) is not touched
    carla = box.carla_pid()
    dead = downloads(box) / f"{pkg.name}.upload-{pid}.{born(os.getpid())}.part"
    live = downloads(box) / f"{pkg.name}.upload-{os.getpid()}.{born(os.getpid())}.part"
    for p in (dead, live):
        p.write_bytes(b"x" * 1000)
        shutil.chown(p, box.server_user)
    report = json.loads(box.deploy("--json").stdout)["hosts"][0]
    assert report["changed"] == ["Unpack the CARLA package"]  # tidied; nothing restarted
    assert not dead.exists() and live.exists()
    assert box.carla_pid() == carla


def test_an_identity_file_with_percent_and_space_in_its_path_works_for_the_deploy(
    box: Box,
) -> None:
    key = box.dir / "keys 100%" / "id %d key"  # `%d` stays text: no ssh token
    key.parent.mkdir()
    shutil.copyfile(box.identity, key)
    key.chmod(0o600)
    config = box.dir / "ssh_config_without_key"
    config.write_text(
        box.ssh_config.read_text().replace(f"  IdentityFile {box.identity}\n", ""),
    )
    assert "IdentityFile" not in config.read_text()
    box.install_standin()
    box.write_profile(remote={"ssh_config": str(config), "identity_file": str(key)})
    done = box.deploy()  # pyinfra (paramiko) for the deploy, OpenSSH for the rest
    assert "ready at" in done.stdout, done.stderr
    assert probe_version(box.address, 2000) == "0.9.15"
    status = box.cli("server", "status", str(box.profile_path))
    assert status.returncode == 0, status.stderr
