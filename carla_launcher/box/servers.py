"""What the last deploy recorded about each box's server (address, port, version).

Written by `deploy/runner.py` after a deploy, read by `address`, `status`, `up` and `env`; it
lives here, below both, so that reading it never imports the deploy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from carla_launcher.state import read_json

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

SERVERS_STATE = "servers.json"


def known_server(profile: Profile, host: str) -> dict[str, Any]:
    """What the last deploy recorded for a host: {address, port, version} (may be empty)."""
    mine = read_json(SERVERS_STATE).get(profile.key)
    entry = mine.get(host) if isinstance(mine, dict) else None
    return entry if isinstance(entry, dict) else {}
