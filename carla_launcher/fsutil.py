"""Writing files so that no reader ever sees half of one; reading them without ever blocking."""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from pathlib import Path

# a temp file older than this is left over from a killed writer, whatever its name says
STALE_TEMP_S = 60.0


def atomic_write(path: Path, content: str, mode: int | None = None) -> None:
    """Temp file in the same folder, fsync, rename over the target. Keeps the old mode.

    The temp file is `.NAME.PID.XXXXXXXX.tmp`: the pid tells a later run that its writer died.
    """
    path = Path(path)
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
    import tempfile  # only writers need it: `sync --check` starts without it

    prefix = f".{path.name}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _temp_pattern(name: str) -> re.Pattern[str]:
    """atomic_write's temp names for `name`: with a pid (now) or without (before)."""
    return re.compile(rf"\.{re.escape(name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.tmp")


def _pid_dead(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, someone else's
    return False


def temp_names(folder: Path) -> list[str]:
    """The names in a folder that may be atomic_write's temp files: list a folder once, then
    ask stale_temps about each of its files (a thousand variants: one listing, not 1000)."""
    try:
        names = os.listdir(folder)  # noqa: PTH208  names only: no Path per file
        return [n for n in names if n.startswith(".") and n.endswith(".tmp")]
    except OSError:
        return []


def stale_temps(path: Path, now: float | None = None, names: list[str] | None = None) -> list[Path]:
    """The temp files a killed atomic_write of `path` left: older than STALE_TEMP_S, or made by
    a process that is gone. A live writer's temp file is never one of them. `names`: the
    folder's temp_names, listed already."""
    path = Path(path)
    if names is None:
        names = temp_names(path.parent)
    if not names:
        return []
    pattern = _temp_pattern(path.name)
    now = time.time() if now is None else now
    out = []
    for name in names:
        m = pattern.fullmatch(name)
        if m is None:
            continue
        p = path.parent / name
        try:
            st = p.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        old = now - st.st_mtime > STALE_TEMP_S
        if old or (m.group(1) is not None and _pid_dead(int(m.group(1)))):
            out.append(p)
    return out


def remove_stale_temps(path: Path, names: list[str] | None = None) -> list[Path]:
    """Remove what `stale_temps` finds; the ones removed (a race with another cleaner is fine)."""
    removed = []
    for p in stale_temps(path, names=names):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            continue
        except OSError:
            continue  # not ours to remove after all; the next run tries again
    return removed


def read_regular(path: Path | str, limit: int | None = None) -> bytes:
    """The bytes of a regular file (at most `limit`). Opens without blocking, so a FIFO or a
    device where a file should be is an OSError, never a hang."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks = []
        left = -1 if limit is None else limit
        while left != 0:
            chunk = os.read(fd, 1 << 20 if left < 0 else min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left = left - len(chunk) if left > 0 else left
        return b"".join(chunks)
    finally:
        os.close(fd)
