"""Doing the same slow thing (an SSH round trip, a probe) for every host of a pool at once.

Each host costs a network round trip of up to several seconds, so commands that speak to a
pool (`server status`, `gpu`, `doctor`, `status`) ask every host at the same time. Results
come back in the order of the input, so output is stable whatever host answers first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_WORKERS = 16  # more parallel SSH connections than this gain nothing and trip MaxStartups


def each(items: Iterable[T], fn: Callable[[T], R], limit: int = MAX_WORKERS) -> list[R]:
    """`[fn(x) for x in items]`, run concurrently, in the order of `items`.

    An exception in one call is raised here, after the others have finished; callers that must
    not lose the other results catch inside `fn`.

    >>> each([3, 1, 2], lambda n: n * 10)
    [30, 10, 20]
    >>> each([], str)
    []
    """
    todo = list(items)
    if len(todo) <= 1:
        return [fn(x) for x in todo]
    with ThreadPoolExecutor(max_workers=max(1, min(limit, len(todo)))) as pool:
        return list(pool.map(fn, todo))
