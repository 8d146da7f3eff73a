"""A command in a real terminal: a detached tmux session on a private socket, read back as text.
Also a pytest plugin: the `tmux_socket` fixture gives carla-launch's own tmux windows (`up`,
`attach`) a private server for one test.

`--watch` redraws in place; only a real terminal shows whether it does. Each use gets its own
tmux server (its own socket), so tests never see each other's panes or the user's sessions, and
the server is killed on exit even when the test fails.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.harness.polling import wait_for

SESSION = "w"


class Pane:
    """The one pane of a detached session: what it shows, and waiting for what it will show."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True
        ).stdout

    def screen(self) -> str:
        """The visible screen, one line per row."""
        return self._tmux("capture-pane", "-p", "-t", SESSION)

    def history(self) -> str:
        """The scroll-back and the screen: what a frame that scrolled instead of redrawing left."""
        return self._tmux("capture-pane", "-p", "-S", "-", "-t", SESSION)

    def pid(self) -> int:
        """The pid of the command the pane runs."""
        return int(self._tmux("display", "-p", "-t", SESSION, "#{pane_pid}").strip())

    def wait(self, want: str | Callable[[str], bool], timeout: float = 10.0) -> str:
        """The screen once it contains `want` (text) or want(screen) holds; on time-out an
        AssertionError with the last screen seen."""
        cond = (lambda screen: want in screen) if isinstance(want, str) else want
        seen = [""]

        def matched() -> bool:
            seen[0] = self.screen()
            return cond(seen[0])

        what = f"{want!r} in the pane" if isinstance(want, str) else "the pane to match"
        wait_for(matched, timeout, what, log=lambda: seen[0], interval=0.1)
        return seen[0]


@contextmanager
def detached_pane(
    argv: Sequence[str],
    *,
    width: int,
    height: int,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[Pane]:
    """argv running in a new width x height pane; the private tmux server dies on exit.

    The server starts with `env` (or this process's environment), so the command inherits it.
    """
    socket = f"cl-test-{uuid.uuid4().hex[:8]}"
    new = ["tmux", "-L", socket, "-f", "/dev/null", "new-session", "-d", "-s", SESSION]
    size = ["-x", str(width), "-y", str(height)]
    where = ["-c", str(cwd)] if cwd is not None else []
    try:
        subprocess.run(
            [*new, *size, *where, *argv],
            check=True,
            env=None if env is None else dict(env),
            cwd=cwd,
        )
        yield Pane(socket)
    finally:
        kill_server(socket)


def kill_server(socket: str) -> None:
    """Stop the private tmux server `socket` (-L) and remove its socket file, which tmux leaves
    behind in its folder: test runs must not pile up files in /tmp/tmux-UID."""
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
    folder = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
    (folder / socket).unlink(missing_ok=True)


@pytest.fixture
def tmux_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private tmux server (-L NAME) for carla-launch's windows in this test; commands the test
    runs inherit CARLA_LAUNCH_TMUX_SOCKET. The server and its socket file go afterwards."""
    name = f"cl-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CARLA_LAUNCH_TMUX_SOCKET", name)
    yield name
    kill_server(name)
