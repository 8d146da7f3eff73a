"""An agent's compose project, as `status` and `down` ask about it: by the project's labels, so
an edited or removed variant hides nothing and leaves nothing behind, and another project on
the same variant is never touched (a real dockerd and the real Compose v2)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from carla_launcher.records import AgentRecord
from carla_launcher.stack import agents

pytestmark = [pytest.mark.root, pytest.mark.docker]

VARIANT = """\
services:
  agent:
    image: {image}
    init: true
    environment:
      - CARLA_SIM_HOST=${{CARLA_LAUNCH_HOST:?run carla-launch up}}
    command: [sh, -c, 'exec sleep 3600']
"""


def test_a_project_is_found_and_removed_by_its_labels(dockerd_env: Any, tmp_path: Path) -> None:
    variant = tmp_path / "docker-compose.distributed.yaml"
    variant.write_text(VARIANT.format(image=dockerd_env.image()))
    env = {"CARLA_LAUNCH_HOST": "10.0.0.5", "CARLA_LAUNCH_PORT": "2000"}
    names = ("h23-agents-a", "h23-agents-b")
    mine, other = (AgentRecord("box", k, n, variant, env) for k, n in enumerate(names))
    try:
        for a in (mine, other):
            up = subprocess.run(
                agents.compose_argv(a, "up", "-d"),
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert up.returncode == 0, up.stderr
        state = agents.agent_state(mine)
        assert state["running"] and [c["name"] for c in state["containers"]] == [
            "h23-agents-a-agent-1"
        ]

        variant.unlink()  # edited away, or the folder cleaned: the project is still there
        assert [c["name"] for c in agents.agent_state(mine)["containers"]] == [
            "h23-agents-a-agent-1"
        ]
        assert agents.down_one(mine) is None
        assert agents.agent_state(mine)["containers"] == []
        left = agents.agent_state(other)  # the other project on that variant runs on
        assert left["running"] and len(left["containers"]) == 1
    finally:
        for name in names:
            dockerd_env.docker("compose", "-p", name, "down", check=False, cwd="/")
