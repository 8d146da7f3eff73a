"""`up` of a pool where one host cannot be reached: that host says why in one line, the others
go on (their servers deployed and started, their agents started and recorded), and `up` exits 1
so a script sees that not everything is up. Real parts: a network-namespace box with a real
sshd and the stand-in CARLA package, a host that refuses connections, a real dockerd and tmux.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from carla_launcher.profile import read_profile
from tests.harness.agent import AGENT, VERSION_CALL, cli
from tests.harness.netns_box import Box, pool_profile
from tests.harness.polling import wait_for

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.slow]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_host_that_fails_says_why_and_the_others_go_on(
    box_factory: Any, dockerd: Any, tmp_path: Path, tmux_socket: str
) -> None:
    from tests.commands.test_json_outputs import checked

    box: Box = box_factory(login="user")
    profile = pool_profile([box], tmp_path)
    port = _closed_port()
    config = tmp_path / "pool_ssh_config"
    config.write_text(config.read_text() + f"Host gone\n  HostName 127.0.0.1\n  Port {port}\n")
    build = tmp_path / "build"
    build.mkdir()
    agent = AGENT.replace("name: e2e\n", "").format(image=dockerd.image(), call=VERSION_CALL)
    (build / "docker-compose.yaml").write_text(agent)
    doc = json.loads(profile.read_text())
    doc["remote"]["host"].append("gone")
    doc["compose"] = {"dir": "build", "simulator": "carla-simulator", "address": "env"}
    profile.write_text(json.dumps(doc))
    key = read_profile(profile).key.lower()
    env = {**dockerd.environ(), "CARLA_LAUNCH_TMUX_SOCKET": tmux_socket}
    try:
        up = cli(tmp_path, env, "up", "pool", "--no-attach")
        assert up.returncode == 1, up.stderr + up.stdout
        refused = f"ssh: connect to host 127.0.0.1 port {port}: Connection refused"
        assert f"warning: gone: {refused}; its agent is not started\n" in up.stderr, up.stderr
        assert up.stderr.endswith(
            "error: not every server is up (the warnings above say why); the 1 that answered "
            "run with their agents: carla-launch attach pool\n"
        ), up.stderr
        assert (
            f"server {box.alias} at {box.address}:2000 (CARLA 0.9.15); "
            f"agent: docker compose -p {key}-{box.alias}-0 -f build/"
        ) in up.stdout, up.stdout

        def agent_runs() -> Any:
            status = cli(tmp_path, env, "status", "pool", "--json")
            doc = checked("status", status.stdout)
            return doc["pairs"][0]["agent"]["running"] and (status, doc)

        status, found = wait_for(agent_runs, 60, "the agent's containers to run")
        assert status.returncode == 1  # the host that is gone is a problem
        (pair,) = found["pairs"]
        assert (pair["host"], pair["slot"], pair["port"]) == (box.alias, 0, 2000)
        assert pair["agent"]["project"] == f"{key}-{box.alias}-0"
        assert found["hosts"][1]["server"]["error"] == refused
        assert found["problems"] == [f"server gone: {refused}"]

        down = cli(tmp_path, env, "down", "pool", "--server")
        assert down.returncode == 0, down.stderr
        assert f"server on {box.alias} stopped" in down.stdout, down.stdout
        assert f"warning: gone: {refused}; its servers may still run" in down.stderr
        label = f"label=com.docker.compose.project={key}-{box.alias}-0"
        assert dockerd.docker("ps", "-aq", "--filter", label).stdout.strip() == ""
    finally:
        cli(tmp_path, env, "down", "pool")
