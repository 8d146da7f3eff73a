"""The sync daemon: keeps every distributed variant of a folder current as files change.

- watch.py: watchdog events -> the paths that matter, and a trailing-edge debounce
- reconciler.py: the decisions, no I/O (graph of entries and the files they read, owners,
  variant states, errors; a batch of events in, effects out)
- service.py: the loop around it (select, signals, sd_notify, watches, executing the effects
  through `compose.service`, the state file)
- notify.py: systemd's notify protocol (READY=1, WATCHDOG=1, STOPPING=1), no dependency
- systemd.py: the user unit (template, one instance per folder): install, uninstall, status
- status.py: the state file, read by `carla-launch daemon status` and `carla-launch status`

Importing this package imports nothing heavy; in particular never pyinfra (gevent's
monkey-patching breaks watchdog's threads).
"""

from __future__ import annotations

from carla_launcher.daemon.status import daemon_status, format_status

__all__ = ["daemon_status", "format_status"]
