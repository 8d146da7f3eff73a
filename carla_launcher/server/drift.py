"""Drift between the profile and a box: what changed since the launch script was written. Pure,
but for `profile_origin`, which reads the settings file the profile names.

The box's side is the launch script's config line (`launch.LaunchOrigin`), read by the status
script in the same round trip; the profile's side is the same record made from the profile
now. A script without that line (written before it existed) is "unknown", not drift. The port
compared is the one asked for (`server.port`): the deploy may have chosen the next free one.
With `server.gpus`, each server (slot K) compares its own line: a changed `server.gpus` is
drift of every server (a redeploy adds or removes servers), and slot K's GPU is the K-th of
the list (for `all`, the one its box gave it: which GPUs a box has is the deploy's question).

>>> from carla_launcher.server.launch import LaunchOrigin
>>> box = LaunchOrigin(("-RenderOffScreen",), 0, 2000, "on-failure", None)
>>> now = LaunchOrigin(("-RenderOffScreen", "-quality-level=Low"), 1, 2000, "on-failure", None)
>>> drift(now, box)
['server.args: -quality-level=Low added', 'server.gpu: 0 -> 1']
>>> changed_since_deploy(drift(now, box))
'server.args and server.gpu changed since the last deploy (-quality-level=Low added; 0 -> 1)'
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from carla_launcher.server.launch import Gpus, LaunchOrigin, launch_origin, settings_arg

if TYPE_CHECKING:
    from carla_launcher.profile import Profile


def drift(profile_side: LaunchOrigin, box_side: LaunchOrigin | None) -> list[str]:
    """What the profile changed since the box's launch script was written, one item per field
    ("server.args: -quality-level=Low added"); empty when nothing did or the box's is unknown."""
    if box_side is None:
        return []
    out = []
    args = _args_change(box_side.args, profile_side.args)
    if args:
        out.append(f"server.args: {args}")
    if profile_side.gpus != box_side.gpus:  # its GPU follows: no line of its own for that
        out.append(f"server.gpus: {_gpus(box_side.gpus)} -> {_gpus(profile_side.gpus)}")
    elif profile_side.gpu != box_side.gpu:
        out.append(f"server.gpu: {_none(box_side.gpu)} -> {_none(profile_side.gpu)}")
    if profile_side.port != box_side.port:
        out.append(f"server.port: {box_side.port} -> {profile_side.port}")
    if profile_side.restart != box_side.restart:
        out.append(f"server.restart: {box_side.restart} -> {profile_side.restart}")
    options = _args_change(box_side.slurm or (), profile_side.slurm or ())
    if options:
        out.append(f"server.slurm: {options}")
    old, new = box_side.settings_sha256, profile_side.settings_sha256
    if old != new:
        what = "added" if old is None else "removed" if new is None else "its text changed"
        out.append(f"server.settings: the settings file {what}")
    return out


def changed_since_deploy(changes: list[str]) -> str:
    """One phrase for a message: "server.args changed since the last deploy (... added)"."""
    fields = [c.split(": ", 1)[0] for c in changes]
    details = "; ".join(c.split(": ", 1)[1] for c in changes)
    names = fields[0] if len(fields) == 1 else ", ".join(fields[:-1]) + " and " + fields[-1]
    return f"{names} changed since the last deploy ({details})"


def _args_change(old: tuple[str, ...], new: tuple[str, ...]) -> str:
    """ "-a added, -b removed, -quality-level: Epic -> Low", or "" when the same."""
    if old == new:
        return ""
    added = [a for a in new if a not in old]
    removed = [a for a in old if a not in new]
    words = []
    for a in list(added):
        name = _flag(a)
        twin = next((r for r in removed if name and _flag(r) == name), None)
        if twin is not None:
            words.append(f"{name}: {_value(twin)} -> {_value(a)}")
            added.remove(a)
            removed.remove(twin)
    words = [f"{a} added" for a in added] + [f"{r} removed" for r in removed] + words
    return ", ".join(words) or "their order changed"


def _flag(arg: str) -> str:
    return arg.split("=", 1)[0] if arg.startswith("-") and "=" in arg else ""


def _value(arg: str) -> str:
    return arg.split("=", 1)[1] or '""'


def _none(value: int | None) -> str:
    return "none" if value is None else str(value)


def _gpus(value: Gpus) -> str:
    """
    >>> _gpus(None), _gpus("all"), _gpus((0, 1))
    ('none', 'all', '[0, 1]')
    """
    if value is None or isinstance(value, str):
        return _none(None) if value is None else value
    return "[" + ", ".join(str(g) for g in value) + "]"


def slot_gpu(gpus: Gpus, gpu: int | None, slot: int, box_side: LaunchOrigin | None) -> int | None:
    """Server `slot`'s GPU as the profile says it (`gpu`: server.gpu, for a profile with one
    server); for `all`, the one the box recorded.

    >>> slot_gpu((2, 3), None, 1, None), slot_gpu((2, 3), None, 5, None), slot_gpu(None, 1, 0, None)
    (3, None, 1)
    """
    if isinstance(gpus, tuple):
        return gpus[slot] if slot < len(gpus) else None
    if gpus == "all":
        return box_side.gpu if box_side is not None else None
    return gpu


def profile_origin(
    profile: Profile, slot: int = 0, box_side: LaunchOrigin | None = None
) -> LaunchOrigin:
    """What a deploy made now would record for server `slot` (reads the settings file, as the
    deploy does); `box_side`: what the box's launch script says (for `gpus: all`)."""
    srv = profile.server
    named = srv.settings or settings_arg(srv.args)
    text = None
    if named is not None:
        path = profile.local_path(named)
        if path.is_file():
            text = path.read_text(encoding="utf-8")
    origin = launch_origin(srv, text)
    return dataclasses.replace(origin, gpu=slot_gpu(srv.gpus, srv.gpu, slot, box_side))
