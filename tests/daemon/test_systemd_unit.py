"""The systemd user unit: checked offline with `systemd-analyze --user verify`, which exits 0 on
some typos and only complains on stderr, so every check asserts an empty stderr (and a
sabotaged copy proves the check bites). `daemon install` on a machine without a user manager
(this one: a container) writes the unit, says so in one line and exits 1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from carla_launcher.daemon.systemd import (
    TEMPLATE,
    escape_path,
    install,
    instance_name,
    render_unit,
    uninstall,
    user_unit_dir,
)

REPO = Path(__file__).resolve().parents[2]
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """HOME, XDG_CONFIG_HOME and an empty XDG_RUNTIME_DIR (0700) in tmp: no user manager is
    reachable from here, even on a machine that has one, so nothing is really started."""
    home = tmp_path / "home"
    runtime = tmp_path / "runtime"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DBUS_SESSION_BUS_ADDRESS", "NOTIFY_SOCKET")
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_RUNTIME_DIR=str(runtime),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        PYTHONPATH=str(REPO),
    )
    for k in ("HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "XDG_STATE_HOME"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    return env


def verify(unit: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "--user", "verify", unit],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_repo_unit_is_the_rendered_template() -> None:
    text = (REPO / "systemd" / TEMPLATE).read_text()
    assert text == render_unit()
    assert "Type=notify" in text and "WatchdogSec=" in text
    assert "ExecStart=%h/.local/bin/carla-launch daemon --dir %f" in text


@needs_analyze
def test_the_repo_unit_verifies_with_an_empty_stderr(
    sandbox: dict[str, str], tmp_path: Path
) -> None:
    home = Path(sandbox["HOME"])
    exe = home / ".local" / "bin" / "carla-launch"  # %h/.local/bin/carla-launch must exist
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    folder = tmp_path / "my project" / "build"
    folder.mkdir(parents=True)
    units = tmp_path / "units"
    units.mkdir()
    shutil.copy(REPO / "systemd" / TEMPLATE, units / TEMPLATE)
    shutil.copy(REPO / "systemd" / TEMPLATE, units / instance_name(folder))
    for unit in (units / TEMPLATE, units / instance_name(folder)):
        r = verify(str(unit), sandbox)
        assert (r.returncode, r.stderr) == (0, "")
    # the negative control: the typo systemd-analyze lets through with exit 0
    bad = units / "carla-launch-typo@.service"
    bad.write_text(render_unit().replace("Type=notify", "Type=notfy"))
    r = verify(str(bad), sandbox)
    assert "Failed to parse service type" in r.stderr
    # and a missing ExecStart binary
    exe.unlink()
    r = verify(str(units / TEMPLATE), sandbox)
    assert r.returncode != 0 or r.stderr


def test_escape_path_is_systemd_escape(tmp_path: Path) -> None:
    paths = [
        "/home/u/proj/build",
        "/home/u/my proj/build",
        "/srv/a-b/c_d/e.f",
        "/tmp/.hidden/x",
        "/opt/caf\u00e9/build",
        "/",
        "/a//b/",
        "/x/100%/y",
    ]
    tool = shutil.which("systemd-escape")
    for p in paths:
        if tool:
            want = subprocess.run(
                [tool, "--path", p], capture_output=True, text=True, check=True
            ).stdout.strip()
            assert escape_path(p) == want, p
    assert escape_path("/home/u/my proj/build") == "home-u-my\\x20proj-build"
    assert escape_path("/srv/a-b") == "srv-a\\x2db"


@needs_analyze
def daemon_cli(
    project: Path, env: dict[str, str], command: str
) -> subprocess.CompletedProcess[str]:
    """`carla-launch daemon COMMAND --dir build` from the project folder, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "carla_launcher", "daemon", command, "--dir", "build"],
        cwd=project,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_install_without_a_user_manager(sandbox: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "proj"
    shutil.copytree(REPO / "build", project / "build")
    (project / "profiles").mkdir()
    shutil.copy(REPO / "profiles" / "default.yaml", project / "profiles" / "default.yaml")
    r = daemon_cli(project, sandbox, "install")
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # one line, and it points to the alternatives
    assert "no systemd user manager here" in lines[0]
    profile = project / "profiles" / "default.yaml"
    assert (
        f"`carla-launch daemon --dir {project / 'build'} --profile {profile}` in a tmux pane"
        in lines[0]
    )
    assert "nohup carla-launch daemon" in lines[0]
    unit_dir = Path(sandbox["XDG_CONFIG_HOME"]) / "systemd" / "user"
    name = instance_name(project / "build")
    template = (unit_dir / TEMPLATE).read_text()
    dropin = (unit_dir / f"{name}.d" / "carla-launch.conf").read_text()
    # absolute paths: the interpreter of this installation, the folder (%f), the profile
    assert f"ExecStart={sys.executable} -m carla_launcher daemon --dir %f\n" in template
    assert (
        f"ExecStart={sys.executable} -m carla_launcher daemon --dir %f "
        f"--profile {project / 'profiles' / 'default.yaml'}\n"
    ) in dropin
    assert Path(sys.executable).is_absolute()
    r = verify(name, sandbox)  # the instance, with its drop-in, from the user's unit folder
    assert (r.returncode, r.stderr) == (0, "")
    assert str(project / "build") in r.stdout or r.stdout == ""
    # uninstall removes both; still no manager, said in one line
    r = daemon_cli(project, sandbox, "uninstall")
    assert r.returncode == 0
    assert len(r.stderr.strip().splitlines()) == 1 and "no systemd user manager" in r.stderr
    assert not (unit_dir / TEMPLATE).exists() and not (unit_dir / f"{name}.d").exists()


@needs_analyze
def test_install_quotes_paths_with_spaces_and_percent(
    sandbox: dict[str, str], tmp_path: Path
) -> None:
    odd = tmp_path / "odd dir 100%"
    odd.mkdir()
    python = odd / "py thon"
    python.symlink_to(sys.executable)
    folder = tmp_path / "a project" / "build"
    folder.mkdir(parents=True)
    profile = tmp_path / "a project" / "profiles" / "my box.yaml"
    rep = install(
        folder, ["--profile", str(profile)], command=[str(python), "-m", "carla_launcher"]
    )
    assert rep.code == 1  # no manager here
    name = instance_name(folder)
    dropin = (user_unit_dir() / f"{name}.d" / "carla-launch.conf").read_text()
    assert '"' + str(odd).replace("%", "%%") + '/py thon"' in dropin
    r = verify(name, sandbox)
    assert (r.returncode, r.stderr) == (0, "")
    two = tmp_path / "other" / "build"
    two.mkdir(parents=True)
    install(two, ["--address", "10.0.0.1"])
    uninstall(folder)  # the template stays while another folder's instance uses it
    assert (user_unit_dir() / TEMPLATE).exists()
    uninstall(two)
    assert not (user_unit_dir() / TEMPLATE).exists()


def test_status_names_the_unit(sandbox: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "proj" / "build"
    folder.mkdir(parents=True)
    (folder / "compose.yaml").write_text(
        "services:\n  sim:\n    image: carla\n  a:\n    image: x\n"
    )
    install(folder, ["--address", "10.0.0.1"])
    r = subprocess.run(
        [sys.executable, "-m", "carla_launcher", "daemon", "status", "--dir", str(folder)],
        env=sandbox,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1  # not running
    assert f"systemd: {instance_name(folder)} installed (no user manager here)" in r.stdout
