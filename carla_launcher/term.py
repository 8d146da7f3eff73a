"""The terminal, written in place: a progress line, live progress rows, and the frames of a
full-screen redraw.

Commands rewrite what they printed instead of scrolling: `up` and `server start` keep one
"waiting for CARLA" line up to date, `deploy` keeps one row per host (a bar, its rate and time
left) below the lines it prints, and `gpu --watch` redraws a whole screen once a second.
The few ANSI escape codes live here, with the pure helpers that shape a frame to the
terminal's size; the rows are rich's `Progress`, imported only when a terminal shows them.
No I/O of its own but the rows': callers pass the writer and the size.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

HOME = "\x1b[H"  # cursor to the top left corner
CLEAR_EOL = "\x1b[K"  # clear from the cursor to the end of the line
CLEAR_EOS = "\x1b[J"  # clear from the cursor to the end of the screen
CLEAR_SCREEN = "\x1b[2J"
HIDE, SHOW = "\x1b[?25l", "\x1b[?25h"  # the cursor
REWRITE_LINE = "\r" + CLEAR_EOL  # back to the start of the line, and clear it
WAIT_EVERY = 5.0  # seconds between two "waiting" lines in a log


def waiting(waited: float, reason: str, width: int = 0) -> str:
    """How a wait for the server reads, in `up`, `server start` and `deploy` alike.

    >>> waiting(12.4, "connection refused")
    'waiting 12 s (connection refused)'
    """
    return f"waiting {waited:{width}.0f} s ({reason})"


class ProgressLine:
    """A progress line on a terminal (rewritten in place) or every few seconds in a log."""

    def __init__(
        self, label: str, write: Callable[[str], None], tty: bool, every: float = WAIT_EVERY
    ) -> None:
        self.label, self.write, self.tty, self.every = label, write, tty, every
        self._last = -every

    def __call__(self, waited: float, reason: str) -> None:
        if self.tty:
            self.write(f"{REWRITE_LINE}{self.label}: {waiting(waited, reason, 4)}")
        elif waited - self._last >= self.every:
            self._last = waited
            self.write(f"{self.label}: {waiting(waited, reason)}\n")

    def done(self) -> None:
        if self.tty:
            self.write(REWRITE_LINE)


class Board:
    """Live rows on a terminal, one per key (a host): a label, a bar, a text; lines printed
    with `line` scroll above them. rich's Progress draws them (several rows at once, redrawn
    in place, lines printed above without tearing), so rich is imported only here, and only
    when a terminal is there to show it (`open_board`)."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._rows: dict[str, TaskID] = {}
        progress.start()

    def show(self, key: str, text: str, completed: int = 0, total: int | None = None) -> None:
        """Set a row (made on first use); total None: no measure, the bar just moves."""
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = self._progress.add_task(key, total=total, text=text)
        self._progress.update(row, completed=completed, total=total, text=text, refresh=True)

    def drop(self, key: str) -> None:
        row = self._rows.pop(key, None)
        if row is not None:
            self._progress.remove_task(row)

    def line(self, text: str) -> None:
        """A line above the rows, as it is (no markup, no highlighting, wrapped by the
        terminal)."""
        self._progress.console.print(
            text, markup=False, highlight=False, emoji=False, soft_wrap=True
        )

    def close(self) -> None:
        """Rows gone from the screen (what they ended with was printed as lines)."""
        self._progress.stop()


def open_board(stream: TextIO) -> Board | None:
    """Live rows on `stream` when it is an interactive terminal, else None (a log, a pipe, a
    dumb terminal: print plain lines instead)."""
    if not stream.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn
    from rich.table import Column

    console = Console(file=stream)
    if not console.is_interactive:
        return None
    cells: dict[str, Any] = {"markup": False}
    return Board(
        Progress(
            TextColumn("{task.description}", **cells),
            BarColumn(bar_width=24),
            TextColumn(
                "{task.fields[text]}",
                table_column=Column(no_wrap=True, overflow="ellipsis"),
                **cells,
            ),
            console=console,
            transient=True,  # stray writes to stdout/stderr go above the rows (rich's default)
        )
    )


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
