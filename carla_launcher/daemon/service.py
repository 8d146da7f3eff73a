"""The daemon's loop: sync everything at start, then re-derive exactly what each change needs.

Threads: watchdog's observer only files events into the Inbox; everything else (planning,
writing, logging, the state file, systemd pings) runs on the main thread, which sleeps in
select() until an event, a signal, a watchdog ping or the periodic re-check is due.

Never import pyinfra or pyinfra_cli here (even indirectly): its gevent monkey-patching breaks
watchdog's observer threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from carla_launcher.compose.discover import find_entries, variant_name
from carla_launcher.compose.project import Project
from carla_launcher.compose.sync import (
    Result,
    Target,
    Variant,
    apply,
    compare,
    folder_problem,
    plan_entry,
)
from carla_launcher.daemon.lock import FolderLock
from carla_launcher.daemon.log import Log
from carla_launcher.daemon.notify import sd_notify, watchdog_interval
from carla_launcher.daemon.status import STATE_VERSION, lock_path, state_name
from carla_launcher.daemon.watch import Batch, Handler, Inbox, Interest, WatchdogLogHook, norm
from carla_launcher.errors import InputError, display_path
from carla_launcher.fsutil import read_regular, remove_stale_temps
from carla_launcher.profile import Profile
from carla_launcher.state import state_dir, write_json
from carla_launcher.targeting import resolve_target

FOLDER = "<folder>"  # keys of self.errors that are not entry files
PROFILE = "<profile>"
UNREADABLE = "\0unreadable"  # self.written of a variant that could not be read or written


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


def affected(graph: dict[str, frozenset[str]], changed: Iterable[str]) -> set[str]:
    """The entries that read any of the changed files (pure)."""
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
        names = names[:3] + [f"{len(names) - 3} more"]
    return ", ".join(names) + " changed"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _create_time() -> float | None:
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - status then falls back to the pid alone
        return None


class Daemon:
    def __init__(self, opts: Options, log: Log | None = None) -> None:
        self.opts = opts
        self.log = log or Log()
        self.folder = norm(opts.folder)
        self.inbox = Inbox(opts.debounce, opts.max_wait)
        self.handler = Handler(self.inbox, Interest(self.folder))
        self.observer = Observer()
        self.lock = FolderLock(lock_path(self.folder), Path(self.folder))
        self.watches: dict[str, tuple[ObservedWatch, tuple[int, int]]] = {}
        self.graph: dict[str, frozenset[str]] = {}  # entry -> every file it reads
        self.owner: dict[str, str] = {}  # variant -> entry
        self.written: dict[str, str | None] = {}  # variant -> its content as we left it
        self.vstate: dict[str, str] = {}  # variant -> current | hand-edited
        self.errors: dict[str, str] = {}  # entry (or FOLDER/PROFILE) -> message
        self.warned: set[tuple[str, str]] = set()
        self.folder_present = True
        # what planning read, as content hashes: the periodic re-check compares the disk with it
        self.seen: dict[str, str] = {}  # input file -> hash of the bytes the last plan used
        self.listing: frozenset[str] = frozenset()  # YAML names in the folder at the last look
        self.started = time.time()
        self.pid_started = _create_time()  # with the pid, tells `status` it is still us
        self.failures = 0  # internal errors in a row
        self.hook: WatchdogLogHook | None = None
        self.last_sync: float | None = None
        self.syncs = 0
        self.ready = False
        self.stop_signal: int | None = None
        self.reload_requested = False
        target, profile = resolve_target(opts.address, opts.profile, opts.port, opts.simulator)
        self.target: Target = target
        self.profile: Profile | None = profile

    # -- lifecycle ------------------------------------------------------------------------------
    def run(self) -> int:
        """Until SIGTERM/SIGINT; returns the exit code. Raises AlreadyRunning before doing anything."""
        if not os.path.isdir(self.folder):
            raise InputError(self.folder, None, "no such folder", "--dir")
        self.lock.acquire()
        try:
            self._install_signals()
            self.hook = WatchdogLogHook.install(self.inbox, self.log.warning)
            self.observer.start()
            self._rewatch()  # watch first: nothing changed between the first sync and the watch is lost
            self.full_sync("start")
            self.ready = True
            self._after()
            self.log.info(self._summary("watching"))
            sd_notify("READY=1", f"STATUS={self._summary('watching')}")
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
            try:
                select.select([self.inbox], [], [], timeout)
            except InterruptedError:
                pass
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

    def _guard(self, fn: Any, *args: Any) -> None:
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

    # -- what to do about a batch ----------------------------------------------------------------
    def handle(self, batch: Batch) -> None:
        if batch.full:
            self.log.warning(f"{batch.full}: full resync")
            self.full_sync(batch.full)
            self._after()
            return
        changed = set(batch.paths)
        present = os.path.isdir(self.folder)
        if self.folder in changed or present != self.folder_present:
            self._folder_moved(present)
            return
        if not present:
            return
        if FOLDER in self.errors:
            self.full_sync(because(changed, self.folder))  # e.g. the first compose file appeared
            self._after()
            return
        if changed & self._target_files() and self.reload_target():
            self.full_sync(f"address now {_where(self.target)}")
            self._after()
            return
        sources = changed - set(self.owner) - self._target_files()
        entries = affected(self.graph, sources)
        for variant in changed & set(self.owner):
            if self._read(variant) != self.written.get(variant):
                entries.add(self.owner[variant])  # deleted or edited: the plan says what to do
        known = set().union(*self.graph.values()) if self.graph else set()
        new: set[str] = set()
        regraphed = False
        if batch.structural or sources - known:
            before = set(self.graph)
            new = self._rediscover()
            entries |= new
            regraphed = bool(new) or set(self.graph) != before
        entries &= set(self.graph) | new
        if entries:
            self.sync_entries(entries, changed, new)
        if entries or regraphed:  # the echo of our own writes costs a read, nothing more
            self._after()

    def _rediscover(self) -> set[str]:
        """New entry files in the folder; entries that vanished are forgotten (their variants kept)."""
        try:
            self.listing = self._listing()
            found = {norm(p) for p in find_entries(Path(self.folder))}
        except OSError:
            return set()
        for gone in set(self.graph) - found:
            self.log.info(f"no longer a compose entry: {display_path(gone)} (its variant is kept)")
            self._forget(gone)
        return found - set(self.graph)

    def _forget(self, entry: str) -> None:
        self.graph.pop(entry, None)
        self.errors.pop(entry, None)
        for v in [v for v, e in self.owner.items() if e == entry]:
            del self.owner[v]
            self.written.pop(v, None)
            self.vstate.pop(v, None)

    def _folder_moved(self, present: bool) -> None:
        """The watched folder was renamed away, deleted, or came back: we keep running and wait."""
        was = self.folder_present
        self.folder_present = present
        if not present:
            if was:
                self.log.warning(
                    f"folder {display_path(self.folder)} is gone (renamed or deleted); "
                    "variants are kept, waiting for it to come back"
                )
                self.errors[FOLDER] = f"{display_path(self.folder)}: folder is gone"
            self._rewatch()
            self._save_state()
            return
        self._rewatch(force={self.folder})  # a new inode needs a new inotify watch
        self.errors.pop(FOLDER, None)
        if not was:
            self.log.info(f"folder {display_path(self.folder)} is back")
        self.reload_target()  # profile events were ignored while the folder was away
        self.full_sync("folder is back" if not was else "folder replaced")
        self._after()

    # -- planning and writing -------------------------------------------------------------------
    def full_sync(self, reason: str) -> None:
        """Plan every entry of the folder (start, reload, lost events, new address)."""
        if not os.path.isdir(self.folder):
            self._folder_moved(False)
            return
        project = Project()
        pre = self._hashes(set().union(*self.graph.values()) if self.graph else set())
        self.seen = {}
        self.listing = self._listing()
        try:
            entries = find_entries(Path(self.folder))
        except OSError:
            entries = []
        results = [plan_entry(project, p, self.target) for p in entries]
        problem = folder_problem(Path(self.folder), results)  # worded as `sync` words it
        if problem is not None:
            self._error(FOLDER, f"{problem} (waiting for changes)")
        else:
            self._clear_error(FOLDER, display_path(self.folder))
        found = {norm(r.entry) for r in results}
        for gone in set(self.graph) - found:
            self._forget(gone)
        for r in results:
            self._record(r, reason, pre)
        self._clean_temps()
        self.last_sync = time.time()

    def sync_entries(self, entries: set[str], changed: set[str], new: set[str]) -> None:
        """Re-plan only these entries (one Project: shared includes are parsed once)."""
        project = Project()
        pre = self._hashes(set().union(*(self.graph.get(e, frozenset()) for e in entries)))
        for entry in sorted(entries):
            old_inputs = self.graph.get(entry, frozenset())
            if entry in new:
                reason = "new file"
            elif old_inputs & changed:
                reason = because(old_inputs & changed, self.folder)
            else:
                reason = "the variant was changed or deleted"
            self._record(plan_entry(project, Path(entry), self.target), reason, pre)
        self.last_sync = time.time()

    def _record(self, r: Result, reason: str, pre: dict[str, str]) -> None:
        entry = norm(r.entry)
        self.graph[entry] = frozenset(norm(p) for p in r.inputs)
        for p in self.graph[entry]:
            self.seen[p] = pre.get(p) or _digest(self._read_bytes(p))
        if r.error is not None:
            kept = any(e == entry for e in self.owner.values()) or os.path.exists(
                os.path.join(os.path.dirname(entry), variant_name(os.path.basename(entry)))
            )
            self._error(
                entry,
                f"{r.error} ({'keeping the last good variant' if kept else 'no variant until it is fixed'})",
            )
            return
        for w in r.warnings:
            if (entry, w) not in self.warned:
                self.warned.add((entry, w))
                self.log.warning(f"{display_path(entry)}: {w}")
        problems = [p for p in (self._write(v, entry, reason) for v in r.variants) if p]
        if problems:
            self._error(entry, "; ".join(problems))
        else:
            self._clear_error(entry, display_path(entry))

    def _write(self, v: Variant, entry: str, reason: str) -> str | None:
        """Bring one variant up to date (never over a hand edit); the problem, if any."""
        path = norm(v.path)
        self.owner[path] = entry
        try:
            outcome = apply(compare(v))
        except InputError as e:  # a folder or FIFO where the variant should be, no permission
            self.vstate.pop(path, None)
            self.written[path] = UNREADABLE  # whatever comes next in its place re-plans it
            return str(e)
        except OSError as e:
            return f"{display_path(path)}: cannot write: {e.strerror or e}"
        if outcome.state == "written":
            self.syncs += 1
            self.log.info(f"synced {display_path(path)} ({reason})")
        if outcome.state in ("written", "current"):
            self.written[path] = v.content
            self.vstate[path] = "current"
        elif outcome.state == "hand-edited":
            if self.vstate.get(path) != "hand-edited":
                self.log.warning(
                    f"{display_path(path)} was edited by hand; kept it. Move the change into "
                    f"{display_path(v.source)}, or run `carla-launch sync --force`"
                )
            self.written[path] = self._read(path)  # a later edit or delete re-plans it
            self.vstate[path] = "hand-edited"
        return None

    def _clean_temps(self) -> None:
        """Temp files that a killed writer (an earlier daemon or sync) left beside our variants."""
        for variant in sorted(self.owner):
            for p in remove_stale_temps(Path(variant)):
                self.log.info(f"removed {display_path(p)} (left by an interrupted write)")

    def _error(self, key: str, message: str) -> None:
        if self.errors.get(key) != message:
            self.log.error(message)
        self.errors[key] = message

    def _clear_error(self, key: str, name: str) -> None:
        if self.errors.pop(key, None) is not None:
            self.log.info(f"recovered: {name}")

    # -- the address ------------------------------------------------------------------------------
    def _target_files(self) -> set[str]:
        """Files whose change may change the address: the profile, and discovered addresses."""
        if self.profile is None:
            return set()
        files = {norm(self.profile.path)}
        if self.opts.address is None and not self.profile.remote.address:
            files.add(norm(state_dir() / "addresses.json"))
        return files

    def reload_target(self) -> bool:
        """Read the profile again; True when the target changed (everything must be re-derived)."""
        o = self.opts
        try:
            target, profile = resolve_target(o.address, o.profile, o.port, o.simulator)
        except InputError as e:
            self._error(PROFILE, f"{e} (keeping address {_where(self.target)})")
            return False
        self._clear_error(PROFILE, display_path(profile.path) if profile else "profile")
        self.profile = profile
        if target == self.target:
            return False
        old, self.target = self.target, target
        port = f", port {old.port} -> {target.port}" if old.port != target.port else ""
        self.log.info(f"target changed: address {_where(old)} -> {_where(target)}{port}")
        return True

    def reload(self) -> None:
        """SIGHUP: read the profile again, rediscover and re-check everything."""
        sd_notify("RELOADING=1")
        self.reload_target()
        self.full_sync("reload")
        self._after()
        self.log.info(self._summary("reloaded"))
        sd_notify("READY=1", f"STATUS={self._summary('watching')}")

    def recheck(self) -> None:
        """Periodic: compare a hash of every input with the last one; resync only on a difference."""
        present = os.path.isdir(self.folder)
        if present != self.folder_present:
            self._folder_moved(present)
            return
        if present and self.reload_target():  # the profile, in case its event was lost too
            self.full_sync(f"address now {_where(self.target)}")
            self._after()
        elif present and self._drifted():
            self.log.warning("re-check found changes the watcher missed: full resync")
            self.full_sync("re-check")
            self._after()
        else:
            self._rewatch()

    # -- watches, fingerprint, state --------------------------------------------------------------
    def _after(self) -> None:
        inputs = set().union(*self.graph.values()) if self.graph else set()
        self.seen = {p: h for p, h in self.seen.items() if p in inputs}
        self._rewatch()
        self._save_state()

    def _rewatch(self, force: Iterable[str] = ()) -> None:
        """Watch every folder that holds an input, the folder itself and its parent (to see it
        renamed or deleted), and the profile's folder. A folder whose inode changed (deleted and
        made again) needs a new watch: the old one died with the old inode."""
        files = set(self._target_files())
        for inputs in self.graph.values():
            files |= inputs
        files |= set(self.owner)
        dirs = {os.path.dirname(self.folder)} | {os.path.dirname(f) for f in files}
        if self.folder_present:
            dirs.add(self.folder)
        want: dict[str, tuple[int, int]] = {}
        for d in dirs:
            try:
                st = os.stat(d)
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
                    watch = self.observer.schedule(self.handler, d, follow_symlink=True)
                    self.watches[d] = (watch, ident)
                except OSError as e:
                    self.log.error(f"cannot watch {display_path(d)}: {e.strerror or e}")
        self.handler.interest = Interest(self.folder, frozenset(files))

    def _listing(self) -> frozenset[str]:
        try:
            return frozenset(n for n in os.listdir(self.folder) if n.endswith((".yaml", ".yml")))
        except OSError:
            return frozenset()

    def _hashes(self, paths: Iterable[str]) -> dict[str, str]:
        """Content hashes taken BEFORE planning: a write racing the plan then shows up as a
        difference at the next re-check (a needless resync), never as a missed change."""
        return {p: _digest(self._read_bytes(p)) for p in paths}

    def _drifted(self) -> bool:
        """Did anything change that no event told us about? A few small reads, no planning."""
        if self._listing() != self.listing:
            return True
        if any(_digest(self._read_bytes(p)) != h for p, h in self.seen.items()):
            return True
        return any(
            (self._read(v) is not None or not os.path.lexists(v))
            if text == UNREADABLE
            else self._read(v) != text
            for v, text in self.written.items()
        )

    @staticmethod
    def _read_bytes(path: str) -> bytes:
        try:
            return read_regular(path)  # a FIFO in the folder must not hang the daemon
        except OSError:
            return b"\0missing"

    @staticmethod
    def _read(path: str) -> str | None:
        try:
            return read_regular(path).decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
        except (OSError, UnicodeDecodeError):
            return None

    def _summary(self, verb: str) -> str:
        n = len(self.vstate)
        current = sum(1 for s in self.vstate.values() if s == "current")
        errs = f", {len(self.errors)} with errors" if self.errors else ""
        return (
            f"{verb} {display_path(self.folder)}: {current} of {n} variants current{errs}, "
            f"address {_where(self.target)}"
        )

    def _save_state(self, stopped: bool = False) -> None:
        data: dict[str, Any] = {
            "version": STATE_VERSION,
            "folder": self.folder,
            "pid": None if stopped else os.getpid(),
            "pid_started": self.pid_started,
            "started": self.started,
            "stopped": time.time() if stopped else None,
            "ready": self.ready,
            "address": self.target.address,  # null in the env address mode
            "port": self.target.port,
            "simulator": self.target.simulator,
            "profile": str(self.profile.path) if self.profile else None,
            "last_sync": self.last_sync,
            "syncs": self.syncs,
            "folder_present": self.folder_present,
            "variants": {
                p: {"source": self.owner.get(p), "state": s} for p, s in sorted(self.vstate.items())
            },
            "errors": [self.errors[k] for k in sorted(self.errors)],
        }
        try:
            write_json(state_name(self.folder), data)
        except OSError as e:
            self._error("<state>", f"cannot write the state file: {e.strerror or e}")


def _where(target: Target) -> str:
    """The address as a log line says it: the env address mode has none of its own."""
    return target.address or "from CARLA_LAUNCH_HOST (env address mode)"
