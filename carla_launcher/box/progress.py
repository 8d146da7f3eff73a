"""The progress protocol between the scripts we run on a box and this machine, and how this
machine words it. Pure.

Long work on a box (apt, a 20 GB download, its checksum, the unpack) prints machine-readable
lines on its stdout, `carla-launch-progress PHASE DONE TOTAL`, which the deploy relays; this
machine turns them into a progress bar on a terminal or plain periodic lines in a log. DONE
and TOTAL are non-negative integers (bytes, or seconds for `apt` and `ready`); TOTAL 0 means
unknown. Free text may follow (NOTE): the deploy's own readiness wait sends
`ready WAITED BUDGET ADDRESS:PORT REASON`, worded as `up` and `server start` word theirs.

The wording is decided here, from a `Meter` (what one host's current phase has shown so far):
percentage, rate over a sliding window, time left, and when a plain log line is due (the
first of a phase, then at most one every `every(phase)` seconds, and always the last one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from carla_launcher.term import WAIT_EVERY, waiting

MARK = "carla-launch-progress"
BYTES = ("download", "checksum", "unpack")  # DONE and TOTAL count bytes
PHASES = ("apt", *BYTES, "ready")  # apt and ready count seconds

# `progress PHASE DONE TOTAL` in a box script (after the prologue)
PROGRESS_FUNCTION = f'progress() {{ echo "{MARK} $1 ${{2:-0}} ${{3:-0}}"; }}\n'

WINDOW = 10.0  # seconds of samples the rate is measured over
EVERY = 10.0  # at most one plain line per host this often (the readiness wait: WAIT_EVERY)


@dataclass(frozen=True)
class Progress:
    phase: str
    done: int
    total: int  # 0: unknown
    note: str = ""


def line(phase: str, done: float, total: float, note: str = "") -> str:
    """The protocol line for one step of progress (what a box script's `progress` prints).

    >>> line("ready", 12.6, 300, "10.0.0.5:2000 connection refused")
    'carla-launch-progress ready 12 300 10.0.0.5:2000 connection refused'
    """
    note = " ".join(note.split())  # one line, whatever the reason's text held
    return f"{MARK} {phase} {max(0, int(done))} {max(0, int(total))}" + (f" {note}" if note else "")


def parse(text: str) -> Progress | None:
    """The progress in one relayed line (a `host: ` prefix is allowed), else None.

    >>> parse("gpu-box: carla-launch-progress download 512 1024")
    Progress(phase='download', done=512, total=1024, note='')
    >>> parse("downloading CARLA") is None
    True
    """
    return relayed(text)[1]


def relayed(text: str) -> tuple[str, Progress | None]:
    """(host, progress) of a relayed `HOST: carla-launch-progress ...` line; (host, None) for
    any other line, whose host is "" when it names none.

    >>> relayed("gpu-box: carla-launch-progress ready 3 30 10.0.0.5:2000 connection refused")
    ('gpu-box', Progress(phase='ready', done=3, total=30, note='10.0.0.5:2000 connection refused'))
    >>> relayed("gpu-box: carla-launch-progress download 1 x"), relayed("a note: see this")
    (('gpu-box', None), ('', None))
    """
    host, sep, rest = text.partition(": ")
    if not sep or not host or " " in host:
        host, rest = "", text
    head, sep, tail = rest.partition(MARK + " ")
    if not sep or head.strip():
        return host, None
    parts = tail.split(maxsplit=3)
    if len(parts) < 3 or parts[0] not in PHASES or not all(p.isdigit() for p in parts[1:3]):
        return host, None
    return host, Progress(parts[0], int(parts[1]), int(parts[2]), " ".join(parts[3:]))


# -- the wording ---------------------------------------------------------------------------------
def size(n: float) -> str:
    """Bytes for people, in the units of the box scripts' `human` (1024-based), three digits.

    >>> size(512), size(8.1 * 1024**3), size(3_994), size(112.4 * 2**20)
    ('512 B', '8.1 GB', '3.9 KB', '112 MB')
    """
    units = ("B", "KB", "MB", "GB", "TB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} {units[i]}" if i == 0 or n >= 100 else f"{n:.1f} {units[i]}"


def duration(seconds: float) -> str:
    """A span of time for people: the two largest units that matter.

    >>> duration(7), duration(100), duration(120), duration(7530)
    ('7 s', '1 min 40 s', '2 min', '2 h 5 min')
    """
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min" + (f" {s % 60} s" if s % 60 else "")
    return f"{s // 3600} h" + (f" {s % 3600 // 60} min" if s % 3600 // 60 else "")


def percent(done: int, total: int) -> int | None:
    """Whole percent done (100 only once all is done); None when the total is unknown.

    >>> percent(42, 100), percent(9999, 10000), percent(5, 0)
    (42, 99, None)
    """
    if total <= 0:
        return None
    return min(100, done * 100 // total)


def rate(samples: tuple[tuple[float, int], ...]) -> float | None:
    """Units per second between the oldest and the newest (time, done) sample; None without
    two samples apart in time.

    >>> rate(((0.0, 0), (10.0, 1000)))
    100.0
    >>> rate(((5.0, 10),)) is None
    True
    """
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return None
    (t0, d0), (t1, d1) = samples[0], samples[-1]
    return max(0.0, (d1 - d0) / (t1 - t0))


def time_left(done: int, total: int, per_s: float | None) -> float | None:
    """Seconds until done at this rate; None when unknown, stalled or finished.

    >>> time_left(40, 100, 6.0)
    10.0
    >>> time_left(40, 0, 6.0) is None, time_left(40, 100, 0.0) is None
    (True, True)
    """
    if total <= 0 or done >= total or not per_s:
        return None
    return (total - done) / per_s


def finished(p: Progress) -> bool:
    return 0 < p.total <= p.done


def every(phase: str) -> float:
    """How often a plain line may be printed: the readiness wait as `up` prints its own."""
    return WAIT_EVERY if phase == "ready" else EVERY


# -- one host's current phase ----------------------------------------------------------------------
@dataclass(frozen=True)
class Meter:
    """What one host's current phase showed: its latest progress, the samples of the last
    WINDOW seconds (plus one older, so that the rate spans the window), and the last plain
    line printed of it (when, and what it showed)."""

    latest: Progress
    samples: tuple[tuple[float, int], ...]
    shown_at: float | None = None
    shown: Progress | None = None


def advance(meter: Meter | None, p: Progress, now: float, window: float = WINDOW) -> Meter:
    """The meter after one more progress line; a new phase, or a count that went back (a
    download restarted from zero), starts a new meter.

    >>> m = advance(None, Progress("download", 0, 100), 0.0)
    >>> for t in (5.0, 10.0, 15.0, 20.0):
    ...     m = advance(m, Progress("download", int(t) * 4, 100), t)
    >>> m.samples  # 10.0 is the newest sample at or before the window's start
    ((10.0, 40), (15.0, 60), (20.0, 80))
    """
    if meter is None or meter.latest.phase != p.phase or p.done < meter.latest.done:
        return Meter(p, ((now, p.done),))
    samples = (*meter.samples, (now, p.done))
    while len(samples) > 2 and samples[1][0] <= now - window:
        samples = samples[1:]
    return replace(meter, latest=p, samples=samples)


def text(meter: Meter) -> str:
    """What a host's current phase looks like, without the host.

    >>> m = Meter(Progress("download", 42 * 2**28, 100 * 2**28), ((0.0, 0), (1.0, 112 * 2**20)))
    >>> text(m)
    'download 42% 10.5 GB of 25.0 GB, 112 MB/s, 2 min 13 s left'
    >>> text(Meter(Progress("apt", 40, 600), ((0.0, 0), (40.0, 40))))
    'apt 40 s (gives up after 10 min)'
    >>> text(Meter(Progress("ready", 3, 30, "10.0.0.5:2000 connection refused"), ()))
    'CARLA at 10.0.0.5:2000: waiting 3 s (connection refused)'
    """
    p = meter.latest
    if p.phase == "ready":
        where, _, reason = p.note.partition(" ")
        return f"CARLA at {where}: {waiting(p.done, reason or 'not answering yet')}"
    if p.phase not in BYTES:  # counted in seconds: how long so far, and the limit
        limit = f" (gives up after {duration(p.total)})" if p.total else ""
        return f"{p.phase} {duration(p.done)}{limit}"
    pct = percent(p.done, p.total)
    out = f"{p.phase} {size(p.done)}"
    if pct is not None:
        out = f"{p.phase} {pct}% {size(min(p.done, p.total))} of {size(p.total)}"
    per_s = rate(meter.samples)
    if per_s is not None:
        out += f", {size(per_s)}/s"
    left = time_left(p.done, p.total, per_s)
    if left is not None:
        out += f", {duration(left)} left"
    return out


def bar(meter: Meter) -> tuple[int, int | None]:
    """(completed, total) for a progress bar; total None: no measure, the bar just moves."""
    p = meter.latest
    return (p.done, p.total) if p.phase in BYTES and p.total > 0 else (0, None)


def due(meter: Meter, now: float) -> bool:
    """Is a plain line for this meter due? The first of a phase, the last (all done), else
    at most one every `every(phase)` seconds; never the same line twice.

    >>> m = advance(None, Progress("download", 1, 100), 0.0)
    >>> due(m, 0.0), due(shown(m, 0.0), 3.0)
    (True, False)
    >>> m = shown(m, 0.0)
    >>> due(advance(m, Progress("download", 2, 100), 9.0), 9.0)
    False
    >>> due(advance(m, Progress("download", 100, 100), 9.0), 9.0)
    True
    >>> due(advance(m, Progress("download", 50, 100), 10.0), 10.0)
    True
    """
    if meter.shown == meter.latest:
        return False
    if meter.shown_at is None or finished(meter.latest):
        return True
    return now - meter.shown_at >= every(meter.latest.phase)


def shown(meter: Meter, now: float) -> Meter:
    """The meter after its plain line was printed."""
    return replace(meter, shown_at=now, shown=meter.latest)


def last_line_due(meter: Meter) -> bool:
    """When a phase ends: print its last state unless it was printed (the readiness wait ends
    in the deploy's own summary, as `up`'s does, so its last "waiting" line is not repeated).

    >>> m = advance(None, Progress("download", 99, 100), 0.0)
    >>> last_line_due(m), last_line_due(shown(m, 0.0))
    (True, False)
    """
    return meter.latest.phase != "ready" and meter.shown != meter.latest
