"""The CARLA package on boxes that misbehave, for real: a throttled download people can watch,
a 404, a server that ignores Range, a refused file:// URL, an upload nobody else can read,
leftovers of a killed unpack, and two deploys of one install root at once. (Several install
roots sharing the box's download cache: test_download_cache.py.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from carla_launcher.box import progress
from carla_launcher.server.probe import probe_version
from tests.harness.netns_box import Box
from tests.harness.standin_carla import build_package, sha256

pytestmark = pytest.mark.root

NOISE = ("sh: ", "cannot open", "No such file", "Terminated", "Traceback")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PYINFRA_HOST = re.compile(r"^\[([^\]]+)\]\s+")  # "[host] text" -> "host: text"


def raw_deploy(box: Box, timeout: float = 180) -> tuple[dict, list[str]]:
    """The deploy child as `carla-launch deploy` runs it: its JSON result, and its stderr
    lines as they came from the box (progress lines raw, before any rendering)."""
    done = subprocess.run(
        [sys.executable, "-m", "carla_launcher.deploy.deploy"],
        input=json.dumps({"profile": str(box.profile_path)}),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(box.dir),
        check=False,
    )
    lines = [PYINFRA_HOST.sub(r"\1: ", ANSI.sub("", line)) for line in done.stderr.splitlines()]
    return json.loads(done.stdout.strip().splitlines()[-1]), lines


def phase(lines: list[str], name: str) -> list[progress.Progress]:
    return [p for p in map(progress.parse, lines) if p is not None and p.phase == name]


def one_error(done: subprocess.CompletedProcess, code: int = 1) -> str:
    assert done.returncode == code, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return errors[0]


def downloads(box: Box) -> Path:
    return box.server_home / ".carla-launch" / "downloads"


def cached(box: Box) -> list[str]:
    """What the box's download cache holds, by name."""
    return sorted(p.name for p in downloads(box).iterdir())


def test_a_long_download_shows_rising_progress_then_checksum_and_unpack(box: Box) -> None:
    pkg = build_package(box.dir / "big", padding=48 << 20)  # random bytes: no compression
    size = pkg.stat().st_size
    srv = box.serve_files({pkg.name: pkg}, rate=10 << 20)  # about 5 s
    box.write_profile(server={"package": {"url": srv.url(pkg.name), "sha256": sha256(pkg)}})
    result, lines = raw_deploy(box)
    assert result["hosts"][box.alias]["ok"], lines
    got = phase(lines, "download")
    done = [p.done for p in got]
    assert len(set(done)) >= 3, lines  # several looks while it ran, not one at the end
    assert done == sorted(done) and done[-1] == size
    assert {p.total for p in got} == {size}
    for name in ("checksum", "unpack"):
        seen = phase(lines, name)
        assert seen and seen[-1].done == seen[-1].total == size, (name, lines)
    text = "\n".join(lines)
    assert f"downloading {pkg.name} (" in text and f"from {srv.url(pkg.name)}" in text
    assert f"checked the sha256 of {pkg.name}" in text
    assert f"installed {pkg.name} at {box.root}; the archive is kept in the download cache" in text
    assert not [line for line in lines if any(n in line for n in NOISE)], text
    # the verified archive stays for the box's other install roots; nothing partial is left
    assert cached(box) == [pkg.name, f"{pkg.name}.sha256"]
    assert (downloads(box) / pkg.name).read_bytes() == pkg.read_bytes()


def test_a_404_says_curls_code_once_and_is_not_retried(box: Box) -> None:
    srv = box.serve({})
    box.write_profile(
        server={"package": {"url": srv.url("CARLA_0.9.15.tar.gz"), "sha256": "a" * 64}}
    )
    line = one_error(box.deploy(check=False))
    assert "curl exit code 22" in line and line.count("404") == 1, line
    assert "server.package.url" in line
    gets = [r for r in srv.requests if r.method == "GET"]
    assert len(gets) == 1  # an HTTP error is final: no retries


def test_a_server_without_range_support_starts_a_left_partial_over(box: Box) -> None:
    pkg = build_package(box.dir / "pkg", padding=2 << 20)
    srv = box.serve_files({pkg.name: pkg}, ranges=False)
    box.write_profile(server={"package": {"url": srv.url(pkg.name), "sha256": sha256(pkg)}})
    # what a killed first run leaves: half the archive in the partial file
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", box.server_user], check=True)
    part = downloads(box) / f"{pkg.name}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(pkg.read_bytes()[: pkg.stat().st_size // 2])
    subprocess.run(["chown", "-R", f"{box.server_user}:", str(part.parent.parent)], check=True)
    done = box.deploy()
    assert "starting over from zero" in done.stderr, done.stderr
    gets = [r for r in srv.requests if r.method == "GET"]
    assert gets[0].range and gets[-1].range is None and gets[-1].sent == pkg.stat().st_size
    assert probe_version(box.address, 2000) == "0.9.15"


def test_a_file_url_is_refused_before_anything_happens_on_the_box(box: Box) -> None:
    box.write_profile(server={"package": {"url": "file:///etc/shadow"}})
    done = box.deploy(check=False)
    assert done.returncode == 2, done.stderr
    assert "file://" in done.stderr and "Traceback" not in done.stderr
    assert not box.server_home.exists()


def test_an_uploaded_archive_is_private_and_kept_in_the_download_cache(box: Box) -> None:
    name = "CARLA_local.tar.gz"
    broken = box.dir / "broken" / name  # passes its checksum, fails to unpack: it stays behind
    broken.parent.mkdir()
    broken.write_bytes(os.urandom(100_000))
    box.write_profile(server={"package": {"url": str(broken), "sha256": sha256(broken)}})
    line = one_error(box.deploy(check=False))
    assert "could not unpack" in line
    kept = downloads(box) / name
    assert kept.stat().st_mode & 0o777 == 0o600
    assert downloads(box).stat().st_mode & 0o777 == 0o700
    assert kept.stat().st_uid == downloads(box).stat().st_uid  # the server user's

    good = build_package(box.dir / "good", name=name)
    box.write_profile(server={"package": {"url": str(good), "sha256": sha256(good)}})
    done = box.deploy()
    assert "uploading" in done.stderr
    assert cached(box) == [name, f"{name}.sha256"]  # the good one replaced the broken one
    assert kept.read_bytes() == good.read_bytes()
    assert all((downloads(box) / n).stat().st_mode & 0o777 == 0o600 for n in cached(box))
    assert probe_version(box.address, 2000) == "0.9.15"


def test_leftovers_of_an_interrupted_unpack_are_removed_by_the_next_deploy(box: Box) -> None:
    box.preinstall()
    box.deploy()
    pid = box.carla_pid()
    unpack = box.root.parent / f".carla-launch-unpack.{box.root.name}.Ab12Cd"
    old = box.root.parent / f"{box.root.name}.old.4242"
    mine = box.root.parent / f"{box.root.name}.old.2019"  # the user's own: no marker in it
    for d in (unpack / "CARLA_Leaderboard_20", old, mine):
        d.mkdir(parents=True)
        (d / "CarlaUE4.sh").write_text("#!/bin/sh\n")
    (old / ".carla-launch-package").write_text("sha256=x\n")
    done = box.deploy("--json")
    host = json.loads(done.stdout)["hosts"][0]
    assert host["changed"] == ["Unpack the CARLA package"]  # tidied; nothing restarted
    assert not unpack.exists() and not old.exists() and mine.exists()
    assert box.carla_pid() == pid


def test_two_deploys_of_one_root_at_once_both_succeed(box: Box) -> None:
    pkg = build_package(box.dir / "pkg", padding=12 << 20)
    srv = box.serve_files({pkg.name: pkg}, rate=4 << 20)  # about 3 s: the two overlap
    box.write_profile(server={"package": {"url": srv.url(pkg.name), "sha256": sha256(pkg)}})
    argv = [sys.executable, "-m", "carla_launcher", "deploy", str(box.profile_path)]
    runs = [
        subprocess.Popen(
            argv, cwd=box.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in runs]
    for p, (out, err) in zip(runs, outs, strict=True):
        assert p.returncode == 0, err
        assert "ready at" in out
    errs = "\n".join(err for _, err in outs)
    assert f"waiting for another deploy of {box.root} on this box (pid " in errs, errs
    assert "damaged" not in errs
    gets = [r for r in srv.requests if r.method == "GET"]
    assert len(gets) == 1  # the second found the archive fetched (or installed) and stopped
    assert probe_version(box.address, 2000) == "0.9.15"
    with tarfile.open(pkg) as t:
        assert all((box.root / m.name.split("/", 1)[1]).exists() for m in t if "/" in m.name)
