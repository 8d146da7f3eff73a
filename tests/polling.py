"""Waiting in tests: poll with a deadline instead of sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    fn: Callable[[], T],
    timeout: float = 10.0,
    what: str | Callable[[], Any] | None = None,
    interval: float = 0.05,
) -> T:
    """fn()'s first truthy value; on timeout an AssertionError naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            shown = what() if callable(what) else what or repr(value)
            raise AssertionError(f"timed out after {timeout:g} s waiting for {shown}")
        time.sleep(interval)
