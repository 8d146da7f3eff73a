"""The daemon's decisions, with no I/O: which entries to re-derive after a batch of changes, and
what the outcome of a sync means (owners, variant states, errors, what to log).

The loop (`service.py`) observes the disk, hands the observations in (`Events`, `Synced`), and
executes the effects that come back in order. Everything here is a function of its inputs and
the state it keeps, so the tests feed batches in-process and look at the effects.

The graph maps each entry to every file it reads, and its inverse index each file to the entries
that read it, so a change re-derives only the entries that read the changed file, at a cost that
does not grow with the folder. Rediscovery (`Rediscover`) is for a batch in which the set of files
changed (a create, a delete, a rename to a new name): the loop tells (`Events.structural`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from carla_launcher.compose.discover import variant_name
from carla_launcher.compose.service import (
    VariantReport,
    VariantState,
    hand_edited_message,
)
from carla_launcher.compose.sync import Result, Target, folder_problem
from carla_launcher.daemon.effects import (
    FOLDER,
    PROFILE,
    UNREADABLE,
    Effect,
    Events,
    FullSync,
    Log,
    Rediscover,
    Rewatch,
    SaveState,
    Settle,
    Synced,
    SyncEntries,
    TargetRead,
)
from carla_launcher.daemon.watch import norm
from carla_launcher.errors import InputError, display_path
from carla_launcher.profile import Profile


def affected(graph: Mapping[str, frozenset[str]], changed: Iterable[str]) -> set[str]:
    """The entries that read any of the changed files."""
    changed = set(changed)
    return {entry for entry, inputs in graph.items() if inputs & changed}


def because(paths: Iterable[str], folder: str) -> str:
    """`agent_service.yaml changed`: names inside the folder short, others as the user sees them."""
    names = []
    for p in sorted(set(paths)):
        head, name = os.path.split(p)
        names.append(name if head == folder else display_path(p))
    if not names:
        return "changed"
    if len(names) > 3:
        names = [*names[:3], f"{len(names) - 3} more"]
    return ", ".join(names) + " changed"


def where(target: Target) -> str:
    """The address as a log line says it: the env address mode has none of its own."""
    return target.address or "from CARLA_LAUNCH_HOST (env address mode)"


class Reconciler:
    """The graph of entries and the files they read, who owns which variant, and its state."""

    def __init__(
        self,
        folder: str,
        target: Target,
        profile: Profile | None,
        address_given: bool = False,
        state_file: str | None = None,
    ) -> None:
        self.folder = folder
        self.target, self.profile = target, profile
        self.address_given = address_given  # --address: a recorded address cannot change the target
        self.state_file = state_file  # known-servers.json: a recorded address may change
        self.graph: dict[str, frozenset[str]] = {}  # entry -> every file it reads
        self.readers: dict[str, set[str]] = {}  # file -> the entries that read it (the inverse)
        self.owner: dict[str, str] = {}  # variant -> entry
        self.written: dict[str, str | None] = {}  # variant -> its content as we left it
        self.vstate: dict[str, VariantState] = {}  # variant -> current | hand-edited
        self.errors: dict[str, str] = {}  # entry (or FOLDER/PROFILE) -> message
        self.warned: set[tuple[str, str]] = set()
        self.folder_present = True
        self.syncs = 0  # variants written since start
        self._out: list[Effect] = []

    # -- queries (the loop asks before it observes) -----------------------------------------------
    def inputs(self) -> set[str]:
        return set(self.readers)

    def is_input(self, path: str) -> bool:
        return path in self.readers

    def readers_of(self, changed: Iterable[str]) -> set[str]:
        """The entries that read any of the changed files (`affected`, through the index)."""
        out: set[str] = set()
        for p in changed:
            out |= self.readers.get(p, set())
        return out

    def target_files(self) -> set[str]:
        """Files whose change may change the address: the profile, and discovered addresses."""
        if self.profile is None:
            return set()
        files = {norm(self.profile.path)}
        if not self.address_given and not self.profile.remote.address and self.state_file:
            files.add(norm(self.state_file))
        return files

    def watched_files(self) -> set[str]:
        return self.target_files() | self.inputs() | set(self.owner)

    def owned(self, paths: Iterable[str]) -> set[str]:
        return set(paths) & set(self.owner)

    def needs_target(self, paths: Iterable[str], present: bool) -> bool:
        """Must the loop read the profile again for this batch?"""
        paths = set(paths)
        moved = self.folder in paths or present != self.folder_present
        return moved or bool(paths & self.target_files())

    def current(self) -> int:
        return sum(1 for s in self.vstate.values() if s is VariantState.CURRENT)

    def summary(self, verb: str) -> str:
        errs = f", {len(self.errors)} with errors" if self.errors else ""
        return (
            f"{verb} {display_path(self.folder)}: {self.current()} of {len(self.vstate)} "
            f"variants current{errs}, address {where(self.target)}"
        )

    def state(self) -> dict[str, object]:
        """The reconciler's part of the state file."""
        return {
            "syncs": self.syncs,
            "folder_present": self.folder_present,
            "variants": {
                p: {"source": self.owner.get(p), "state": str(s)}
                for p, s in sorted(self.vstate.items())
            },
            "errors": [self.errors[k] for k in sorted(self.errors)],
        }

    # -- a batch of changes -----------------------------------------------------------------------
    def on_batch(self, ev: Events) -> list[Effect]:
        """What to do about a batch: nothing, a full sync, or re-deriving some entries."""
        if ev.full:
            self._log("warning", f"{ev.full}: full resync")
            return self._flush(FullSync(ev.full), Settle())
        changed = set(ev.paths)
        if self.folder in changed or ev.folder_present != self.folder_present:
            return self.on_folder(ev.folder_present, ev.target)
        if not ev.folder_present:
            return self._flush()
        if FOLDER in self.errors:  # e.g. the first compose file appeared
            return self._flush(FullSync(because(changed, self.folder)), Settle())
        targets = self.target_files()
        if changed & targets and ev.target is not None and self._retarget(ev.target):
            return self._flush(FullSync(f"address now {where(self.target)}"), Settle())
        sources = {p for p in changed - targets if p not in self.owner}
        entries = self.readers_of(sources)
        for variant in (p for p in changed if p in self.owner):
            if ev.variants.get(variant) != self.written.get(variant):
                entries.add(self.owner[variant])  # deleted or edited: the plan says what to do
        # a YAML file in the folder that no entry reads may have become an entry
        if ev.structural or any(not self.is_input(p) for p in sources):
            return self._flush(Rediscover(frozenset(entries), frozenset(changed)))
        return self._sync({e for e in entries if e in self.graph}, set(), changed, regraphed=False)

    def on_discovered(
        self, found: set[str] | None, entries: Iterable[str], changed: Iterable[str]
    ) -> list[Effect]:
        """The entry files now in the folder (None: it could not be listed). Entries that
        vanished are forgotten (their variants kept); new ones are derived."""
        before = set(self.graph)
        new: set[str] = set()
        if found is not None:
            for gone in sorted(set(self.graph) - found):
                self._log(
                    "info", f"no longer a compose entry: {display_path(gone)} (its variant is kept)"
                )
                self.forget(gone)
            new = found - set(self.graph)
        todo = (set(entries) | new) & (set(self.graph) | new)
        return self._sync(todo, new, set(changed), regraphed=bool(new) or set(self.graph) != before)

    def _sync(
        self, entries: set[str], new: set[str], changed: set[str], regraphed: bool
    ) -> list[Effect]:
        effects: list[Effect] = []
        if entries:
            effects.append(SyncEntries({e: self._reason(e, new, changed) for e in sorted(entries)}))
        if entries or regraphed:  # the echo of our own writes costs a read, nothing more
            effects.append(Settle())
        return self._flush(*effects)

    def _reason(self, entry: str, new: set[str], changed: set[str]) -> str:
        old_inputs = self.graph.get(entry, frozenset())
        if entry in new:
            return "new file"
        if old_inputs & changed:
            return because(old_inputs & changed, self.folder)
        return "the variant was changed or deleted"

    def _set_inputs(self, entry: str, inputs: frozenset[str]) -> None:
        for p in self.graph.get(entry, frozenset()) - inputs:
            users = self.readers.get(p)
            if users is not None:
                users.discard(entry)
                if not users:
                    del self.readers[p]
        for p in inputs:
            self.readers.setdefault(p, set()).add(entry)
        self.graph[entry] = inputs

    def forget(self, entry: str) -> None:
        self._set_inputs(entry, frozenset())
        self.graph.pop(entry, None)
        self.errors.pop(entry, None)
        for v in [v for v, e in self.owner.items() if e == entry]:
            del self.owner[v]
            self.written.pop(v, None)
            self.vstate.pop(v, None)

    # -- the folder, the address ------------------------------------------------------------------
    def on_folder(self, present: bool, target: TargetRead | None) -> list[Effect]:
        """The watched folder was renamed away, deleted, or came back: keep running and wait."""
        was = self.folder_present
        self.folder_present = present
        if not present:
            if was:
                self._log(
                    "warning",
                    f"folder {display_path(self.folder)} is gone (renamed or deleted); "
                    "variants are kept, waiting for it to come back",
                )
                self.errors[FOLDER] = f"{display_path(self.folder)}: folder is gone"
            return self._flush(Rewatch(), SaveState())
        self._out.append(Rewatch(frozenset({self.folder})))  # a new inode needs a new watch
        self.errors.pop(FOLDER, None)
        if not was:
            self._log("info", f"folder {display_path(self.folder)} is back")
        if target is not None:
            self._retarget(target)  # profile events were ignored while the folder was away
        return self._flush(FullSync("folder is back" if not was else "folder replaced"), Settle())

    def on_reload(self, target: TargetRead) -> list[Effect]:
        """SIGHUP: the profile read again; rediscover and re-check everything."""
        self._retarget(target)
        return self._flush(FullSync("reload"), Settle())

    def on_recheck(self, present: bool, target: TargetRead | None, drifted: bool) -> list[Effect]:
        """Periodic: resync only when the folder, the address or a file's hash changed."""
        if present != self.folder_present:
            return self.on_folder(present, target)
        if present and target is not None and self._retarget(target):
            return self._flush(FullSync(f"address now {where(self.target)}"), Settle())
        if present and drifted:
            self._log("warning", "re-check found changes the watcher missed: full resync")
            return self._flush(FullSync("re-check"), Settle())
        return self._flush(Rewatch())

    def _retarget(self, read: TargetRead) -> bool:
        """Take the profile read again; True when the target changed (re-derive everything)."""
        if isinstance(read, InputError):
            self.error(PROFILE, f"{read} (keeping address {where(self.target)})")
            return False
        target, profile = read
        self.clear_error(PROFILE, display_path(profile.path) if profile else "profile")
        self.profile = profile
        if target == self.target:
            return False
        old, self.target = self.target, target
        port = f", port {old.port} -> {target.port}" if old.port != target.port else ""
        self._log("info", f"target changed: address {where(old)} -> {where(target)}{port}")
        return True

    # -- what a sync did --------------------------------------------------------------------------
    def on_folder_planned(self, results: list[Result]) -> list[Effect]:
        """A full sync planned every entry: the folder's own problem, and entries that are gone."""
        problem = folder_problem(Path(self.folder), results)  # worded as `sync` words it
        if problem is not None:
            self.error(FOLDER, f"{problem} (waiting for changes)")
        else:
            self.clear_error(FOLDER, display_path(self.folder))
        found = {norm(r.entry) for r in results}
        for gone in set(self.graph) - found:
            self.forget(gone)
        return self._flush()

    def on_synced(self, s: Synced) -> list[Effect]:
        """Record one entry's sync: its inputs, its variants' owners and states, its problems."""
        r = s.report
        entry = norm(r.entry)
        self._set_inputs(entry, frozenset(norm(p) for p in r.result.inputs))
        if r.error is not None:
            kept = any(e == entry for e in self.owner.values()) or s.variant_exists
            keeping = "keeping the last good variant" if kept else "no variant until it is fixed"
            self.error(entry, f"{r.error} ({keeping})")
            return self._flush()
        for w in r.result.warnings:
            if (entry, w) not in self.warned:
                self.warned.add((entry, w))
                self._log("warning", f"{display_path(entry)}: {w}")
        problems = [p for p in (self._variant(v, entry, s) for v in r.variants) if p]
        if problems:
            self.error(entry, "; ".join(problems))
        else:
            self.clear_error(entry, display_path(entry))
        return self._flush()

    def _variant(self, v: VariantReport, entry: str, s: Synced) -> str | None:
        """Record one variant (never written over a hand edit); the problem, if any."""
        path = norm(v.path)
        self.owner[path] = entry
        if v.error is not None or v.state is None:
            self.vstate.pop(path, None)
            self.written[path] = UNREADABLE  # whatever comes next in its place re-plans it
            return str(v.error)
        if v.state is VariantState.WRITTEN:
            self.syncs += 1
            self._log("info", f"synced {display_path(path)} ({s.reason})")
        if v.state in (VariantState.WRITTEN, VariantState.CURRENT):
            self.written[path] = v.variant.content
            self.vstate[path] = VariantState.CURRENT
        elif v.state is VariantState.HAND_EDITED:
            if self.vstate.get(path) is not VariantState.HAND_EDITED:
                self._log("warning", hand_edited_message(path, v.variant.source))
            self.written[path] = s.disk.get(path)  # a later edit or delete re-plans it
            self.vstate[path] = VariantState.HAND_EDITED
        return None

    def failed_variant(self, entry: str) -> str:
        """The variant file an entry would have (for `Synced.variant_exists`)."""
        path = Path(entry)
        return str(path.with_name(variant_name(path.name)))

    # -- errors and the log -----------------------------------------------------------------------
    def error(self, key: str, message: str) -> None:
        if self.errors.get(key) != message:
            self._log("error", message)
        self.errors[key] = message

    def clear_error(self, key: str, name: str) -> None:
        if self.errors.pop(key, None) is not None:
            self._log("info", f"recovered: {name}")

    def _log(self, level: str, message: str) -> None:
        self._out.append(Log(level, message))

    def take_log(self) -> list[Effect]:
        """Effects left by `error`/`clear_error` called outside a batch (the loop's own errors)."""
        return self._flush()

    def _flush(self, *more: Effect) -> list[Effect]:
        out, self._out = [*self._out, *more], []
        return out
