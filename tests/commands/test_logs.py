"""`carla-launch logs [P] [SERVICE]... [-f] [-n N]`: the agent's containers, as `up` left them.

The end-to-end test runs the agent as `up P -- agent` does, a real `docker compose up agent`
in a real tmux pane against a real dockerd, and reads its logs through the CLI; the box is not
needed for that, so the record `up` writes is written directly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from carla_launcher import records
from carla_launcher import session as sess
from carla_launcher.profile import load_profile
from carla_launcher.stack.env import agent_env
from carla_launcher.stack.logs import logs_argv
from carla_launcher.stack.panes import session_panes
from tests.harness.cli import Cli, child, write_files
from tests.harness.polling import wait_for

PROFILE = {"profiles/gpu.yaml": "remote:\n  host: gpu-box\n  address: 10.0.0.5\n"}

# An env-mode variant: it does not even load without the CARLA_LAUNCH_HOST `up` gave the agent.
VARIANT = """\
name: {project}
services:
  agent:
    image: {image}
    init: true
    environment:
      - CARLA_SIM_HOST=${{CARLA_LAUNCH_HOST:?run carla-launch up}}
    command:
      - sh
      - -c
      - 'echo "agent: first, for $$CARLA_SIM_HOST"; echo "agent: second"; exec sleep 3600'
  helper:
    image: {image}
    command: [sh, -c, 'echo "helper: started"; exec sleep 3600']
"""


def test_logs_argv_puts_the_services_after_a_double_dash() -> None:
    v = Path("/p/build/docker-compose.distributed.yaml")
    assert logs_argv(v, (), follow=False, tail=None) == ["docker", "compose", "-f", str(v), "logs"]
    assert logs_argv(v, ("agent", "-x"), follow=True, tail=5) == [
        *("docker", "compose", "-f", str(v), "logs", "--follow", "--tail", "5"),
        *("--", "agent", "-x"),
    ]


def test_logs_says_when_up_started_nothing(tmp_path: Path, run: Cli) -> None:
    write_files(tmp_path, PROFILE)
    r = run("logs")
    assert r.exit_code == 1
    assert r.stderr == (
        "error: no agent started by `up` for profile gpu: run `carla-launch up gpu`\n"
    )
    variant = tmp_path / "build" / "gone-distributed.yaml"
    records.remember_session(
        load_profile("gpu", tmp_path), records.SessionRecord(variant, "carla-x", {})
    )
    r = run("logs", "gpu")
    assert r.exit_code == 1
    assert r.stderr == (
        "error: build/gone-distributed.yaml, which `up` ran, is gone: run `carla-launch up gpu` "
        "again\n"
    )


@pytest.mark.root
@pytest.mark.docker
@pytest.mark.slow
def test_logs_of_the_agent_that_up_started_with_passed_arguments(
    tmp_path: Path, dockerd_env, tmux_socket: str
) -> None:
    image = dockerd_env.image()
    write_files(tmp_path, PROFILE)
    variant = tmp_path / "build" / "docker-compose.distributed.yaml"
    write_files(
        tmp_path,
        {"build/docker-compose.distributed.yaml": VARIANT.format(project="logs", image=image)},
    )
    prof = load_profile("gpu", tmp_path)
    env = agent_env("10.0.0.5", 2000)
    # what `up gpu -- agent` does once the server answers: the pane, then the record
    panes = session_panes(
        prof, "gpu-box", variant, gpu=False, read_write=False, env=env, compose_args=["agent"]
    )
    sess.ensure_session(sess.tmux_server(), sess.session_name(prof.key), panes)
    records.remember_session(prof, records.SessionRecord(variant, "carla-gpu", env))
    environ = dockerd_env.environ()

    def logs(*args: str) -> subprocess.CompletedProcess[str]:
        return child("logs", *args, cwd=tmp_path, env=environ)

    everything = wait_for(
        lambda: "agent: second" in (r := logs("gpu")).stdout and r,
        60,
        "the agent's lines in `carla-launch logs gpu`",
        log=lambda: dockerd_env.log_tail(20),
    )
    assert everything.returncode == 0, everything.stderr
    assert "agent: first, for 10.0.0.5" in everything.stdout
    assert "helper" not in everything.stdout  # `-- agent` reached `docker compose up`

    last = logs("gpu", "agent", "-n", "1")
    assert last.returncode == 0, last.stderr
    assert "agent: second" in last.stdout and "agent: first" not in last.stdout

    out = tmp_path / "follow.out"
    with out.open("w") as sink:
        follow = subprocess.Popen(
            [sys.executable, "-m", "carla_launcher", "logs", "gpu", "-f"],
            cwd=tmp_path,
            env=environ,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: "agent: second" in out.read_text(), 30, "followed lines")
            assert follow.poll() is None, out.read_text()  # still following
        finally:
            follow.terminate()
            follow.wait(timeout=30)

    down = child("down", "gpu", cwd=tmp_path, env=environ)
    assert down.returncode == 0, down.stderr
    assert dockerd_env.docker("ps", "-aq").stdout.strip() == ""
    after = logs("gpu")
    assert after.returncode == 1 and after.stderr.startswith("error: no agent started by `up`")
