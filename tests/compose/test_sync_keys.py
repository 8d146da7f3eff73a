"""The keys of variants (compose/keys.py): `sync --check` over a current folder parses nothing,
and anything a variant was derived from (an input, a flag, the tool) makes it stale."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from carla_launcher.compose import keys
from carla_launcher.compose.keys import Target
from carla_launcher.compose.service import plan_folder
from tests.harness.cli import REPO, write_files

FILES = {
    "compose.yaml": """\
include:
  - carla.yaml
  - agents.yaml
services:
  viewer:
    image: viewer
    environment:
      CARLA_HOST: carla-simulator
""",
    "carla.yaml": """\
services:
  carla-simulator:
    image: carlasim/carla:0.9.15
    command: ./CarlaUE4.sh -RenderOffScreen
""",
    "agents.yaml": """\
include:
  - base.yaml
services:
  agent:
    image: agent
    env_file: agent.env
    environment:
      - CARLA_SIM_HOST=carla-simulator
""",
    "base.yaml": """\
services:
  logger:
    image: logger
""",
    "agent.env": "ROUTE=one\n",
}
ADDRESS = ("--address", "10.0.0.5")


@pytest.fixture
def folder(tmp_path: Path, run) -> Path:
    write_files(tmp_path, FILES)
    r = run("sync", "--dir", ".", *ADDRESS)
    assert r.exit_code == 0, r.output
    return tmp_path


def check(run, *flags: str) -> int:
    return int(run("sync", "--dir", ".", "--check", *(flags or ADDRESS)).exit_code)


def fresh(folder: Path, target: Target | None = None) -> bool:
    """Whether every entry with variants was known current from its keys alone."""
    results = plan_folder(folder, target or Target("10.0.0.5"))
    return all(r.fresh for r in results)


def test_a_current_folder_is_known_current_without_parsing(folder: Path, run) -> None:
    assert check(run) == 0
    assert fresh(folder)
    text = (folder / "compose.distributed.yaml").read_text()
    header = text.split("\n")[2]
    assert " key=" in header and "inputs=compose.yaml," in header
    for name in ("carla.yaml", "agents.yaml", "base.yaml", "agent.env", ".env"):
        assert name in header  # `.env` absent, still looked for


def test_touching_and_rerunning_change_nothing(folder: Path, run) -> None:
    for p in folder.iterdir():
        os.utime(p, (1_000_000, 1_000_000))
    assert check(run) == 0 and fresh(folder)
    r = run("sync", "--dir", ".", *ADDRESS)
    assert r.exit_code == 0 and "wrote" not in r.output
    assert check(run) == 0 and check(run) == 0 and fresh(folder)


@pytest.mark.parametrize(
    "name, edit",
    [
        ("compose.yaml", lambda t: t.replace("image: viewer", "image: viewer:2")),
        ("carla.yaml", lambda t: t.replace("-RenderOffScreen", "-RenderOffScreen -nosound")),
        ("agents.yaml", lambda t: t.replace("image: agent", "image: agent:2")),
        ("base.yaml", lambda t: t.replace("image: logger", "image: logger:2")),  # include of one
        ("agent.env", lambda t: t + "CARLA_HOST=carla-simulator\n"),  # an env_file
        (".env", lambda t: "TAG=2\n"),  # created where there was none
    ],
)
def test_a_changed_input_makes_check_stale(folder: Path, run, name: str, edit) -> None:
    p = folder / name
    p.write_text(edit(p.read_text() if p.exists() else ""))
    assert not fresh(folder)
    assert check(run) == 1
    assert run("sync", "--dir", ".", *ADDRESS).exit_code == 0
    assert check(run) == 0 and fresh(folder)


def test_a_deleted_env_file_makes_check_stale(folder: Path, run) -> None:
    (folder / "agent.env").unlink()
    assert not fresh(folder)
    assert check(run) == 1


@pytest.mark.parametrize(
    "flags",
    [
        ("--address", "10.0.0.6"),
        ("--address", "10.0.0.5", "--port", "2001"),
        ("--address", "10.0.0.5", "--simulator", "viewer"),
        ("--address-env",),
    ],
)
def test_a_changed_flag_makes_check_stale(folder: Path, run, flags: tuple[str, ...]) -> None:
    assert check(run, *flags) == 1
    assert check(run) == 0


def test_flags_that_mean_the_same_agree(folder: Path, run) -> None:
    """--port at the simulator's own port, --simulator naming the one found: the same variant,
    known current from its key (as a profile's port and a bare --address agree)."""
    flags = ("--address", "10.0.0.5", "--port", "2000", "--simulator", "carla-simulator")
    assert check(run, *flags) == 0
    assert fresh(folder, Target("10.0.0.5", 2000, "carla-simulator"))
    r = run("sync", "--dir", ".", *flags)
    assert r.exit_code == 0 and "wrote" not in r.output


def test_another_tool_version_makes_check_stale(
    folder: Path, run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys, "_DIGEST", ["0123456789abcdef"])
    assert not fresh(folder)
    r = run("sync", "--dir", ".", "--check", *ADDRESS)
    assert r.exit_code == 1 and "stale" in r.stderr and "edited by hand" not in r.stderr


def test_an_old_format_header_is_stale_not_hand_edited(folder: Path, run) -> None:
    """A variant written before keys (three lines, no `key=`) is ours: rewritten once."""
    v = folder / "compose.distributed.yaml"
    text = v.read_text()
    # as the previous version wrote it: its own source hash (no tool digest in it), no key
    old = re.sub(r"source-hash=[0-9a-f]{16}", "source-hash=49ad3e394477be3f", text, count=1)
    v.write_text(re.sub(r" key=[^\n]*", "", old, count=1))
    r = run("sync", "--dir", ".", "--check", *ADDRESS)
    assert r.exit_code == 1 and "compose.distributed.yaml: stale" in r.stderr
    r = run("sync", "--dir", ".", *ADDRESS)
    assert r.exit_code == 0 and "wrote compose.distributed.yaml" in r.stdout
    assert v.read_text() == text


def test_an_edited_variant_is_still_hand_edited(folder: Path, run) -> None:
    v = folder / "compose.distributed.yaml"
    v.write_text(v.read_text().replace("image: viewer", "image: mine"))
    assert not fresh(folder)
    r = run("sync", "--dir", ".", "--check", *ADDRESS)
    assert r.exit_code == 1 and "edited by hand" in r.stderr


def test_an_edited_key_line_is_derived_not_trusted(folder: Path, run) -> None:
    v = folder / "compose.distributed.yaml"
    v.write_text(v.read_text().replace("inputs=compose.yaml,", "inputs=compose.yaml,x.yaml,", 1))
    assert not fresh(folder)
    assert check(run) == 0  # what it holds is what the plan gives


def test_a_deleted_included_variant_makes_check_stale(folder: Path, run) -> None:
    (folder / "agents-distributed.yaml").unlink()
    assert not fresh(folder)
    assert check(run) == 1


_PROBE = """
import sys
from carla_launcher.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(sorted(m for m in ("ruamel", "difflib", "carla_launcher.compose.sync") if m in sys.modules))
sys.exit(code)
"""


def test_a_current_folders_check_imports_neither_ruamel_nor_difflib(folder: Path) -> None:
    argv = ["sync", "--check", "--dir", str(folder), *ADDRESS]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    (folder / "base.yaml").write_text("services:\n  logger:\n    image: logger:3\n")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 1 and "ruamel" in done.stdout  # stale: derived, and said so
