"""`up P -- --build agent` passes its arguments to `docker compose up`; when that agent pane has
ended, `attach` starts it again with them, as `up` ran it (a real tmux server on a private
socket; the server pane's ssh is refused at once by a closed loopback port)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from pathlib import Path

from carla_launcher import records
from carla_launcher import session as sess
from carla_launcher.profile import load_profile
from carla_launcher.stack.env import agent_env
from tests.harness.cli import Cli, write_files
from tests.harness.polling import wait_for

VARIANT = "build/docker-compose.distributed.yaml"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _project(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(f"Host gpu-box\n  HostName 127.0.0.1\n  Port {_closed_port()}\n")
    write_files(
        tmp_path,
        {
            "profiles/gpu.yaml": (
                f"remote:\n  host: gpu-box\n  address: 10.0.0.5\n  ssh_config: {config}\n"
            ),
            "build/docker-compose.yaml": "services: {}\n",
            VARIANT: "services: {}\n",
            "build/other.yaml": "services: {}\n",
            "build/other-distributed.yaml": "services: {}\n",
        },
    )


def _argv_end(name: str) -> str:
    """The end of the agent pane's command line (tmux shows it quoted)."""
    return str(_agent(name)["command"]).rstrip('"')


def _agent(name: str) -> sess.PaneState:
    found = sess.find_session(sess.tmux_server(), name)
    assert found is not None
    return sess.pane_states(found)["agent"]


def _end_agent(name: str) -> None:
    """The agent's pane ends, as when its containers exit or someone presses Ctrl-C in it."""
    pid = _agent(name)["pid"]
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):  # it ended by itself meanwhile
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _agent(name)["alive"], 10, "the agent pane to end")


def test_attach_restarts_a_dead_agent_with_the_args_up_passed(
    tmp_path: Path, tmux_socket: str
) -> None:
    _project(tmp_path)
    prof = load_profile("gpu", tmp_path)
    name = sess.session_name(prof.key)
    ran = records.SessionRecord(
        tmp_path / VARIANT, name, agent_env("10.0.0.5", 2000), ("--build", "agent")
    )
    records.remember_session(prof, ran)  # what `up gpu -- --build agent` leaves
    attach = Cli(tmp_path)

    first = attach("attach", "gpu", "--no-attach")
    assert first.exit_code == 0, first.output
    assert _argv_end(name).endswith(f"-f {tmp_path / VARIANT} up --build agent")

    _end_agent(name)
    again = attach("attach", "gpu", "--no-attach")
    assert again.exit_code == 0, again.output
    assert "restarted agent" in again.stderr
    assert _argv_end(name).endswith(f"-f {tmp_path / VARIANT} up --build agent")

    # another compose file named: `up`'s arguments (a service of its file) do not go with it
    _end_agent(name)
    other = attach("attach", "gpu", "-f", "other.yaml", "--no-attach")
    assert other.exit_code == 0, other.output
    assert _argv_end(name).endswith("other-distributed.yaml up")


def test_a_session_record_from_before_the_args_has_none(tmp_path: Path) -> None:
    _project(tmp_path)
    prof = load_profile("gpu", tmp_path)
    state = Path(os.environ["XDG_STATE_HOME"]) / "carla-launch"
    state.mkdir(parents=True, exist_ok=True)
    old = {str(prof.path): {"variant": str(tmp_path / VARIANT), "session": "carla-x", "env": {}}}
    (state / records.SESSIONS_FILE).write_text(json.dumps(old))
    found = records.session(prof)
    assert found is not None and found.compose_args == () and found.variant == tmp_path / VARIANT
    for bad in ("--build", ["--build", 3], {"a": 1}):  # not a list of strings: none
        old[str(prof.path)]["compose_args"] = bad  # type: ignore[assignment]
        (state / records.SESSIONS_FILE).write_text(json.dumps(old))
        assert records.session(prof).compose_args == ()  # type: ignore[union-attr]
