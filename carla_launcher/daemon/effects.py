"""What goes in and out of the daemon's reconciler: the observations the loop hands in
(`Events`, `Synced`) and the effects it carries out in order (`Effect`). Plain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from carla_launcher.compose.service import EntryReport
from carla_launcher.compose.sync import Target
from carla_launcher.errors import InputError
from carla_launcher.profile import Profile

FOLDER = "<folder>"  # keys of `errors` that are not entry files
PROFILE = "<profile>"
STATE = "<state>"
UNREADABLE = "\0unreadable"  # `written` of a variant that could not be read or written

TargetRead = tuple[Target, Profile | None] | InputError  # the profile read again, or why not


# -- effects: what the loop does, in order -------------------------------------------------------
@dataclass(frozen=True)
class Log:
    level: str  # info | warning | error
    message: str


@dataclass(frozen=True)
class FullSync:
    """Plan every entry of the folder again."""

    reason: str


@dataclass(frozen=True)
class SyncEntries:
    """Plan these entries again (one Project: shared includes are parsed once); entry -> why."""

    reasons: Mapping[str, str]


@dataclass(frozen=True)
class Rediscover:
    """Look for entry files in the folder, then call `on_discovered` with what was found."""

    entries: frozenset[str]  # entries to re-derive already
    changed: frozenset[str]


@dataclass(frozen=True)
class Rewatch:
    force: frozenset[str] = frozenset()  # folders whose watch must be made again (new inode)


@dataclass(frozen=True)
class SaveState:
    pass


@dataclass(frozen=True)
class Settle:
    """After a sync: forget hashes of files no longer read, rewatch, save the state file."""


Effect = Log | FullSync | SyncEntries | Rediscover | Rewatch | SaveState | Settle


# -- observations: what the loop saw -------------------------------------------------------------
@dataclass(frozen=True)
class Events:
    """A batch from the watcher, with what the loop observed about it."""

    paths: frozenset[str] = frozenset()
    structural: bool = False  # the set of files changed: one appeared or vanished for good
    full: str | None = None  # why everything must be re-checked
    folder_present: bool = True
    variants: Mapping[str, str | None] = field(default_factory=dict)  # owned variants: text now
    target: TargetRead | None = None  # the profile read again, when `needs_target` said so


@dataclass(frozen=True)
class Synced:
    """What the loop saw beside a sync's report."""

    report: EntryReport
    reason: str
    variant_exists: bool = False  # for an entry that failed: is its variant file there?
    disk: Mapping[str, str | None] = field(default_factory=dict)  # hand-edited: text on disk
