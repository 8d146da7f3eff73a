"""The agents' compose projects: what `down` removes, what `status` and `up` ask about.

Every agent that `up` or `attach` started is a compose project of its own (`stack/pairs.py`),
recorded in `records`; these calls name that project, so they see nothing of another
profile's agents. `compose_argv` and `containers` are pure; the rest runs docker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from carla_launcher import parallel, proc
from carla_launcher.records import AgentRecord
from carla_launcher.stack.env import checked_env

#: Where compose runs when it needs no file: compose looks for a compose file in the current
#: folder and its parents, and must find none (it goes by the project's labels alone).
NO_FILE_CWD = "/"


def compose_argv(agent: AgentRecord, *action: str, with_file: bool = True) -> list[str]:
    """`docker compose -p PROJECT [-f VARIANT] ACTION...`; an agent from before pairs has no
    project of ours: `-f VARIANT` alone, as it was started.

    >>> from pathlib import Path
    >>> a = AgentRecord("box", 1, "gpu-1a2b3c-1", Path("/p/v.yaml"), {})
    >>> compose_argv(a, "down")
    ['docker', 'compose', '-p', 'gpu-1a2b3c-1', '-f', '/p/v.yaml', 'down']
    >>> compose_argv(a, "ps", with_file=False)
    ['docker', 'compose', '-p', 'gpu-1a2b3c-1', 'ps']
    """
    argv = ["docker", "compose"]
    if agent.project is not None:
        argv += ["-p", agent.project]
    if with_file or agent.project is None:
        argv += ["-f", str(agent.variant)]
    return [*argv, *action]


def _last_line(result: proc.Result, what: str) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else f"{what}: exit status {result.rc}"


def down_one(agent: AgentRecord) -> str | None:
    """`docker compose down` of the agent's project; None when it went, else why not. With its
    variant gone, by the project's labels alone (nothing of compose's files is needed)."""
    has_file = agent.variant.is_file()
    if not has_file and agent.project is None:
        return f"{agent.variant.name} is gone, and its agent has no project of ours to find it by"
    result = proc.run(
        compose_argv(agent, "down", with_file=has_file),
        None,
        cwd=str(agent.variant.parent) if has_file else NO_FILE_CWD,
        env={**os.environ, **checked_env(agent.env)},
    )
    return None if result.ok else _last_line(result, "docker compose down")


def down_all(agents: Sequence[AgentRecord]) -> list[str | None]:
    """`down_one` of every agent at once, in their order."""
    return parallel.each(agents, down_one)


def containers(stdout: str) -> list[dict[str, Any]]:
    """The containers in `docker compose ps --format json` (one JSON object per line, or one
    list, by compose's version).

    >>> containers('{"Service": "agent", "Name": "p-agent-1", "State": "running", "Status": "Up"}')
    [{'service': 'agent', 'name': 'p-agent-1', 'state': 'running', 'status': 'Up'}]
    """
    out = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        data = json.loads(line)
        for c in data if isinstance(data, list) else [data]:
            out.append(
                {
                    "service": c.get("Service"),
                    "name": c.get("Name"),
                    "state": c.get("State"),
                    "status": c.get("Status"),
                }
            )
    return out


def agent_state(agent: AgentRecord) -> dict[str, Any]:
    """The containers of the agent's project: {project, variant, containers, running[, error]}.
    By the project's labels (no file), so an edited or removed variant does not hide them;
    an agent from before pairs is asked through its variant."""
    base: dict[str, Any] = {"project": agent.project, "variant": str(agent.variant)}
    if agent.project is None and not agent.variant.is_file():
        return {**base, "containers": [], "running": False, "error": "its variant is gone"}
    with_file = agent.project is None
    result = proc.run(
        compose_argv(agent, "ps", "-a", "--format", "json", with_file=with_file),
        30,
        cwd=str(agent.variant.parent) if with_file else NO_FILE_CWD,
        env={**os.environ, **checked_env(agent.env)},
    )
    if not result.ok:
        return {
            **base,
            "containers": [],
            "running": False,
            "error": _last_line(result, "docker compose ps"),
        }
    found = containers(result.stdout)
    running = bool(found) and all(c["state"] == "running" for c in found)
    return {**base, "containers": found, "running": running}
