"""systemd's notify protocol (Type=notify), spoken directly: one datagram on $NOTIFY_SOCKET.

No dependency on python-systemd or libsystemd: the protocol is a few lines, and the daemon
must stay importable (and cheap) everywhere, including machines without systemd.
"""

from __future__ import annotations

import os
import socket


def sd_notify(*lines: str) -> bool:
    """Send `READY=1`-style lines to the service manager; False (no error) when not under one."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr or not lines:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall("\n".join(lines).encode())
    except OSError:
        return False  # the manager went away: nothing useful to do about it here
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when none are wanted."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (e.g. a wrapper)
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


def under_systemd() -> bool:
    """True when started by systemd: journald adds its own timestamps, so we must not."""
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
