"""The daemon's loop: sync everything at start, then re-derive exactly what each change needs.

This is the I/O shell around `reconciler.py`: it sleeps in select() until an event, a signal, a
watchdog ping or the periodic re-check is due, observes the disk, hands the observations to the
reconciler, and executes the effects it gets back (plan and write through the sync service, log,
rewatch, save the state file). Threads: watchdog's observer only files events into the Inbox;
everything else runs on the main thread.

Never import pyinfra or pyinfra_cli here (even indirectly): its gevent monkey-patching breaks
watchdog's observer threads.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from carla_launcher.compose.discover import find_entries
from carla_launcher.compose.project import Project
from carla_launcher.compose.service import (
    EntryReport,
    Mode,
    VariantState,
    plan_folder,
    sync_result,
)
from carla_launcher.compose.sync import plan_entry
from carla_launcher.daemon.effects import (
    STATE,
    Effect,
    Events,
    FullSync,
    Rediscover,
    Rewatch,
    SaveState,
    Settle,
    Synced,
    SyncEntries,
    TargetRead,
)
from carla_launcher.daemon.effects import Log as LogLine
from carla_launcher.daemon.fingerprint import digest_of, drifted, hashes, read_text, yaml_names
from carla_launcher.daemon.lock import FolderLock
from carla_launcher.daemon.log import Log
from carla_launcher.daemon.notify import sd_notify, watchdog_interval
from carla_launcher.daemon.reconciler import Reconciler
from carla_launcher.daemon.status import STATE_VERSION, lock_path, state_name
from carla_launcher.daemon.watch import (
    COMPOSE_SUFFIXES,
    EVENT_FILTER,
    Batch,
    Handler,
    Inbox,
    Interest,
    WatchdogLogHook,
    norm,
)
from carla_launcher.errors import InputError, display_path
from carla_launcher.fsutil import remove_stale_temps, temp_names
from carla_launcher.records import servers_file
from carla_launcher.state import write_json
from carla_launcher.targeting import resolve_target


@dataclass
class Options:
    folder: Path
    address: str | None = None
    profile: str | None = None
    port: int | None = None
    simulator: str | None = None
    debounce: float = 0.05  # trailing edge: p95 save-to-variant stays under 100 ms
    max_wait: float = 1.0  # a batch is processed at the latest this long after its first event
    recheck: float = 300.0  # content-hash check of every input, for events the kernel lost


def _create_time() -> float | None:
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - status then falls back to the pid alone
        return None


class Daemon:
    """Signals, watches, the select() loop and the disk; the decisions are the reconciler's."""

    def __init__(self, opts: Options, log: Log | None = None) -> None:
        self.opts = opts
        self.log = log or Log()
        self.folder = norm(opts.folder)
        self.inbox = Inbox(opts.debounce, opts.max_wait)
        self.handler = Handler(self.inbox, Interest(self.folder))
        self.observer = Observer()
        self.lock = FolderLock(lock_path(self.folder), Path(self.folder))
        self.watches: dict[str, tuple[ObservedWatch, tuple[int, int]]] = {}
        # what planning read, as content hashes: the periodic re-check compares the disk with it
        self.seen: dict[str, str] = {}  # input file -> hash of the bytes the last plan used
        self.listing: frozenset[str] = frozenset()  # YAML names in the folder at the last look
        self.started = time.time()
        self.pid_started = _create_time()  # with the pid, tells `status` it is still us
        self.failures = 0  # internal errors in a row
        self.hook: WatchdogLogHook | None = None
        self.last_sync: float | None = None
        self.ready = False
        # what the loop did, in the state file: batches handled, folder rediscoveries (a file
        # appeared or vanished), full syncs, entries derived again after a batch
        self.work = {"batches": 0, "rediscoveries": 0, "full_syncs": 0, "derived": 0}
        self.stop_signal: int | None = None
        self.reload_requested = False
        target, profile = resolve_target(opts.address, opts.profile, opts.port, opts.simulator)
        self.rec = Reconciler(
            self.folder,
            target,
            profile,
            address_given=opts.address is not None,
            state_file=str(servers_file()),
        )

    # -- lifecycle --------------------------------------------------------------------------------
    def run(self) -> int:
        """Until SIGTERM/SIGINT; returns the exit code. Raises AlreadyRunning first."""
        if not Path(self.folder).is_dir():
            raise InputError(self.folder, None, "no such folder", "--dir")
        self.lock.acquire()
        try:
            self._install_signals()
            self.hook = WatchdogLogHook.install(self.inbox, self.log.warning)
            self.observer.start()
            # watch first: nothing that changes between the first sync and the watch is lost
            self._rewatch()
            self._do([FullSync("start")])
            self.ready = True
            self._do([Settle()])
            self.log.info(self.rec.summary("watching"))
            sd_notify("READY=1", f"STATUS={self.rec.summary('watching')}")
            self._loop()
            return 0
        finally:
            sd_notify("STOPPING=1")
            self._shutdown()

    def _install_signals(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            self.stop_signal = signum

        def reload(_signum: int, _frame: Any) -> None:
            self.reload_requested = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)
        # a signal writes a byte to the inbox's pipe, so select() wakes up at once
        signal.set_wakeup_fd(self.inbox.wake_fd, warn_on_full_buffer=False)

    def _loop(self) -> None:
        ping = watchdog_interval()
        next_ping = time.monotonic() + ping if ping else None
        next_recheck = time.monotonic() + self.opts.recheck
        while self.stop_signal is None:
            now = time.monotonic()
            waits = [next_recheck - now, self.inbox.due_in()]
            if next_ping is not None:
                waits.append(next_ping - now)
            timeout = max(0.0, min(w for w in waits if w is not None))
            with contextlib.suppress(InterruptedError):
                select.select([self.inbox], [], [], timeout)
            self.inbox.drain()
            if self.stop_signal is not None:
                break
            if self.reload_requested:
                self.reload_requested = False
                self._guard(self.reload)
            batch = self.inbox.take()
            if batch is not None:
                self._guard(self.handle, batch)
            now = time.monotonic()
            if next_ping is not None and ping and now >= next_ping:
                sd_notify("WATCHDOG=1")
                next_ping = now + ping
            if now >= next_recheck:
                self._guard(self.recheck)
                next_recheck = time.monotonic() + self.opts.recheck
        name = signal.Signals(self.stop_signal).name if self.stop_signal else "signal"
        self.log.info(f"stopping ({name})")

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        """A bug in one batch must not end the daemon: log it, and re-check everything soon."""
        try:
            fn(*args)
            self.failures = 0
        except Exception as e:  # noqa: BLE001
            self.failures += 1
            retry = self.failures <= 3  # no tight loop when the resync itself keeps failing
            self.log.error(
                f"internal: {type(e).__name__}: {e}"
                + (" (retrying with a full resync)" if retry else " (waiting for the next change)")
            )
            if retry:
                self.inbox.request_full("after an internal error")

    def _shutdown(self) -> None:
        if self.hook is not None:
            self.hook.uninstall()
        with contextlib.suppress(Exception):  # best effort on the way out
            self.observer.stop()
            self.observer.join(timeout=5)
        with contextlib.suppress(Exception):
            self._save_state(stopped=True)
        signal.set_wakeup_fd(-1)
        self.lock.release()
        self.inbox.close()

    # -- observing: what the reconciler is told ---------------------------------------------------
    def handle(self, batch: Batch) -> None:
        self.work["batches"] += 1
        present = Path(self.folder).is_dir()
        events = Events(
            batch.paths,
            batch.structural and self._set_changed(batch.paths),
            batch.full,
            present,
            {v: read_text(v) for v in self.rec.owned(batch.paths)},
            self._read_target() if self.rec.needs_target(batch.paths, present) else None,
        )
        self._do(self.rec.on_batch(events))

    def reload(self) -> None:
        """SIGHUP: read the profile again, rediscover and re-check everything."""
        sd_notify("RELOADING=1")
        self._do(self.rec.on_reload(self._read_target()))
        self.log.info(self.rec.summary("reloaded"))
        sd_notify("READY=1", f"STATUS={self.rec.summary('watching')}")

    def recheck(self) -> None:
        """Periodic: compare a hash of every input with the last one; resync on a difference."""
        present = Path(self.folder).is_dir()
        moved = present != self.rec.folder_present
        target = self._read_target() if present or moved else None
        changed = (
            present
            and not moved
            and drifted(self.folder, self.listing, self.seen, self.rec.written)
        )
        self._do(self.rec.on_recheck(present, target, changed))

    def _read_target(self) -> TargetRead:
        o = self.opts
        try:
            return resolve_target(o.address, o.profile, o.port, o.simulator)
        except InputError as e:
            return e

    # -- executing effects ------------------------------------------------------------------------
    def _do(self, effects: Iterable[Effect]) -> None:
        for e in effects:
            if isinstance(e, LogLine):
                {"info": self.log.info, "warning": self.log.warning, "error": self.log.error}[
                    e.level
                ](e.message)
            elif isinstance(e, FullSync):
                self.full_sync(e.reason)
            elif isinstance(e, SyncEntries):
                self.sync_entries(e.reasons)
            elif isinstance(e, Rediscover):
                self._do(self.rec.on_discovered(self._discover(), e.entries, e.changed))
            elif isinstance(e, Rewatch):
                self._rewatch(e.force)
            elif isinstance(e, SaveState):
                self._save_state()
            elif isinstance(e, Settle):
                inputs = self.rec.inputs()
                self.seen = {p: h for p, h in self.seen.items() if p in inputs}
                self._rewatch()
                self._save_state()

    def _set_changed(self, paths: Iterable[str]) -> bool:
        """Did the set of files change, or only their contents? An atomic save (a temp file
        renamed onto a known name: editors, and our own variant writes), vim's backup dance or
        JetBrains' safe write leave the same names behind: no rediscovery for those. Looks at
        the batch's paths only (one lstat each), never at the whole folder."""
        for p in paths:  # files elsewhere are inputs: their readers are re-derived
            head, name = os.path.split(p)
            in_folder = head == self.folder and name.endswith(COMPOSE_SUFFIXES)
            if in_folder and os.path.lexists(p) != (name in self.listing):
                return True
        return False

    def _discover(self) -> set[str] | None:
        self.work["rediscoveries"] += 1
        try:
            self.listing = yaml_names(self.folder)
            return {norm(p) for p in find_entries(Path(self.folder))}
        except OSError:
            return None

    def full_sync(self, reason: str) -> None:
        """Plan every entry of the folder (start, reload, lost events, new address)."""
        if not Path(self.folder).is_dir():
            self._do(self.rec.on_folder(False, None))
            return
        self.work["full_syncs"] += 1
        pre = hashes(self.rec.inputs())
        self.seen = {}
        self.listing = yaml_names(self.folder)
        try:  # entries whose variants' keys still match are taken from the disk, unparsed
            results = plan_folder(Path(self.folder), self.rec.target, refuse=False)
        except OSError:
            results = []
        self._do(self.rec.on_folder_planned(results))
        for r in results:
            self._record(sync_result(r, Mode.WRITE, clean=False), reason, pre)
        listed: dict[Path, list[str]] = {}  # one listing per folder, not one per variant
        for variant in sorted(self.rec.owner):  # temp files a killed writer left beside ours
            path = Path(variant)
            if path.parent not in listed:
                listed[path.parent] = temp_names(path.parent)
            for p in remove_stale_temps(path, listed[path.parent]):
                self.log.info(f"removed {display_path(p)} (left by an interrupted write)")
        self.last_sync = time.time()

    def sync_entries(self, reasons: Mapping[str, str]) -> None:
        """Re-plan only these entries (one Project: shared includes are parsed once)."""
        self.work["derived"] += len(reasons)
        project = Project()
        pre = hashes(set().union(*(self.rec.graph.get(e, frozenset()) for e in reasons)))
        for entry, reason in reasons.items():
            planned = plan_entry(project, Path(entry), self.rec.target)
            self._record(sync_result(planned, Mode.WRITE, clean=False), reason, pre)
        self.last_sync = time.time()

    def _record(self, report: EntryReport, reason: str, pre: dict[str, str]) -> None:
        entry = norm(report.entry)
        disk = {
            norm(v.path): read_text(norm(v.path))
            for v in report.variants
            if v.state is VariantState.HAND_EDITED
        }
        exists = report.error is not None and os.path.exists(self.rec.failed_variant(entry))  # noqa: PTH110
        self._do(self.rec.on_synced(Synced(report, reason, exists, disk)))
        for p in self.rec.graph[entry]:
            self.seen[p] = pre.get(p) or digest_of(p)

    # -- watches, fingerprint, state --------------------------------------------------------------
    def _rewatch(self, force: Iterable[str] = ()) -> None:
        """Watch every folder that holds an input, the folder itself and its parent (to see it
        renamed or deleted), and the profile's folder. A folder whose inode changed (deleted and
        made again) needs a new watch: the old one died with the old inode."""
        files = self.rec.watched_files()
        dirs = {os.path.dirname(self.folder)} | {os.path.dirname(f) for f in files}  # noqa: PTH120
        if self.rec.folder_present:
            dirs.add(self.folder)
        want: dict[str, tuple[int, int]] = {}
        for d in dirs:
            try:
                st = Path(d).stat()
            except OSError:
                continue
            want[d] = (st.st_dev, st.st_ino)
        force = set(force)
        for d, (watch, ident) in list(self.watches.items()):
            if d not in want or want[d] != ident or d in force:
                # its emitter may have stopped already, with its folder
                with contextlib.suppress(Exception):
                    self.observer.unschedule(watch)
                del self.watches[d]
        for d, ident in want.items():
            if d not in self.watches:
                try:
                    watch = self.observer.schedule(
                        self.handler, d, follow_symlink=True, event_filter=EVENT_FILTER
                    )
                    self.watches[d] = (watch, ident)
                except OSError as e:
                    self.log.error(f"cannot watch {display_path(d)}: {e.strerror or e}")
        self.handler.interest = Interest(self.folder, frozenset(files))

    def _save_state(self, stopped: bool = False) -> None:
        t, profile = self.rec.target, self.rec.profile
        data: dict[str, Any] = {
            "version": STATE_VERSION,
            "folder": self.folder,
            "pid": None if stopped else os.getpid(),
            "pid_started": self.pid_started,
            "started": self.started,
            "stopped": time.time() if stopped else None,
            "ready": self.ready,
            "address": t.address,  # null in the env address mode
            "port": t.port,
            "simulator": t.simulator,
            "profile": str(profile.path) if profile else None,
            "last_sync": self.last_sync,
            "work": dict(self.work),
            **self.rec.state(),
        }
        try:
            write_json(state_name(self.folder), data)
        except OSError as e:
            self.rec.error(STATE, f"cannot write the state file: {e.strerror or e}")
            self._do(self.rec.take_log())
