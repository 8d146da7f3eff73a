"""Waiting in tests: poll with a deadline instead of sleeping a fixed time (and kill until
nothing is left).

The one `wait_for` of the suite. A wait that gives up is a failure that says what it waited
for (and, with `log`, what the program under test printed), never a silent fall-through.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

FIRST_INTERVAL = 0.005  # the first polls come quickly: most waits end within milliseconds


def wait_for(
    fn: Callable[[], T],
    timeout: float = 10.0,
    what: str | Callable[[], Any] | None = None,
    log: Callable[[], str] | None = None,
    *,
    interval: float = 0.05,
) -> T:
    """fn()'s first truthy value; on timeout an AssertionError naming what was awaited.

    Polls every 5 ms at first, backing off to `interval` (so a fast event is seen at once and
    a slow one costs little). `what` may be a callable, evaluated only on failure (e.g. the
    last screen seen); `log()` is appended to the message (e.g. a daemon's log file).
    """
    deadline = time.monotonic() + timeout
    delay = min(FIRST_INTERVAL, interval)
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            shown = what() if callable(what) else what or repr(value)
            extra = f"\n--- log ---\n{log()}" if log is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {shown}{extra}")
        time.sleep(delay)
        delay = min(delay * 1.5, interval)


def kill_until_gone(find: Callable[[], list[int]]) -> None:
    """SIGKILL every process `find()` lists, and again until it lists none (at most 50 rounds
    of 50 ms): a killed parent may have started a child meanwhile."""
    for _ in range(50):
        pids = find()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
