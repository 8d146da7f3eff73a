"""From nothing to driving in one command, on this machine, with real parts only.

A remote box (network namespace + sshd) gets the stand-in CARLA package; a real dockerd runs
the agent, an image made with `docker import`, whose command asks the server for its version
over CARLA's RPC protocol and prints what it got; a real tmux shows both panes.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from carla_launcher import session as sess
from carla_launcher.profile import read_profile
from tests.harness.agent import AGENT, VERSION_CALL, cli, pane_text
from tests.harness.netns_box import Box
from tests.harness.polling import wait_for

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.slow]


def _agent_pane(session: str) -> sess.PaneState:
    found = sess.find_session(sess.tmux_server(), session)
    assert found is not None
    return sess.pane_states(found)["agent"]


def test_up_status_down_with_real_docker_tmux_and_ssh(box: Box, dockerd, tmux_socket: str) -> None:
    image = dockerd.image()
    project = box.dir / "proj" / "build"
    project.mkdir(parents=True)
    (project / "docker-compose.yaml").write_text(AGENT.format(image=image, call=VERSION_CALL))
    box.install_standin()
    box.write_profile(compose={"dir": str(project), "simulator": "carla-simulator"})
    env = {**dockerd.environ(), "CARLA_LAUNCH_TMUX_SOCKET": tmux_socket}

    up = cli(box, env, "up", str(box.profile_path), "--no-attach")
    assert up.returncode == 0, up.stderr + up.stdout
    assert f"server {box.alias}" in up.stdout or box.address in up.stdout
    # what the variant is, as `sync` says it: the simulator gone, the agent pointed at the box
    assert (
        "up: wrote proj/build/docker-compose.distributed.yaml: removed service carla-simulator; "
        f"1 reference now points at {box.address}:2000 (address found over SSH on {box.alias})"
    ) in up.stdout.splitlines(), up.stdout
    variant = project / "docker-compose.distributed.yaml"
    assert f"CARLA_SIM_HOST={box.address}" in variant.read_text()
    session = f"carla-{read_profile(box.profile_path).key}"

    # the agent pane shows the agent connected to the box's address; the server pane its log
    agent = wait_for(
        lambda: "CARLA 0.9.15" in (t := pane_text(tmux_socket, session, "agent")) and t,
        60,
        "agent output",
    )
    assert f"agent: connected to {box.address}:2000, CARLA 0.9.15" in agent
    server = wait_for(lambda: pane_text(tmux_socket, session, "server").strip(), 30, "server pane")
    assert "carla" in server.lower() or "listening" in server.lower(), server

    status = cli(box, env, "status", str(box.profile_path), "--json")
    facts = json.loads(status.stdout)
    assert status.returncode == 0, (status.stdout, status.stderr)
    (host,) = facts["hosts"]
    assert host["server"]["running"] is True and host["server"]["version"] == "0.9.15"
    assert host["address"] == box.address
    assert [c["state"] for c in facts["agent"]["containers"]] == ["running"]
    panes = {p["role"]: p for p in facts["session"]["panes"]}
    assert facts["session"]["exists"] and panes["agent"]["alive"]
    pid = box.carla_pid()

    again = cli(box, env, "up", str(box.profile_path), "--no-attach")
    assert again.returncode == 0, again.stderr
    assert "nothing changed" in again.stdout
    assert box.carla_pid() == pid

    # `--` passes the rest to `docker compose up`; when that agent ends, attach starts it
    # again with them, as `up` ran it
    passed = cli(box, env, "up", str(box.profile_path), "--no-attach", "--", "agent")
    assert passed.returncode == 0, passed.stderr
    assert "up: restarted panes: agent" in passed.stdout, passed.stdout
    assert "docker-compose.distributed.yaml up agent; session" in passed.stdout, passed.stdout
    pane = str(_agent_pane(session)["pane_id"])  # Ctrl-C in the agent's pane: it ends
    subprocess.run(["tmux", "-L", tmux_socket, "send-keys", "-t", pane, "C-c"], check=True)
    wait_for(lambda: not _agent_pane(session)["alive"], 60, "the agent pane to end")
    attach = cli(box, env, "attach", str(box.profile_path), "--no-attach")
    assert attach.returncode == 0, attach.stderr
    assert "restarted agent" in attach.stderr
    assert str(_agent_pane(session)["command"]).rstrip('"').endswith(" up agent")

    down = cli(box, env, "down", str(box.profile_path), "--server")
    assert down.returncode == 0, down.stderr
    assert dockerd.docker("ps", "-aq").stdout.strip() == ""
    assert (
        subprocess.run(
            ["tmux", "-L", tmux_socket, "has-session", "-t", session], capture_output=True
        ).returncode
        != 0
    )
    assert box.carla_pid() is None
    assert not ({2000, 2001, 2002} & box.listening())
    status = cli(box, env, "status", str(box.profile_path))
    # stopped on purpose: not a problem (it was "problem: server: not running (stopped)")
    assert status.returncode == 0, status.stderr
    assert "stopped on purpose (by carla-launch" in status.stdout
    assert os.environ.get("CARLA_LAUNCH_TMUX_SOCKET") == tmux_socket
