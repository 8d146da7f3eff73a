#!/usr/bin/env python3
"""Benchmark of `up` of two CARLA servers as Slurm jobs (prints JSON). Needs root and Debian's
slurmctld, slurmd and munge (a real one-node cluster in a network-namespace box, as the
end-to-end test runs it: tests/harness/slurm.py), and a private dockerd for the agents.

The box's sshd is the cluster's login node; its node has two GPUs. A profile with
`server.mode: slurm` and `slurm.jobs: 2` and the env-mode agent of the tests (it asks its
server for its version every two seconds and prints where it connected). Each run starts
from no job (`down` cancels them) and times `up` until BOTH agents have printed an answer from
their own server, through their tunnels via the login node: deploy check, two sbatch
submissions, the scheduler's own latency, the jobs' start, the tunnels, CARLA's probe and
the agents. Goal: under 15 s.

The anchor, measured side by side in the same run: what a hand-written sbatch gets on the same
cluster, two `sbatch --wrap` jobs that start the same stand-in CARLA on fixed ports, timed
until both answer at the node's address (no tunnel, no agent, no deploy): the scheduler's and
the server's own latency, which `up` cannot go below.

    python -m bench.slurm [--runs N]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import time
from pathlib import Path
from typing import Any

from bench.up import agent_world, carla_launch
from carla_launcher.profile import read_profile
from carla_launcher.server.probe import NotReady, probe_version
from carla_launcher.stack.pairs import Reached, pairs_of
from tests.harness.dockerd import DockerDaemon
from tests.harness.netns_box import Box, make_box
from tests.harness.parallel import agent_reports, write_env_agent
from tests.harness.slurm import Cluster, slurm_missing

GOAL_S = 15.0
TIMEOUT_S = 90.0
POLL_S = 0.05
ANCHOR_PORTS = (2100, 2103)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if why := slurm_missing():
        raise SystemExit(f"bench.slurm: {why}")
    with agent_world() as (tmp, docker, env):
        results = measure(args.runs, tmp, docker, env)
    print(json.dumps(results, indent=2))


def _projects(prof: str, box: Box) -> list[str]:
    """The compose projects of the profile's two agents (stack/pairs.py names them)."""
    servers = [Reached(box.alias, k, None, box.address, 0) for k in (0, 1)]
    return [p.project for p in pairs_of(read_profile(Path(prof)), servers)]


def up_until_both_answered(
    box: Box, prof: str, docker: DockerDaemon, env: dict[str, str]
) -> tuple[float, float]:
    """`up` with no job: (seconds until `up` returned, until both agents printed an answer)."""
    projects = _projects(prof, box)
    t = time.perf_counter()
    carla_launch(env, box.dir, "up", prof, "--no-attach")
    returned = time.perf_counter() - t
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if all(any(r.version for r in agent_reports(docker, p)) for p in projects):
            return returned, time.perf_counter() - t
        time.sleep(POLL_S)
    raise SystemExit(f"the agents of {prof} printed no answer within {TIMEOUT_S:g} s")


def _answers(address: str, port: int) -> bool:
    try:
        probe_version(address, port, timeout=1)
        return True
    except NotReady:
        return False


def by_hand(box: Box, cluster: Cluster) -> float:
    """Two hand-written `sbatch --wrap` jobs with the stand-in on fixed ports: seconds from the
    first sbatch until both answer at the node's address."""
    user = box.server_user
    t = time.perf_counter()
    for port in ANCHOR_PORTS:
        wrap = f"cd {shlex.quote(str(box.root))} && exec ./CarlaUE4.sh -carla-rpc-port={port}"
        done = cluster.run(
            f"runuser -u {user} -- sbatch --parsable --gres=gpu:1 -J anchor -o /dev/null "
            f"--wrap={shlex.quote(wrap)}"
        )
        assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + TIMEOUT_S
    while not all(_answers(box.address, p) for p in ANCHOR_PORTS):
        if time.monotonic() > deadline:
            raise SystemExit("the hand-written jobs did not answer")
        time.sleep(POLL_S)
    took = time.perf_counter() - t
    cluster.run(f"scancel -u {user} -n anchor")
    while any(_answers(box.address, p) for p in ANCHOR_PORTS):
        time.sleep(POLL_S)
    return took


def measure(runs: int, tmp: Path, docker: DockerDaemon, env: dict[str, str]) -> dict[str, Any]:
    with make_box(tmp) as box, Cluster(box, gpus=2) as cluster:
        build = tmp / "proj" / "build"
        write_env_agent(build, docker.image())
        box.preinstall()
        box.write_profile(
            server={"mode": "slurm", "slurm": {"jobs": 2, "partition": cluster.partition}},
            compose={"dir": str(build), "simulator": "carla-simulator", "address": "env"},
        )
        prof = str(box.profile_path)
        carla_launch(env, box.dir, "deploy", prof)
        ups: list[tuple[float, float]] = []
        anchors: list[float] = []
        for _ in range(runs):
            carla_launch(env, box.dir, "down", prof)  # cancels the jobs
            anchors.append(by_hand(box, cluster))
            ups.append(up_until_both_answered(box, prof, docker, env))
        carla_launch(env, box.dir, "down", prof)
    connected = statistics.median(c for _, c in ups)
    return {
        "runs": runs,
        "servers": 2,
        "up_to_all_agents_connected_s_median": round(connected, 3),
        "up_to_all_agents_connected_s_max": round(max(c for _, c in ups), 3),
        "up_returns_s_median": round(statistics.median(r for r, _ in ups), 3),
        "anchor_sbatch_by_hand_to_both_answering_s_median": round(statistics.median(anchors), 3),
        "goal_up_to_all_connected_s_max": GOAL_S,
        "met": connected < GOAL_S,
    }


if __name__ == "__main__":
    main()
