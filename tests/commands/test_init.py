"""`carla-launch init`: a profile for a project that has none, from flags, without prompts."""

from __future__ import annotations

import shutil
from pathlib import Path

from carla_launcher.profile import read_profile
from carla_launcher.profile.fields import PROFILE, Section
from carla_launcher.profile.schema import render as render_schema
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
    assert written.startswith("# yaml-language-server: $schema=profile.schema.json\n")
    assert "written by `carla-launch init`" in written and "profiles/default.yaml" not in written
    assert "  address: 10.0.0.5\n" in written and "null: discover it over SSH" in written
    assert "args: [-RenderOffScreen, -nosound]" in written and "sha256: null" in written
    assert "wrote profiles/profile.schema.json" in r.stdout
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


def test_init_writes_every_field_under_a_comment_with_its_readme_section(
    tmp_path: Path, run
) -> None:
    """Nothing a user needs is left out (server.user, os_packages, ready_timeout, ...)."""
    shutil.copytree(REPO / "build", tmp_path / "build")
    assert run("init", "--host", "gpu-box").exit_code == 0
    lines = (tmp_path / "profiles" / "default.yaml").read_text().splitlines()

    def check(section: Section, depth: int) -> None:
        pad = "  " * depth
        at = lines.index(f"{pad}{section.key}:")
        assert f"(README: {section.readme})" in lines[at - 1], lines[at - 1]
        for f in section.fields:
            if isinstance(f, Section):
                check(f, depth + 1)
                continue
            key = next(i for i in range(at, len(lines)) if lines[i].startswith(f"{pad}  {f.key}: "))
            assert lines[key - 1].startswith(f"{pad}  # "), f.key  # a comment above each field
            if f.readme != section.readme:
                comment = " ".join(line.strip("# ") for line in lines[key - 3 : key])
                assert f"(README: {f.readme})" in comment, f.key

    for section in PROFILE.fields:
        assert isinstance(section, Section)
        check(section, 0)
    profile = read_profile(tmp_path / "profiles" / "default.yaml")
    assert profile.server.ready_timeout == 300 and profile.remote.connect_timeout == 10


def test_init_schema_only_refreshes_the_schema_and_writes_no_profile(tmp_path: Path, run) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "profile.schema.json").write_text("{}")  # from an older version
    r = run("init", "--schema")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "profiles" / "profile.schema.json").read_text() == render_schema()
    assert "$schema=profile.schema.json" in r.stdout
    assert [p.name for p in (tmp_path / "profiles").iterdir()] == ["profile.schema.json"]
