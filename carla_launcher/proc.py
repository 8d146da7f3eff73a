"""Running a program: one policy for every subprocess the tool starts.

A program that is missing, not executable or silent past its time limit is an ordinary
outcome here (no nvidia-smi on a laptop, a box that does not answer), so `run` never raises
for those: it answers with the exit codes coreutils and the shell use, 127 (not found),
126 (cannot run) and 124 (timed out), and a one-line reason in `stderr`. Callers decide
what an exit code means; they never catch `TimeoutExpired` or `FileNotFoundError` themselves.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NOT_FOUND = 127
CANNOT_RUN = 126
TIMED_OUT = 124


@dataclass(frozen=True)
class Result:
    """What a finished program said: its exit code and both outputs as text."""

    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def run(
    argv: Sequence[str],
    timeout: float | None,
    *,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Result:
    """Run `argv` (never through a shell), wait at most `timeout` seconds, capture its output.

    The standard input is `input` when given, else /dev/null, so that a program that asks a
    question (ssh asking for a password) fails instead of hanging on our terminal.

    >>> run(["sh", "-c", "echo hi; exit 3"], 5)
    Result(rc=3, stdout='hi\\n', stderr='')
    >>> run(["/nonexistent/program"], 5).rc
    127
    >>> run(["sleep", "5"], 0.1).stderr
    'sleep: no answer within 0.1 s'
    """
    name = argv[0] if argv else "?"
    try:
        done = subprocess.run(
            list(argv),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError:
        return Result(NOT_FOUND, "", f"{name}: not found")
    except PermissionError as e:
        return Result(CANNOT_RUN, "", f"{name}: {e.strerror}")
    except OSError as e:
        return Result(CANNOT_RUN, "", f"{name}: {e.strerror or e}")
    except subprocess.TimeoutExpired:
        return Result(TIMED_OUT, "", f"{name}: no answer within {timeout:g} s")
    return Result(done.returncode, done.stdout or "", done.stderr or "")


def call(argv: Sequence[str]) -> int:
    """Run `argv` attached to our terminal (tail -f, tmux attach) and return its exit code."""
    try:
        return subprocess.call(list(argv))
    except FileNotFoundError:
        return NOT_FOUND
    except OSError:
        return CANNOT_RUN
