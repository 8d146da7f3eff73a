"""A fresh clone of this checkout and an offline pip, for the tests that install the project as a
user does (`./install`, the pre-commit hook): the working tree's files as `git ls-files` lists
them (tracked and new, not ignored), and the wheels tests/setup fetched into .venv/wheelhouse."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".venv" / "wheelhouse"
VENV_BIN = REPO / ".venv" / "bin"


def copy_worktree(dest: Path) -> Path:
    """The checkout's files, uncommitted edits included, copied to `dest` (modes kept)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = REPO / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree, not yet in git
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    return dest


def wheelhouse() -> Path:
    """The wheels of this project's dependencies; skips (naming the fix) when missing."""
    if not (WHEELS / ".stamp").is_file():
        pytest.skip(f"no wheelhouse at {WHEELS}: run tests/setup (it fetches it once)")
    return WHEELS


def offline_env(home: Path, path: str, **extra: str) -> dict[str, str]:
    """A bare environment (as `env -i`): HOME, PATH, and pip installing only from the
    wheelhouse, with none of this machine's pip configuration."""
    return {
        "HOME": str(home),
        "PATH": path,
        "LANG": "C.UTF-8",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse()),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        **extra,
    }
