"""One line per event, on stderr: what journald wants under systemd, timestamps otherwise."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from carla_launcher.daemon.notify import under_systemd

# syslog priorities that journald reads from a `<N>` line prefix (SyslogLevelPrefix=yes)
_PRIORITY = {"info": 6, "warning": 4, "error": 3}


class Log:
    """Writes whole lines and flushes each, so a crash never leaves half a line behind."""

    def __init__(self, stream: TextIO | None = None, systemd: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.systemd = under_systemd() if systemd is None else systemd
        # the priority prefix only makes sense when the stream really is the journal
        self.prefix = self.systemd and bool(os.environ.get("JOURNAL_STREAM"))

    def line(self, level: str, message: str) -> None:
        message = " ".join(message.splitlines()) or "-"
        if self.prefix:
            text = f"<{_PRIORITY[level]}>{message}"
        elif self.systemd:
            text = message
        else:
            now = time.time()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
            text = f"{stamp}.{int(now % 1 * 1000):03d} {message}"
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed terminal must not kill the daemon

    def info(self, message: str) -> None:
        self.line("info", message)

    def warning(self, message: str) -> None:
        self.line("warning", f"warning: {message}")

    def error(self, message: str) -> None:
        self.line("error", f"error: {message}")
