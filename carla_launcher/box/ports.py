"""Which world port a server gets on a box that may already run servers. Pure.

A CARLA server takes N (RPC), N+1 (streaming) and N+2 (multi-GPU secondary); a clash on any of
them ends in `bind: Address already in use` and Signal 11. So candidates go in steps of 3 from
the profile's port, and our own running server's ports count as free (we would replace it).
"""

from __future__ import annotations

from collections.abc import Iterable

STRIDE = 3
MAX_TRIES = 32


class NoFreePort(Exception):
    pass


def triple(port: int) -> set[int]:
    return {port, port + 1, port + 2}


def choose_port(base: int, listening: Iterable[int], ours: int | None = None) -> int:
    """Our running server's port if still valid, else the first of base, base+3, base+6, ...
    whose three ports are free (ours count as free: a restart would release them)."""
    busy = set(listening)
    if ours is not None:
        busy -= triple(ours)
        # keep our running server where it is while that is still a valid, clash-free choice
        if ours >= base and (ours - base) % STRIDE == 0 and not busy & triple(ours):
            return ours
    for i in range(MAX_TRIES):
        port = base + STRIDE * i
        if port + 2 > 65535:
            break
        if not busy & triple(port):
            return port
    raise NoFreePort(
        f"no free port triple from {base} in steps of {STRIDE} (busy: "
        f"{', '.join(str(p) for p in sorted(busy) if p >= base)[:200]})"
    )
