#!/usr/bin/env python3
"""Benchmark of `up` through an SSH tunnel against `up` of a box reached directly (prints JSON).
Needs root (network namespace boxes, a private dockerd), like the end-to-end tests.

Two boxes with the stand-in CARLA, deployed; box A's firewall drops everything but ssh (its
world port does not answer from here), box B has none. Each gets the same env-mode profile
with `remote.tunnel: auto` and its own compose folder with the env-mode agent of the tests
(tests/harness/parallel.py: it asks its server for its version and prints where it connected).
Each run stops both servers (`down --server`), then times, for B and then A, from `up` until
the agent container has printed an answer from its server: for B at the box's address, for A
through the tunnel (auto's TCP check that finds the address silent, the ssh login, CARLA's
probe through it, the agent at host.docker.internal). Goal: tunnel / direct <= 1.5.

    python -m bench.tunnel [--runs N]

HOME and the XDG folders point into the temporary folder, as in the tests: the records `up`
writes never land in the user's own ~/.local/state/carla-launch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.up import agent_world, carla_launch
from carla_launcher.profile import read_profile
from carla_launcher.stack.pairs import Reached, pairs_of
from tests.harness.dockerd import DockerDaemon
from tests.harness.netns_box import Box, make_box
from tests.harness.parallel import agent_reports, write_env_agent

GOAL_RATIO = 1.5  # up to the first agent connected: through a tunnel / directly
AGENT_TIMEOUT_S = 60.0
POLL_S = 0.05


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with agent_world() as (tmp, docker, env):
        results = compare(args.runs, tmp, docker, env)
    print(json.dumps(results, indent=2))


def prepare(box: Box, tmp: Path, docker: DockerDaemon, env: dict[str, str]) -> tuple[str, str]:
    """The box's profile (tunnel: auto, env mode, its own compose folder), deployed; (the
    profile's path, its agent's compose project)."""
    build = tmp / f"proj-{box.n}" / "build"
    write_env_agent(build, docker.image())
    box.preinstall()
    box.write_profile(
        remote={"tunnel": "auto"},
        compose={"dir": str(build), "simulator": "carla-simulator", "address": "env"},
    )
    prof = str(box.profile_path)
    carla_launch(env, box.dir, "deploy", prof)
    return prof, box.profile_path.stem


def up_until_connected(
    box: Box, prof: str, docker: DockerDaemon, env: dict[str, str]
) -> tuple[float, float, str]:
    """`up` from stopped servers: (seconds until `up` returned, seconds until the agent
    printed an answer from its server, where it connected)."""
    server = Reached(box.alias, 0, None, box.address, 0)
    (pair,) = pairs_of(read_profile(Path(prof)), [server])  # its agent's compose project
    project = pair.project
    t = time.perf_counter()
    carla_launch(env, box.dir, "up", prof, "--no-attach")
    returned = time.perf_counter() - t
    deadline = time.monotonic() + AGENT_TIMEOUT_S
    while time.monotonic() < deadline:
        found = [r for r in agent_reports(docker, project) if r.version]
        if found:
            return returned, time.perf_counter() - t, f"{found[0].address}:{found[0].port}"
        time.sleep(POLL_S)
    raise SystemExit(f"the agent of {prof} printed no answer within {AGENT_TIMEOUT_S:g} s")


def compare(runs: int, tmp: Path, docker: DockerDaemon, env: dict[str, str]) -> dict[str, Any]:
    with make_box(tmp) as walled, make_box(tmp) as open_box:
        walled_prof, _ = prepare(walled, tmp, docker, env)
        open_prof, _ = prepare(open_box, tmp, docker, env)
        walled.firewall()  # only ssh gets in, after the deploy (which probes the world port)
        direct: list[tuple[float, float, str]] = []
        tunnel: list[tuple[float, float, str]] = []
        for _ in range(runs):
            carla_launch(env, open_box.dir, "down", open_prof, "--server")
            carla_launch(env, walled.dir, "down", walled_prof, "--server")
            direct.append(up_until_connected(open_box, open_prof, docker, env))
            tunnel.append(up_until_connected(walled, walled_prof, docker, env))
        carla_launch(env, open_box.dir, "down", open_prof, "--server")
        carla_launch(env, walled.dir, "down", walled_prof, "--server")
    d = statistics.median(c for _, c, _ in direct)
    tn = statistics.median(c for _, c, _ in tunnel)
    return {
        "runs": runs,
        "direct_connected_at": direct[0][2],
        "tunnel_connected_at": tunnel[0][2],
        "up_to_agent_connected_direct_s_median": round(d, 3),
        "up_to_agent_connected_tunnel_s_median": round(tn, 3),
        "up_to_agent_connected_tunnel_s_max": round(max(c for _, c, _ in tunnel), 3),
        "up_returns_direct_s_median": round(statistics.median(r for r, _, _ in direct), 3),
        "up_returns_tunnel_s_median": round(statistics.median(r for r, _, _ in tunnel), 3),
        "tunnel_vs_direct_ratio": round(tn / d, 2),
        "goal_tunnel_vs_direct_ratio_max": GOAL_RATIO,
    }


if __name__ == "__main__":
    main()
