"""README's first set-up command, `./install`, as a new user meets it: a fresh clone, a HOME with
nothing in it, pipx or not; then `carla-launch` runs from a new login shell. Offline: pip takes the
wheels tests/setup fetched, and nothing else."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from carla_launcher import __version__
from tests.fresh_clone import VENV_BIN, copy_worktree, offline_env

SYSTEM_PATH = "/usr/bin:/bin"
HINT = re.compile(r"to get carla-launch there, run: (.+?)  \(then open a new shell\)$", re.M)


def _new_shell(home: Path, command: str) -> subprocess.CompletedProcess[str]:
    """`command` in a new login shell of that HOME, as a terminal opens one (`env -i`)."""
    return subprocess.run(
        ["env", "-i", f"HOME={home}", f"PATH={SYSTEM_PATH}", "bash", "-lc", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("with_pipx", [True, False], ids=["pipx", "no-pipx"])
def test_install_in_a_fresh_clone_then_a_new_shell_runs_carla_launch(
    tmp_path: Path, with_pipx: bool
) -> None:
    clone = copy_worktree(tmp_path / "carla-launcher")
    home = tmp_path / "home"
    home.mkdir()
    tools = tmp_path / "tools"  # what is on PATH besides the system's
    tools.mkdir()
    if with_pipx:
        if not (VENV_BIN / "pipx").is_file():
            pytest.skip("pipx is not in .venv: run tests/setup")
        (tools / "pipx").symlink_to(VENV_BIN / "pipx")
    path = f"{tools}:{SYSTEM_PATH}"
    if not with_pipx and shutil.which("pipx", path=path):
        pytest.skip(f"this machine has pipx in {SYSTEM_PATH}: the venv fallback cannot be seen")
    example = sorted(p.name for p in (clone / "build").iterdir())

    done = subprocess.run(
        ["./install"],
        cwd=clone,
        env=offline_env(home, path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert ("installing with pipx" if with_pipx else "no pipx here: installing into") in out
    # the main job ran on the bundled example and said what each variant is
    assert re.search(
        r"^current build/docker-compose\.distributed\.yaml: carla-simulator removed, "
        r"5 references -> 192\.0\.2\.10:2000 \(address from profiles/default\.yaml\)$",
        out,
        re.M,
    ), out
    # building left nothing in build/, which is the example, not a build folder
    assert sorted(p.name for p in (clone / "build").iterdir()) == example

    # not on PATH yet: one line says how, and a new shell finds it once that line ran
    assert _new_shell(home, "command -v carla-launch").returncode != 0
    hint = HINT.search(out)
    assert hint is not None, out
    subprocess.run(
        ["env", "-i", f"HOME={home}", f"PATH={SYSTEM_PATH}", "bash", "-c", hint.group(1)],
        check=True,
        timeout=60,
    )
    shell = _new_shell(home, "carla-launch --version && command -v carla-launch")
    assert shell.returncode == 0, shell.stderr
    version, where = shell.stdout.splitlines()
    assert version == f"carla-launch, version {__version__}"
    assert where == f"{home}/.local/bin/carla-launch"  # the installed tool, not a checkout's

    # again (an update), from a shell that has it on PATH: no hint, and it still runs
    again = subprocess.run(
        ["./install"],
        cwd=clone,
        env=offline_env(home, f"{home}/.local/bin:{path}"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "carla-launch is on your PATH" in again.stdout and not HINT.search(again.stdout)
    assert _new_shell(home, "carla-launch --version").returncode == 0
