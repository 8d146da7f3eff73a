"""Which servers a profile runs on one box: one per GPU of `server.gpus`. Pure.

Each server is a *slot*: its number K (the position in `server.gpus`, 0 for a profile with one
server), its GPU (`-graphicsadapter`), its tmux session and state folder on the box, and its
port window (N, N+1, N+2, from `server.port + 3K` upwards). Slot 0 keeps the session name of
a one-server profile, so switching a profile to `server.gpus` keeps its running server.

Why a tmux session per server and not a window of one session: tmux's current window belongs
to the session, so two read-only clients of one session cannot show two servers side by side
(`attach` tiles them); separate sessions also keep stop, status and logs of one server apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from carla_launcher.box.ports import STRIDE, choose_port, triple

if TYPE_CHECKING:
    from carla_launcher.profile import Server


@dataclass(frozen=True)
class Slot:
    index: int  # K: `server stop P --only K`, the agent's compose project NAME-K
    gpu: int | None  # -graphicsadapter; None: the box's default GPU
    session: str  # the tmux session on the box, and its state folder ~/.carla-launch/SESSION


def session_name(base: str, index: int) -> str:
    """The box's tmux session of server K: the profile's `server.tmux_session` for K = 0.

    >>> session_name("carla", 0), session_name("carla", 2)
    ('carla', 'carla-2')
    """
    return base if index == 0 else f"{base}-{index}"


def slot_index(base: str, session: str) -> int | None:
    """K of a session name on the box (None: not one of this profile's servers).

    >>> slot_index("carla", "carla"), slot_index("carla", "carla-3"), slot_index("carla", "x")
    (0, 3, None)
    """
    if session == base:
        return 0
    rest = session.removeprefix(f"{base}-")
    return int(rest) if rest != session and rest.isdigit() and rest[0] != "0" else None


def declared(server: Server, box_gpus: Sequence[int] | None = None) -> list[Slot]:
    """The servers the profile asks for on a box whose GPU indexes are `box_gpus` (None: not
    known). `gpus: all` on a box whose GPUs are not known is one server on the default GPU."""
    base = server.tmux_session
    if server.gpus is None:
        return [Slot(0, server.gpu, base)]
    gpus = list(box_gpus or []) if isinstance(server.gpus, str) else list(server.gpus)
    if not gpus:
        return [Slot(0, None, base)]
    return [Slot(k, g, session_name(base, k)) for k, g in enumerate(gpus)]


def usable(slots: Sequence[Slot], busy: Mapping[int, str]) -> tuple[list[Slot], list[str]]:
    """The slots whose GPU nobody else uses, and a line for each one left out (`busy`: GPU
    index -> whose process holds it, in words)."""
    kept = [s for s in slots if s.gpu is None or s.gpu not in busy]
    lines = [
        f"GPU {s.gpu} is in use by {busy[s.gpu]}: no server {s.index} there"
        for s in slots
        if s.gpu is not None and s.gpu in busy
    ]
    if lines:
        lines.append(f"{len(kept)} of {len(slots)} servers on this box")
    return kept, lines


def ports(
    base: int,
    slots: Sequence[Slot],
    listening: set[int],
    ours: Mapping[int, int] | None = None,
) -> dict[int, int]:
    """Each slot's world port: from `base + 3K` upwards, the first triple that is free and not
    given to another slot; a running server of ours keeps its port (`ours`: K -> port). Raises
    `box.ports.NoFreePort`.

    >>> ports(2000, [Slot(0, 0, "c"), Slot(1, 1, "c-1")], {2004})
    {0: 2000, 1: 2006}
    """
    ours = ours or {}
    taken: set[int] = set()
    chosen: dict[int, int] = {}
    for s in slots:
        # another slot's running server listens on its ports: busy for this one
        port = choose_port(base + STRIDE * s.index, listening | taken, ours.get(s.index))
        chosen[s.index] = port
        taken |= triple(port)
    return chosen
