"""`attach` starts nothing that `down` does not know: it refuses before building anything when
there is no terminal to attach to or no server runs, and every agent it starts is recorded as
`up` records its own. When an agent pane has ended, it starts it again as `up` ran it: its
project, its variant, what followed `up P --` (a real tmux server on a private socket; a real
box, with a real sshd and the stand-in server, for the server that runs)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from carla_launcher import records
from carla_launcher import session as sess
from carla_launcher.profile import load_profile
from carla_launcher.stack.env import agent_env
from tests.harness.cli import Cli, write_files
from tests.harness.netns_box import Box
from tests.harness.polling import wait_for

VARIANT = "build/docker-compose.distributed.yaml"
FILES = {
    "build/docker-compose.yaml": "services: {}\n",
    VARIANT: "services: {}\n",
    "build/other.yaml": "services: {}\n",
    "build/other-distributed.yaml": "services: {}\n",
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unreachable(tmp_path: Path) -> int:
    """A profile whose box refuses connections at once; the port it is on."""
    port = _closed_port()
    config = tmp_path / "ssh_config"
    config.write_text(f"Host gpu-box\n  HostName 127.0.0.1\n  Port {port}\n")
    write_files(
        tmp_path,
        {
            "profiles/gpu.yaml": (
                f"remote:\n  host: gpu-box\n  address: 10.0.0.5\n  ssh_config: {config}\n"
            ),
            **FILES,
        },
    )
    return port


def _agent(name: str, window: str = sess.WINDOW) -> sess.PaneState:
    found = sess.find_session(sess.tmux_server(), name)
    assert found is not None
    return sess.pane_states(found, window)["agent"]


def _argv_end(name: str) -> str:
    """The end of the agent pane's command line (tmux shows it quoted)."""
    return str(_agent(name)["command"]).rstrip('"')


def _end_agent(name: str) -> None:
    """The agent's pane ends, as when its containers exit or someone presses Ctrl-C in it."""
    pid = _agent(name)["pid"]
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):  # it ended by itself meanwhile
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _agent(name)["alive"], 10, "the agent pane to end")


def test_attach_without_a_terminal_refuses_before_building_anything(
    tmp_path: Path, tmux_socket: str
) -> None:
    _unreachable(tmp_path)
    name = sess.session_name(load_profile("gpu", tmp_path).key)
    r = Cli(tmp_path)("attach", "gpu")  # stdout is a pipe here
    assert r.exit_code == 2
    assert r.stderr == (
        "error: attach needs a terminal on stdout: run it in one, or add --no-attach to build "
        "the session without attaching\n"
    )
    assert sess.find_session(sess.tmux_server(), name) is None


def test_attach_refuses_when_no_server_runs_before_starting_an_agent(
    tmp_path: Path, tmux_socket: str
) -> None:
    port = _unreachable(tmp_path)
    prof = load_profile("gpu", tmp_path)
    name = sess.session_name(prof.key)
    ran = records.SessionRecord(tmp_path / VARIANT, name, agent_env("10.0.0.5", 2000))
    records.remember_session(prof, ran)  # what `up` left, before its agent was taken down
    r = Cli(tmp_path)("attach", "gpu", "--no-attach")
    assert r.exit_code == 1
    assert r.stderr == (
        "error: no server of profile gpu is running (gpu-box: ssh: connect to host 127.0.0.1 "
        f"port {port}: Connection refused): start it with `carla-launch up gpu`\n"
    )
    assert sess.find_session(sess.tmux_server(), name) is None  # no agent started
    assert records.session(prof) == ran


@pytest.mark.root
def test_attach_restarts_a_dead_agent_with_the_args_up_passed(
    box_factory: Any, tmux_socket: str
) -> None:
    box: Box = box_factory(login="user")
    box.preinstall()
    box.write_profile(remote={"address": box.address}, compose={"dir": "build"})
    box.deploy()
    write_files(box.dir, FILES)
    prof = load_profile(str(box.profile_path))
    name = sess.session_name(prof.key)
    project = prof.key.lower()
    variant = box.dir / VARIANT
    agent = records.AgentRecord(
        box.alias, 0, project, variant, agent_env(box.address, 2000), ("--build", "agent")
    )
    records.remember_session(prof, records.SessionRecord.of(name, [agent]))  # `up -- --build agent`
    attach = Cli(box.dir)

    first = attach("attach", str(box.profile_path), "--no-attach")
    assert first.exit_code == 0, first.output
    assert _argv_end(name).endswith(f"-p {project} -f {variant} up --build agent")

    _end_agent(name)
    again = attach("attach", str(box.profile_path), "--no-attach")
    assert again.exit_code == 0, again.output
    assert "restarted agent" in again.stderr
    assert _argv_end(name).endswith(f"-p {project} -f {variant} up --build agent")
    assert records.session(prof).pairs == (agent,)  # type: ignore[union-attr]

    # another compose file named: `up`'s arguments (a service of its file) do not go with it;
    # the agent it starts is the one recorded, so `down` removes it
    _end_agent(name)
    other = attach("attach", str(box.profile_path), "-f", "other.yaml", "--no-attach")
    assert other.exit_code == 0, other.output
    assert _argv_end(name).endswith(f"-p {project} -f {box.dir}/build/other-distributed.yaml up")
    (now,) = records.session(prof).pairs  # type: ignore[union-attr]
    assert now.variant.name == "other-distributed.yaml" and now.compose_args == ()

    # nothing recorded (as after `down`): attach starts the agent `up` would, and records it
    sess.kill_session(sess.tmux_server(), name)
    records.forget_session(prof)
    fresh = attach("attach", str(box.profile_path), "--no-attach")
    assert fresh.exit_code == 0, fresh.output
    (started,) = records.session(prof).pairs  # type: ignore[union-attr]
    assert (started.host, started.slot, started.project) == (box.alias, 0, project)
    assert started.env["CARLA_LAUNCH_HOST"] == box.address
    assert _argv_end(name).endswith(f"-p {project} -f {variant} up")


def test_a_session_record_from_before_pairs_reads_as_its_one_agent(tmp_path: Path) -> None:
    _unreachable(tmp_path)
    prof = load_profile("gpu", tmp_path)
    state = Path(os.environ["XDG_STATE_HOME"]) / "carla-launch"
    state.mkdir(parents=True, exist_ok=True)
    old = {str(prof.path): {"variant": str(tmp_path / VARIANT), "session": "carla-x", "env": {}}}
    (state / records.SESSIONS_FILE).write_text(json.dumps(old))
    found = records.session(prof)
    assert found is not None and found.compose_args == () and found.variant == tmp_path / VARIANT
    (agent,) = found.pairs  # started without -p: compose's own project name finds it
    assert (agent.host, agent.slot, agent.project) == (None, 0, None)
    for bad in ("--build", ["--build", 3], {"a": 1}):  # not a list of strings: none
        old[str(prof.path)]["compose_args"] = bad  # type: ignore[assignment]
        (state / records.SESSIONS_FILE).write_text(json.dumps(old))
        assert records.session(prof).compose_args == ()  # type: ignore[union-attr]
