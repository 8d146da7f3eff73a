"""From watchdog's threads to the daemon's main loop: which events matter, and when to act.

watchdog 7's own pattern matching is not used: `patterns=["*.yaml"]` matches nothing, and its
ignore patterns drop the rename that completes an atomic save. The handler below looks at
both `src_path` and `dest_path` itself (an atomic save arrives as `moved: tmp -> file`).

The main loop sleeps in `select()` on the inbox's pipe, so an idle daemon costs no CPU: the
pipe is written once when a batch starts, and the loop computes the trailing-edge deadline
itself (no timer thread per event, which a burst of 10,000 saves would otherwise create).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

COMPOSE_SUFFIXES = (".yaml", ".yml")
# The kinds the daemon uses, given to `Observer.schedule(event_filter=...)`: watchdog then asks
# inotify for these only (IN_CREATE, IN_DELETE, IN_MOVE, IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE),
# so opening, reading or closing a watched file without writing costs no event at all (no
# IN_OPEN, IN_ACCESS, IN_CLOSE_NOWRITE in the kernel's queue, nothing handled in Python).
# IN_ATTRIB stays: a chmod may make an input unreadable.
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]
IGNORED_EVENTS = frozenset({"opened", "closed_no_write", "attrib"})  # should they come anyway
STRUCTURAL_EVENTS = frozenset({"created", "deleted", "moved"})


def norm(path: str | bytes | os.PathLike[str]) -> str:
    """One spelling per path (absolute, `..` folded), so event paths compare with input paths."""
    return os.path.normpath(Path(os.fsdecode(path)).absolute())


@dataclass(frozen=True)
class Interest:
    """What the handler forwards. Replaced whole by the main loop, so threads read it lock-free."""

    folder: str  # the compose folder: any YAML file appearing here may be a new entry
    files: frozenset[str] = frozenset()  # exact paths elsewhere: includes, profile, address book

    def wants(self, path: str) -> bool:
        if path in self.files:
            return True
        head, name = os.path.split(path)
        return head == self.folder and name.endswith(COMPOSE_SUFFIXES) and not name.startswith(".")


def relevant(
    event_type: str, src: str, dest: str, is_directory: bool, interest: Interest
) -> tuple[list[str], bool] | None:
    """(paths that matter, whether the set of files may have changed), or None to drop the event."""
    if event_type in IGNORED_EVENTS:
        return None
    paths = [p for p in (src, dest) if p]
    if is_directory:
        if event_type not in STRUCTURAL_EVENTS:
            return None
        # the folder itself, or a folder made or removed where a file we read or write belongs
        hits = [p for p in paths if p == interest.folder or p in interest.files]
        return (hits, True) if hits else None
    hits = [p for p in paths if interest.wants(p)]
    return (hits, event_type in STRUCTURAL_EVENTS) if hits else None


@dataclass(frozen=True)
class Batch:
    """What changed since the last batch."""

    paths: frozenset[str]
    structural: bool  # files appeared, vanished or were renamed: rediscover the entries
    full: str | None = None  # why everything must be re-checked (e.g. events were lost)


class Inbox:
    """Collects paths from any thread; a batch is due `delay` s after the LAST event (trailing
    edge), or `max_wait` s after the first one when events never stop (bounded staleness)."""

    def __init__(
        self, delay: float, max_wait: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.delay, self.max_wait, self.clock = delay, max(max_wait, delay), clock
        self._lock = threading.Lock()
        self._paths: set[str] = set()
        self._structural = False
        self._full: str | None = None
        self._first: float | None = None
        self._last = 0.0
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- producers (watchdog threads, logging hook) ----------------------------------------
    def push(self, paths: Iterable[str], structural: bool = False) -> None:
        now = self.clock()
        with self._lock:
            was_empty = self._first is None
            self._paths.update(paths)
            self._structural |= structural
            if was_empty:
                self._first = now
            self._last = now
        if was_empty:
            self.wake()

    def request_full(self, reason: str) -> None:
        now = self.clock()
        with self._lock:
            was_empty = self._first is None
            self._full = self._full or reason
            if was_empty:
                self._first = now
            self._last = now
        if was_empty:
            self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # the pipe is full: the loop is awake anyway
            os.write(self._w, b"\0")

    # -- the consumer (main loop) -------------------------------------------------------------
    def fileno(self) -> int:
        return self._r

    @property
    def wake_fd(self) -> int:
        """Write end, for `signal.set_wakeup_fd`: a signal then wakes the loop as an event does."""
        return self._w

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 4096):
                pass

    def due_in(self) -> float | None:
        """Seconds until the pending batch is due (0 = now), None when nothing is pending."""
        with self._lock:
            if self._first is None:
                return None
            due = min(self._last + self.delay, self._first + self.max_wait)
        return max(0.0, due - self.clock())

    def take(self) -> Batch | None:
        """The pending batch if it is due, else None."""
        wait = self.due_in()
        if wait is None or wait > 0:
            return None
        with self._lock:
            batch = Batch(frozenset(self._paths), self._structural, self._full)
            self._paths, self._structural, self._full, self._first = set(), False, None, None
        return batch

    def close(self) -> None:
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)


class Handler(FileSystemEventHandler):
    """Forwards the events that matter to the inbox; runs on watchdog's dispatcher thread."""

    def __init__(self, inbox: Inbox, interest: Interest) -> None:
        self.inbox = inbox
        self.interest = interest  # swapped whole by the main loop

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = norm(event.src_path) if event.src_path else ""
        dest = norm(event.dest_path) if event.dest_path else ""
        hit = relevant(event.event_type, src, dest, event.is_directory, self.interest)
        if hit is not None:
            self.inbox.push(hit[0], hit[1])


class WatchdogLogHook(logging.Handler):
    """watchdog reports a kernel queue overflow only as a log record: turn it into a full resync,
    and pass its other warnings on as our own one-line log entries."""

    def __init__(self, inbox: Inbox, warn: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.inbox, self.warn = inbox, warn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log record must not kill the observer thread
            return
        if "overflow" in message.lower():
            self.inbox.request_full("inotify queue overflowed, events were lost")
        elif (
            "when the thread is inactive" not in message
        ):  # a watch torn down while reading: benign
            self.warn(f"watchdog: {message}")

    @classmethod
    def install(cls, inbox: Inbox, warn: Callable[[str], None]) -> WatchdogLogHook:
        hook = cls(inbox, warn)
        logger = logging.getLogger("watchdog")
        logger.addHandler(hook)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
        return hook

    def uninstall(self) -> None:
        logging.getLogger("watchdog").removeHandler(self)
        logging.getLogger("watchdog").addHandler(logging.NullHandler())  # quiet while stopping
