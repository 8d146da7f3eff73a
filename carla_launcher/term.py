"""The terminal, written in place: a progress line and the frames of a full-screen redraw.

Two commands rewrite what they printed instead of scrolling: `up` and `server start` keep one
"waiting for CARLA" line up to date, and `gpu --watch` redraws a whole screen once a second.
Both need the same few ANSI escape codes; they live here, with the pure helpers that shape a
frame to the terminal's size. No I/O of its own: callers pass the writer and the size.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable

HOME = "\x1b[H"  # cursor to the top left corner
CLEAR_EOL = "\x1b[K"  # clear from the cursor to the end of the line
CLEAR_EOS = "\x1b[J"  # clear from the cursor to the end of the screen
CLEAR_SCREEN = "\x1b[2J"
HIDE, SHOW = "\x1b[?25l", "\x1b[?25h"  # the cursor
REWRITE_LINE = "\r" + CLEAR_EOL  # back to the start of the line, and clear it


class ProgressLine:
    """A progress line on a terminal (rewritten in place) or every few seconds in a log."""

    def __init__(
        self, label: str, write: Callable[[str], None], tty: bool, every: float = 5.0
    ) -> None:
        self.label, self.write, self.tty, self.every = label, write, tty, every
        self._last = -every

    def __call__(self, waited: float, reason: str) -> None:
        if self.tty:
            self.write(f"{REWRITE_LINE}{self.label}: waiting {waited:4.0f} s ({reason})")
        elif waited - self._last >= self.every:
            self._last = waited
            self.write(f"{self.label}: waiting {waited:.0f} s ({reason})\n")

    def done(self) -> None:
        if self.tty:
            self.write(REWRITE_LINE)


def fit(lines: list[str], width: int, height: int) -> list[str]:
    """Lines that fit a terminal (a tmux pane beside the server is narrow): prose is wrapped,
    table rows (columns set apart by two spaces) are cut, and at most height - 1 lines are
    kept, since a line feed on the last row would scroll and break the redraw in place."""
    width = max(20, width)
    out: list[str] = []
    for ln in lines:
        if len(ln) <= width:
            out.append(ln)
        elif "  " in ln.strip():
            out.append(ln[: width - 1] + "…")
        else:
            out += textwrap.wrap(ln, width, subsequent_indent="  ") or [""]
    return out[: max(1, height - 1)]


def frame(
    text: str, title: str, now: float | None = None, size: tuple[int, int] = (500, 500)
) -> str:
    """One screen: the cursor goes home, each line clears what the last frame left to its right,
    and the rest of the screen is cleared: refresh in place, no flicker (as `watch` does)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    body = fit(
        [f"{title}  ·  every 1 s  ·  {stamp}  ·  Ctrl-C to quit", "", *text.splitlines()], *size
    )
    return HOME + "".join(f"{ln}{CLEAR_EOL}\n" for ln in body) + CLEAR_EOS
