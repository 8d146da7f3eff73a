"""One daemon per folder: an flock on a file under the state folder, holding the owner's pid.

flock (not a pid file alone) because the kernel drops it when the process dies, however it
dies, so a crashed daemon never blocks the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from carla_launcher.errors import LauncherError, display_path


class AlreadyRunning(LauncherError):
    """Another daemon holds the folder's lock."""

    exit_code = 1

    def __init__(self, folder: Path, pid: int | None) -> None:
        self.folder, self.pid = folder, pid
        who = f"pid {pid}" if pid else "pid unknown"
        stop = f"; stop it with `kill {pid}`" if pid else ""
        super().__init__(
            f"a daemon is already watching {display_path(folder)} ({who}){stop}, "
            "or `carla-launch daemon uninstall` if systemd runs it"
        )


class FolderLock:
    def __init__(self, path: Path, folder: Path) -> None:
        self.path, self.folder = path, folder
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning naming the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self.folder, self._holder()) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _holder(self) -> int | None:
        # the holder writes its pid right after locking: give it a moment if we raced it
        for _ in range(20):
            try:
                text = self.path.read_text().strip()
            except OSError:
                text = ""
            if text.isdigit():
                return int(text)
            time.sleep(0.025)
        return None

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock
        self._fd = None
