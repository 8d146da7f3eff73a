"""What the daemon remembers of the files, to notice what no event announced.

The kernel can lose events (a full inotify queue, a network filesystem), so the daemon keeps
a content hash of every input it planned from and the text of every variant it wrote, and
the periodic re-check compares them with the disk: a few small reads, no planning.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from carla_launcher.daemon.effects import UNREADABLE
from carla_launcher.fsutil import read_regular


def digest_of(path: str) -> str:
    """The content hash of a file; a missing or unreadable file has one too."""
    try:
        data = read_regular(path)  # a FIFO in the folder must not hang the daemon
    except OSError:
        data = b"\0missing"
    return hashlib.sha256(data).hexdigest()


def read_text(path: str) -> str | None:
    """A file's text with newlines as written by us (None: not readable as UTF-8 text)."""
    try:
        return read_regular(path).decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except (OSError, UnicodeDecodeError):
        return None


def hashes(paths: Iterable[str]) -> dict[str, str]:
    """Content hashes taken BEFORE planning: a write racing the plan then shows up as a
    difference at the next re-check (a needless resync), never as a missed change."""
    return {p: digest_of(p) for p in paths}


def yaml_names(folder: str) -> frozenset[str]:
    """The YAML file names of the folder (a new or removed one means: rediscover)."""
    try:
        names = [p.name for p in Path(folder).iterdir()]
    except OSError:
        return frozenset()
    return frozenset(n for n in names if n.endswith((".yaml", ".yml")))


def drifted(
    folder: str,
    listing: frozenset[str],
    seen: Mapping[str, str],
    written: Mapping[str, str | None],
) -> bool:
    """Did anything change since we looked: the folder's names, an input's content, or a
    variant's text (one we could not read counts as changed once it is readable again)?"""
    if yaml_names(folder) != listing:
        return True
    if any(digest_of(p) != h for p, h in seen.items()):
        return True
    return any(
        (read_text(v) is not None or not os.path.lexists(v))
        if text == UNREADABLE
        else read_text(v) != text
        for v, text in written.items()
    )
