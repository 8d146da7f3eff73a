"""Parts of the parallel-evaluation tests and benchmark: GPUs for a box, an agent for many servers.

- `give_gpus(box, case)`: the box's `nvidia-smi` is the FAKE one (a recorded-output stand-in,
  tests/harness/fake_nvidia_smi; this machine has no GPU) replaying `case`: `two-h200-idle`
  (two free GPUs) or `one-h200-idle`. It goes into the login user's ~/.local/bin, where a
  login shell (and carla-launch's scripts on a box) find it, so the box needs `login="user"`:
  a root login's home is this machine's /root, shared by every box and the test run itself.
- `ENV_AGENT`: a compose file for the env address mode (`compose.address: env`): its agent
  reads the address and world port that the variant takes from CARLA_LAUNCH_HOST/PORT, asks
  that server for its version over CARLA's RPC protocol every few seconds and prints
  "agent: connected to ADDRESS:PORT, CARLA VERSION" (VERSION empty when nothing answered).
  No `name:`, no `container_name:`, no published ports: one variant runs as many compose
  projects at once, one per server.
- `answered_since`, `version_at`, `status_json`: what the end-to-end tests wait for and read.
- `agent_reports(dockerd, project)`: what the agent of one compose project printed, parsed;
  `containers(dockerd, project)`, `projects(dockerd)`: what runs on the daemon, by compose
  project (its label); `remove_projects(dockerd, names)`: a test's leftovers on the session's
  daemon.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.agent import VERSION_CALL
from tests.harness.dockerd import DockerDaemon
from tests.harness.fake_nvidia_smi import install
from tests.harness.netns_box import Box

TWO_GPUS = "two-h200-idle"  # GPU 0 recorded on a real H200 box, GPU 1 the same row again
ONE_GPU = "one-h200-idle"

# Fill with .format(image=..., call=VERSION_CALL); `$$` is compose's escape for `$`. The
# variant rewrites CARLA_SIM_HOST (the simulator's name) and CARLA_SIM_PORT (its world port).
ENV_AGENT = """\
services:
  carla-simulator:
    image: carlasim/carla:0.9.15
    command: ./CarlaUE4.sh -RenderOffScreen -nosound
  agent:
    image: {image}
    init: true
    environment:
      - CARLA_SIM_HOST=carla-simulator
      - CARLA_SIM_PORT=2000
    depends_on: [carla-simulator]
    command:
      - sh
      - -c
      - |
        while :; do
          reply=$$(printf '{call}' | nc -w 3 $$CARLA_SIM_HOST $$CARLA_SIM_PORT \\
            | grep -o '0\\.9\\.[0-9]*')
          echo "agent: connected to $$CARLA_SIM_HOST:$$CARLA_SIM_PORT, CARLA $$reply"
          sleep 2
        done
"""

AGENT_SERVICE = "agent"
_REPORT = re.compile(r"agent: connected to (?P<address>\S+):(?P<port>\d+), CARLA (?P<version>\S*)")


@dataclass(frozen=True)
class Report:
    """One line of an agent: where it connected and what that server answered."""

    address: str
    port: int
    version: str  # "" when no server answered there


def give_gpus(box: Box, case: str) -> Path:
    """Put the FAKE nvidia-smi replaying `case` where the box's login shell finds it; returns
    its folder (for fake_nvidia_smi.set_case / set_pids)."""
    if box.user == "root":
        raise ValueError("give_gpus needs a box made with login='user' (root's home is shared)")
    home = Path("/home") / box.user
    bin_dir = install(home / ".local" / "bin", case).parent
    subprocess.run(["chown", "-R", f"{box.user}:", str(home / ".local")], check=True)
    return bin_dir


def write_env_agent(folder: Path, image: str) -> Path:
    """`folder/docker-compose.yaml` with ENV_AGENT for `image`; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "docker-compose.yaml"
    path.write_text(ENV_AGENT.format(image=image, call=VERSION_CALL))
    return path


def parse_reports(text: str) -> list[Report]:
    """Every report line in an agent's output, in order.

    >>> parse_reports("x\\nagent: connected to 10.77.10.2:2003, CARLA 0.9.15\\n")
    [Report(address='10.77.10.2', port=2003, version='0.9.15')]
    """
    return [
        Report(m["address"], int(m["port"]), m["version"])
        for m in (_REPORT.search(line) for line in text.splitlines())
        if m
    ]


def containers(dockerd: DockerDaemon, project: str, *, every: bool = True) -> list[str]:
    """Ids of the compose project's containers (every state, or only running ones)."""
    args = ["ps", "-q", "--no-trunc", "--filter", f"label=com.docker.compose.project={project}"]
    done = dockerd.docker(*args, *(["-a"] if every else []))
    return [str(cid) for cid in done.stdout.split()]


def projects(dockerd: DockerDaemon) -> set[str]:
    """The compose projects that have a container on this daemon (any state)."""
    done = dockerd.docker("ps", "-a", "--format", '{{.Label "com.docker.compose.project"}}')
    return {p for p in done.stdout.split() if p}


def agent_reports(dockerd: DockerDaemon, project: str) -> list[Report]:
    """What the agent containers of `project` printed (all of its agent containers' logs)."""
    ids = dockerd.docker(
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--filter",
        f"label=com.docker.compose.service={AGENT_SERVICE}",
    ).stdout.split()
    out: list[Report] = []
    for cid in ids:
        logs = dockerd.docker("logs", cid, check=False)
        out += parse_reports(logs.stdout + logs.stderr)
    return out


def remove_projects(dockerd: DockerDaemon, names: set[str]) -> None:
    """Remove the containers and networks of these compose projects (a test's leftovers on
    the session's daemon)."""
    for name in sorted(names):
        label = f"label=com.docker.compose.project={name}"
        ids = dockerd.docker("ps", "-aq", "--filter", label).stdout.split()
        if ids:
            dockerd.docker("rm", "-f", *ids, check=False)
        nets = dockerd.docker("network", "ls", "-q", "--filter", label).stdout.split()
        if nets:
            dockerd.docker("network", "rm", *nets, check=False)


def answered_since(dockerd: DockerDaemon, project: str, seen: int) -> list[Report]:
    """The agent's reports, once it printed a new one with an answer after the first `seen`
    (else []: for `polling.wait_for`)."""
    found = agent_reports(dockerd, project)
    return found if len(found) > seen and found[-1].version else []


def version_at(host: str, port: int) -> str | None:
    """CARLA's version at host:port, or None when nothing answers there (for `wait_for`)."""
    from carla_launcher.server.probe import NotReady, probe_version

    try:
        return probe_version(host, port, timeout=2)
    except NotReady:
        return None


def status_json(box: Box, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """`carla-launch status P --json` of the box's profile: its exit code and its document,
    checked against the status schema."""
    from tests.commands.test_json_outputs import checked
    from tests.harness.agent import cli

    done = cli(box, env, "status", str(box.profile_path), "--json")
    assert done.stdout.strip(), done.stderr
    return done.returncode, checked("status", done.stdout)
