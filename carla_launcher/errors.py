"""Domain errors. Every error a user can cause names the file, the line and the field."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def display_path(path: Path | str) -> str:
    """A path as the user would type it: relative to the current folder when below it."""
    p = os.path.abspath(path)  # noqa: PTH100  normalises ".." without following symlinks
    here = str(Path.cwd())
    return os.path.relpath(p, here) if p.startswith(here + os.sep) else str(path)


class LauncherError(Exception):
    """Base of the errors that end a command with a one-line message (exit code 2)."""

    exit_code = 2


@dataclass
class InputError(LauncherError):
    """Bad input in a file: `file:line: field: problem`, on one line."""

    path: Path | str | None
    line: int | None  # 1-based
    message: str
    field: str | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = display_path(self.path)
            if self.line:
                where += f":{self.line}"
            where += ": "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"
