"""A compose-mode server's ports are held by docker-proxy (root), not by the server user: its
status must not call them "held by another user" (which made `status` exit 1 for a healthy
server). The real status script runs in a real shell here; no box is needed for the question
it asks or does not ask."""

from __future__ import annotations

import subprocess

import pytest

from carla_launcher.box import sections
from carla_launcher.box.shell import prologue
from carla_launcher.server.scripts import status_script
from carla_launcher.server.state import notes, parse_status


def _sections(compose: bool) -> set[str]:
    script = prologue("nobody", "cl-test-ports") + status_script(
        "compose" if compose else "package"
    )
    done = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, timeout=30)
    return set(sections.parse(done.stdout))


@pytest.mark.parametrize("compose", [False, True])
def test_only_a_package_server_is_asked_about_other_users_ports(compose: bool) -> None:
    asked = _sections(compose)
    assert "port" in asked and "busy" in asked
    assert ("foreign" in asked) is not compose


def test_a_running_compose_server_has_nothing_to_fix() -> None:
    out = sections.script([("port", "echo 2000"), ("compose", "echo 'running|Up 5 minutes'")])
    done = subprocess.run(["sh", "-c", out], capture_output=True, text=True, timeout=30)
    st = parse_status(done.stdout)
    assert st["running"] is True and st["foreign_ports"] == []
    assert notes(st, "gpu") == []
