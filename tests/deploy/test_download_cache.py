"""The box's download cache, for real: several install roots of one server user (two profiles,
two versions) share one download of an archive, also when deployed at once, the disk check
counts a cached archive once, and "not enough room" names what the cache could give back.
(`server uninstall` and the cache: tests/server/test_server_uninstall.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from carla_launcher.server.probe import probe_version
from tests.harness.netns_box import Box
from tests.harness.standin_carla import build_package, sha256

pytestmark = pytest.mark.root

SECOND = "CARLA_second"  # the second profile's install root, below the server user's home


def second_profile(box: Box, **package: str | None) -> Path:
    """A second profile for the box's server user: its own install root, session and port, the
    same package unless `package` says otherwise."""
    data = json.loads(json.dumps(box.profile_data))
    data["server"].update({"tmux_session": "carla2", "port": 2003})
    data["server"]["package"].update({"root": f"~/{SECOND}", **package})
    path = box.profile_path.with_name("second.yaml")
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def downloads(box: Box) -> Path:
    return box.server_home / ".carla-launch" / "downloads"


def one_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    return errors[0]


def test_a_second_install_root_is_unpacked_from_the_cache_without_asking_the_server(
    box: Box,
) -> None:
    srv, _, _ = box.install_standin()
    assert box.package_path is not None
    name = box.package_path.name
    box.deploy()
    asked = len(srv.requests)

    done = box.cli("deploy", str(second_profile(box)))
    assert done.returncode == 0, done.stderr
    assert srv.requests[asked:] == []  # not even a HEAD: the box had the archive
    second = box.server_home / SECOND
    assert f"installed {name} at {second}; the archive is kept in the download cache" in (
        done.stderr
    )
    assert (second / "CarlaUE4.sh").is_file()
    assert probe_version(box.address, 2003) == "0.9.15"
    assert probe_version(box.address, 2000) == "0.9.15"  # the first profile's server runs on
    assert sorted(p.name for p in downloads(box).iterdir()) == [name, f"{name}.sha256"]


def test_two_install_roots_deployed_at_once_share_one_download(box: Box) -> None:
    pkg = build_package(box.dir / "pkg", padding=12 << 20)
    srv = box.serve_files({pkg.name: pkg}, rate=4 << 20)  # about 3 s: the two overlap
    box.write_profile(server={"package": {"url": srv.url(pkg.name), "sha256": sha256(pkg)}})
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "carla_launcher", "deploy", str(profile)],
            cwd=box.dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for profile in (box.profile_path, second_profile(box))
    ]
    outs = [p.communicate(timeout=240) for p in runs]
    for p, (out, err) in zip(runs, outs, strict=True):
        assert p.returncode == 0, err
        assert "ready at" in out, out
    errs = "\n".join(err for _, err in outs)
    assert f"waiting for another deploy of {pkg.name} on this box (pid " in errs, errs
    assert f"{pkg.name} is in the download cache, downloaded already by another deploy" in errs
    assert "damaged" not in errs and "mismatch" not in errs, errs
    gets = [r for r in srv.requests if r.method == "GET"]
    assert len(gets) == 1 and gets[0].sent == pkg.stat().st_size, gets  # one download, whole
    for root, port in ((box.root, 2000), (box.server_home / SECOND, 2003)):
        assert (root / "CarlaUE4.sh").is_file()
        assert probe_version(box.address, port) == "0.9.15"
    assert (downloads(box) / pkg.name).read_bytes() == pkg.read_bytes()


def small_home(box: Box, kib: int) -> None:
    """The server user's home on a tmpfs of `kib` KiB, as SSH sessions on the box see it
    (undone by `box.run_as_sshd(f"umount -l {home}")`)."""
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", box.server_user], check=True)
    home = box.server_home
    box.run_as_sshd(
        f"mount -t tmpfs -o size={kib}k,mode=755 tmpfs {home} && chown {box.server_user}: {home}"
    )


def test_a_cached_archive_needs_no_room_again_for_a_second_root(box: Box) -> None:
    box.install_standin(padding=400_000)  # random bytes: unpacked, as big as the archive
    assert box.package_path is not None
    size = box.package_path.stat().st_size
    # room for the first deploy (the download plus 3x it to unpack), then, with the archive
    # and the first tree on the disk, 3x it for the second root but not 4x
    small_home(box, (size * 11 // 2) // 1024)
    try:
        box.deploy()
        done = box.cli("deploy", str(second_profile(box)))
        assert done.returncode == 0, done.stderr
        assert "downloading" not in done.stderr
        assert probe_version(box.address, 2003) == "0.9.15"
    finally:
        box.run_as_sshd(f"umount -l {box.server_home}", check=False)


def test_not_enough_room_names_the_other_cached_archives_and_how_to_remove_them(
    box: Box,
) -> None:
    box.install_standin(padding=300_000)
    small_home(box, 512)
    other = f"{box.server_home}/.carla-launch/downloads/CARLA_0.9.14.tar.gz"
    try:
        box.run_as_sshd(  # what a deploy of another version left in the cache: 200 KB
            f"mkdir -p {Path(other).parent} && head -c 204800 /dev/zero > {other} && "
            f"printf '%s\\nfrom=http://x/CARLA_0.9.14.tar.gz\\n' {'0' * 64} > {other}.sha256"
            f" && chown -R {box.server_user}: {box.server_home}/.carla-launch"
        )
        line = one_error(box.deploy(check=False))
        assert "not enough disk space" in line, line
        assert "holds other archives: CARLA_0.9.14.tar.gz (200.0 KB)" in line, line
        assert "carla-launch server uninstall" in line and "rm" in line, line
        listing = box.run_as_sshd(f"ls -A {Path(other).parent}").stdout.split()
        assert sorted(listing) == ["CARLA_0.9.14.tar.gz", "CARLA_0.9.14.tar.gz.sha256"]
    finally:
        box.run_as_sshd(f"umount -l {box.server_home}", check=False)


def test_without_a_sha256_an_archive_of_the_same_name_from_elsewhere_is_downloaded_anew(
    box: Box,
) -> None:
    first = build_package(box.dir / "a", name="CARLA.tar.gz")
    other = build_package(box.dir / "b", name="CARLA.tar.gz", version="0.9.14")
    srv = box.serve({"a/CARLA.tar.gz": first, "b/CARLA.tar.gz": other})
    box.write_profile(server={"package": {"url": srv.url("a/CARLA.tar.gz"), "sha256": None}})
    box.deploy()
    done = box.cli("deploy", str(second_profile(box, url=srv.url("b/CARLA.tar.gz"))))
    # the cache names where its archive came from: never installed for another URL, which the
    # deploy downloads instead (the plan reads the same `from=` line as the box's check)
    assert done.returncode == 0, done.stderr
    assert "downloading CARLA.tar.gz" in done.stderr and "another package" not in done.stderr
    gets = [r.path for r in srv.requests if r.method == "GET"]
    assert gets == ["a/CARLA.tar.gz", "b/CARLA.tar.gz"], gets
    assert probe_version(box.address, 2003) == "0.9.14"
    assert probe_version(box.address, 2000) == "0.9.15"  # the first profile's server runs on
    record = (downloads(box) / "CARLA.tar.gz.sha256").read_text()
    assert f"from={srv.url('b/CARLA.tar.gz')}" in record.splitlines()
