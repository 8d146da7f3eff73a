"""`carla-launch init`: a profile for a project that has none, from flags, without prompts."""

from __future__ import annotations

import shutil
from pathlib import Path

from carla_launcher.profile import read_profile
from tests.harness.cli import REPO


def test_init_detects_compose_folder_and_simulator_and_writes_a_valid_profile(
    tmp_path: Path, run
) -> None:
    shutil.copytree(REPO / "build", tmp_path / "docker")
    r = run("init", "box", "--host", "gpu-box", "--user", "carla", "--address", "10.0.0.5")
    assert r.exit_code == 0, r.stderr
    assert "wrote profiles/box.yaml (compose folder docker, simulator carla-simulator)" in r.stdout
    assert "carla-launch up box" in r.stdout
    profile = read_profile(tmp_path / "profiles" / "box.yaml")
    assert profile.remote.hosts == ("gpu-box",) and profile.remote.user == "carla"
    assert profile.compose.dir == "docker" and profile.compose.simulator == "carla-simulator"
    written = (tmp_path / "profiles" / "box.yaml").read_text()
    assert written.startswith("# Written by `carla-launch init`.")
    assert "address: 10.0.0.5" in written and "# what agents connect to; null = discover" in written
    assert "args: [-RenderOffScreen, -nosound]" in written and "sha256: null" in written
    # the profile is immediately usable
    r = run("sync", "--profile", "box", "-q")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "docker" / "docker-compose.leaderboard-distributed.yaml").read_text().count(
        "10.0.0.5"
    ) >= 1
    # never overwrites silently
    r = run("init", "box", "--host", "other")
    assert r.exit_code == 2 and "exists; use --force" in r.stderr


def test_init_without_host_and_without_terminal_fails_with_usage(tmp_path: Path, run) -> None:
    shutil.copytree(REPO / "build", tmp_path / "build")
    r = run("init")
    assert r.exit_code == 2 and "--host is required" in r.stderr
    r = run("init", "--host", "box; rm -rf /")
    assert r.exit_code == 2 and "not a host name" in r.stderr
    assert not (tmp_path / "profiles").exists()


def test_init_without_compose_files_says_what_to_pass(tmp_path: Path, run) -> None:
    r = run("init", "--host", "gpu-box")
    assert r.exit_code == 2 and "--compose-dir DIR --simulator NAME" in r.stderr
