"""What a status answer means (server/state.py): a compose server's ports held by docker-proxy
(root) are not "another user's", a package server's are; a failed start reads as a failure."""

from __future__ import annotations

import subprocess

from carla_launcher.box import sections
from carla_launcher.server.state import notes, parse_status, state_words

ROOT_LISTENER = "2000 0\n2001 0\n2002 0"  # docker-proxy of the container: uid 0


def answer(**parts: str) -> str:
    """A status script's answer with these sections (made by the real section writer)."""
    script = sections.script([(k, f"printf '%s\\n' '{v}'") for k, v in parts.items()])
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout


def test_a_running_compose_server_is_not_held_by_another_user() -> None:
    st = parse_status(
        answer(
            deployed="yes",
            port="2000",
            busy="2000 2001 2002",
            foreign=ROOT_LISTENER,
            compose="running|Up 5 minutes",
        )
    )
    assert st["running"] and st["foreign_ports"] == []
    assert notes(st, "gpu") == []


def test_a_package_server_names_another_users_listener() -> None:
    st = parse_status(answer(deployed="yes", port="2000", foreign="2001 65534"))
    assert st["foreign_ports"] == [[2001, 65534]]
    assert notes(st, "gpu") == [
        "port 2001 is held by another user's process (uid 65534): choose another server.port"
    ]


def test_a_start_that_failed_says_why() -> None:
    status = "state=failed\npid=\nrestarts=0\nport=2000\nlast_crash=port 2002 is held by x"
    st = parse_status(answer(deployed="yes", port="2000", status=status))
    assert not st["running"] and st["stopped"] is None
    assert state_words(st) == "failed (port 2002 is held by x)"
