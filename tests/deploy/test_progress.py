"""How long work on a box reads on this machine: percentage, rate over a sliding window, time
left, and when a plain line is due (pure: box/progress.py; the doctests show each function)."""

from __future__ import annotations

from carla_launcher.box import progress
from carla_launcher.box.progress import Meter, Progress, advance, due, shown, text
from carla_launcher.term import ProgressLine

MB = 2**20


def feed(points: list[tuple[float, int]], total: int, phase: str = "download") -> list[Meter]:
    """The meter after each (time, done) line of one phase."""
    meters: list[Meter] = []
    m: Meter | None = None
    for t, done in points:
        m = advance(m, Progress(phase, done, total), t)
        meters.append(m)
    return meters


def test_a_download_shows_percent_rate_and_time_left_as_it_goes() -> None:
    total = 100 * MB
    meters = feed([(t, t * MB) for t in range(0, 101, 5)], total)  # 1 MB/s, a line every 5 s
    assert text(meters[0]) == "download 0% 0 B of 100 MB"  # no rate from one sample
    assert text(meters[2]) == "download 10% 10.0 MB of 100 MB, 1.0 MB/s, 1 min 30 s left"
    assert text(meters[-1]) == "download 100% 100 MB of 100 MB, 1.0 MB/s"  # nothing left
    percents = [progress.percent(m.latest.done, total) for m in meters]
    assert percents == sorted(percents) and percents[-1] == 100


def test_the_rate_follows_the_last_seconds_not_the_whole_transfer() -> None:
    # 10 MB/s for 60 s, then 1 MB/s: within a window the rate is the new speed
    points = [(float(t), t * 10 * MB) for t in range(61)]
    points += [(60.0 + t, 600 * MB + t * MB) for t in range(1, 21)]
    m = feed(points, 2000 * MB)[-1]
    assert progress.rate(m.samples) == MB
    assert text(m).endswith(", 1.0 MB/s, 23 min left")


def test_unknown_total_and_a_download_that_starts_over() -> None:
    m = feed([(0.0, 0), (2.0, 4 * MB)], 0)[-1]
    assert text(m) == "download 4.0 MB, 2.0 MB/s"  # no percentage, no time left
    assert progress.bar(m) == (0, None)  # the bar only moves
    # the server ignored Range: the count starts again from zero, the rate is not negative
    again = advance(m, Progress("download", 1 * MB, 0), 3.0)
    assert again.samples == ((3.0, MB),) and text(again) == "download 1.0 MB"


def test_apt_and_the_readiness_wait_count_seconds() -> None:
    apt = feed([(0.0, 0), (40.0, 40)], 600, phase="apt")[-1]
    assert text(apt) == "apt 40 s (gives up after 10 min)"
    assert progress.bar(apt) == (0, None)
    # the deploy's wait reads as `server start`'s (the same label and words)
    wait = advance(None, Progress("ready", 12, 300, "10.0.0.5:2000 connection refused"), 0.0)
    out: list[str] = []
    line = ProgressLine("gpu-box: CARLA at 10.0.0.5:2000", out.append, tty=False)
    line(12.4, "connection refused")
    assert f"gpu-box: {text(wait)}\n" == out[0]


def plain_lines(points: list[tuple[float, int]], total: int, phase: str = "download") -> list[str]:
    """The plain lines a log gets for these (time, done) lines, and the last one at the end."""
    lines: list[str] = []
    m: Meter | None = None
    for t, done in points:
        m = advance(m, Progress(phase, done, total, "10.0.0.5:2000 refused"), t)
        if due(m, t):
            lines.append(text(m))
            m = shown(m, t)
    if m is not None and progress.last_line_due(m):
        lines.append(text(m))
    return lines


def test_plain_lines_come_at_most_every_ten_seconds_and_always_end_with_the_last() -> None:
    total = 600 * MB
    every_second = [(float(t), t * MB) for t in range(601)]  # 10 minutes, a line a second
    lines = plain_lines(every_second, total)
    assert len(lines) == 61  # at 0, 10, ..., 600 s: no flood
    assert lines[0].startswith("download 0% ") and lines[-1].startswith("download 100% ")
    # a box that stops short of 100% still gets its last state printed
    short = plain_lines(every_second[:596], total)
    assert short[-1].startswith("download 99% 595 MB of 600 MB")
    # the same line is never printed twice (a box that repeats its last line)
    assert plain_lines([(0.0, total), (20.0, total)], total) == [text(feed([(0, total)], total)[0])]


def test_the_readiness_wait_prints_every_five_seconds_and_no_last_line() -> None:
    lines = plain_lines([(t / 4, int(t / 4)) for t in range(49)], 30, phase="ready")
    assert [ln.split("waiting ")[1].split(" s")[0] for ln in lines] == ["0", "5", "10"]
