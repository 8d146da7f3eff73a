"""The agent of the end-to-end tests and benchmarks: a compose file whose agent asks the server
for its version over CARLA's RPC protocol and prints what it got, so a pane shows that the agent
reached the simulator at the address the tool gave it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.harness.netns_box import Box

# CARLA's `version` call, as the real client sends it: [0, 1, "version", [[false]]]
VERSION_CALL = r"\224\000\001\247version\221\221\302"

# Fill with .format(image=..., call=VERSION_CALL); `$$` is compose's escape for `$`.
AGENT = """\
name: e2e
services:
  carla-simulator:
    image: carlasim/carla:0.9.15
    command: ./CarlaUE4.sh -RenderOffScreen -nosound
  agent:
    image: {image}
    init: true
    environment:
      - CARLA_SIM_HOST=carla-simulator
    depends_on: [carla-simulator]
    command:
      - sh
      - -c
      - |
        reply=$$(printf '{call}' | nc -w 3 $$CARLA_SIM_HOST 2000 | grep -o '0\\.9\\.15')
        echo "agent: connected to $$CARLA_SIM_HOST:2000, CARLA $$reply"
        exec sleep 3600
"""


def cli(
    where: Box | Path, env: dict[str, str], *args: str, timeout: float = 240
) -> subprocess.CompletedProcess:
    """carla-launch as a user runs it, in the box's project folder (or the folder given)."""
    cwd = where if isinstance(where, Path) else where.dir
    return subprocess.run(
        [sys.executable, "-m", "carla_launcher", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


ROLE_FORMAT = "#{pane_id} #{@carla_role}"


def pane_id(socket: str, session: str, role: str) -> str | None:
    """The id of the session's first pane with this role (`@carla_role`), or None."""
    panes = subprocess.run(
        ["tmux", "-L", socket, "list-panes", "-s", "-t", session, "-F", ROLE_FORMAT],
        capture_output=True,
        text=True,
    ).stdout
    return next((ln.split()[0] for ln in panes.splitlines() if ln.endswith(f" {role}")), None)


def pane_text(socket: str, session: str, role: str) -> str:
    """What the pane with this role shows, its scrollback included ("" when there is none)."""
    found = pane_id(socket, session, role)
    if found is None:
        return ""
    return subprocess.run(
        ["tmux", "-L", socket, "capture-pane", "-p", "-J", "-S", "-", "-t", found],
        capture_output=True,
        text=True,
    ).stdout
