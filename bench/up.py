#!/usr/bin/env python3
"""Benchmark of `carla-launch up`, `attach` and `status` (prints JSON). Needs root (network
namespace boxes, a private dockerd), like the end-to-end tests.

- up: against an already deployed box whose server is stopped and starts instantly (the
  stand-in), so the time is the tool's own overhead: status over SSH, start, RPC probe, sync,
  docker compose in a tmux pane. Goal: <= 3 s.
- attach: from no local session until both panes show output. Goal: <= 0.5 s.
- parallel: `up` of a pool profile with `server.gpus: all` on two boxes (two GPUs and one, in
  their recorded-output nvidia-smi stand-ins: three servers, three agents) against `up` of the
  same profile on one of those boxes (one server, one agent), side by side in the same run,
  both from stopped servers. The work on the boxes is parallel, so the ratio's goal is <= 1.5.
  And `status` of the three pairs, with every server and agent up. Goal: < 2 s.

    python -m bench.up [--runs N] [--part all|single|parallel]

HOME and the XDG folders point into the temporary folder, as in the tests: the records `up`
writes (known servers, sessions) never land in the user's own ~/.local/state/carla-launch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.harness.agent import AGENT, VERSION_CALL
from tests.harness.dockerd import DockerDaemon
from tests.harness.netns_box import make_box, pool_profile
from tests.harness.parallel import ONE_GPU, TWO_GPUS, give_gpus, write_env_agent

GOAL_UP_S = 3.0
GOAL_ATTACH_S = 0.5
GOAL_PARALLEL_RATIO = 1.5  # up of 3 servers on 2 boxes / up of 1 server on 1 box
GOAL_STATUS_S = 2.0


def isolate_home(tmp: Path) -> None:
    """A HOME and XDG folders inside `tmp`, for this process and every child (as
    tests/harness/cli.py does): the records `up` writes never land in the user's own."""
    home = tmp / "home"
    home.mkdir()
    os.environ.update(
        HOME=str(home),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_CONFIG_HOME=str(home / ".config"),
    )


@contextlib.contextmanager
def agent_world() -> Iterator[tuple[Path, DockerDaemon, dict[str, str]]]:
    """(a temporary folder, a private dockerd, the env for `carla-launch`): HOME inside the
    folder (`isolate_home`), the agents on that dockerd, the panes on a tmux socket of their
    own, which is killed at the end."""
    sock = f"cl-bench-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        isolate_home(Path(tmp))
        with DockerDaemon(Path(tmp) / "docker") as docker:
            env = {**docker.environ(), "CARLA_LAUNCH_TMUX_SOCKET": sock}
            try:
                yield Path(tmp), docker, env
            finally:
                subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--part", choices=("all", "single", "parallel"), default="all")
    args = ap.parse_args()
    results: dict[str, Any] = {"runs": args.runs}
    with agent_world() as (tmp, docker, env):
        if args.part in ("all", "single"):
            results.update(single(args.runs, tmp, docker, env))
        if args.part in ("all", "parallel"):
            results.update(parallel(args.runs, tmp, docker, env))
    print(json.dumps(results, indent=2))


def carla_launch(env: dict[str, str], cwd: Path, *a: str) -> subprocess.CompletedProcess[str]:
    """`carla-launch A...` as a user runs it; a failure ends the benchmark with its output."""
    done = subprocess.run(
        [sys.executable, "-m", "carla_launcher", *a],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise SystemExit(f"carla-launch {' '.join(a)} failed: {done.stderr}{done.stdout}")
    return done


def timed(env: dict[str, str], cwd: Path, *a: str) -> float:
    t = time.perf_counter()
    carla_launch(env, cwd, *a)
    return time.perf_counter() - t


def all_up(env: dict[str, str], cwd: Path, profile: Path, timeout: float = 60) -> None:
    """Until `status P` finds nothing to report (exit 0): `up` leaves the agents' containers
    starting in their panes."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(
            [sys.executable, "-m", "carla_launcher", "status", str(profile)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"status {profile} still reports problems: {done.stderr}")
        time.sleep(0.2)


def single(runs: int, tmp: Path, docker: DockerDaemon, env: dict[str, str]) -> dict[str, Any]:
    """One box, one server: `up` from a stopped server, `up` when all is up, `attach`."""
    sock = env["CARLA_LAUNCH_TMUX_SOCKET"]
    with make_box(tmp) as box:
        project = box.dir / "proj" / "build"
        project.mkdir(parents=True)
        (project / "docker-compose.yaml").write_text(
            AGENT.format(image=docker.image(), call=VERSION_CALL)
        )
        box.preinstall()
        box.write_profile(compose={"dir": str(project), "simulator": "carla-simulator"})
        prof = str(box.profile_path)

        def cli(*a: str) -> None:
            carla_launch(env, box.dir, *a)

        cli("deploy", prof)  # writes the launch files; the package is already there
        ups, noop_ups, attaches = [], [], []
        for _ in range(runs):
            cli("down", prof, "--server")
            ups.append(timed(env, box.dir, "up", prof, "--no-attach"))
            noop_ups.append(timed(env, box.dir, "up", prof, "--no-attach"))
            subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
            t = time.perf_counter()
            cli("attach", prof, "--no-attach")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                panes = subprocess.run(
                    ["tmux", "-L", sock, "list-panes", "-a", "-F", "#{pane_id}"],
                    capture_output=True,
                    text=True,
                ).stdout.split()
                texts = [
                    subprocess.run(
                        ["tmux", "-L", sock, "capture-pane", "-p", "-t", p],
                        capture_output=True,
                        text=True,
                    ).stdout.strip()
                    for p in panes
                ]
                if len(texts) >= 2 and all(texts):
                    break
                time.sleep(0.01)
            attaches.append(time.perf_counter() - t)
        cli("down", prof, "--server")
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
    return {
        "up_from_stopped_server_s_median": round(statistics.median(ups), 3),
        "up_from_stopped_server_s_max": round(max(ups), 3),
        "up_when_all_up_s_median": round(statistics.median(noop_ups), 3),
        "goal_up_s_max": GOAL_UP_S,
        "attach_until_panes_show_output_s_median": round(statistics.median(attaches), 3),
        "attach_s_max": round(max(attaches), 3),
        "goal_attach_s_max": GOAL_ATTACH_S,
    }


def parallel(runs: int, tmp: Path, docker: DockerDaemon, env: dict[str, str]) -> dict[str, Any]:
    """`up` of 3 servers on 2 boxes against `up` of 1 server on 1 box; `status` of 3 pairs."""
    folder = tmp / "parallel"
    folder.mkdir()
    with make_box(folder, login="user") as a, make_box(folder, login="user") as b:
        give_gpus(a, TWO_GPUS)
        give_gpus(b, ONE_GPU)
        build = folder / "proj" / "build"
        write_env_agent(build, docker.image())
        compose = {"dir": str(build), "simulator": "carla-simulator", "address": "env"}
        pool = pool_profile([a, b], folder, gpus="all")
        doc = json.loads(pool.read_text())
        pool.write_text(json.dumps({**doc, "compose": compose}))
        # the same profile on box B alone: one server (its one GPU), one agent
        one = folder / "profiles" / "one.yaml"
        remote = {**doc["remote"], "host": b.alias}
        server = {**doc["server"], "tmux_session": "one"}
        one.write_text(json.dumps({"remote": remote, "server": server, "compose": compose}))
        for box in (a, b):
            box.preinstall()
        carla_launch(env, folder, "deploy", str(one))
        carla_launch(env, folder, "deploy", str(pool))
        carla_launch(env, folder, "up", str(pool), "--no-attach")
        all_up(env, folder, pool)  # the agents' containers may still be starting
        status = json.loads(carla_launch(env, folder, "status", str(pool), "--json").stdout)
        if len(status.get("pairs", [])) != 3:
            raise SystemExit(f"the pool runs {len(status.get('pairs', []))} pairs, not 3")
        ups_1, ups_3, statuses = [], [], []
        for _ in range(runs):
            carla_launch(env, folder, "down", str(pool), "--server")
            carla_launch(env, folder, "down", str(one), "--server")
            ups_1.append(timed(env, folder, "up", str(one), "--no-attach"))
            carla_launch(env, folder, "down", str(one), "--server")
            ups_3.append(timed(env, folder, "up", str(pool), "--no-attach"))
            all_up(env, folder, pool)
            statuses.append(timed(env, folder, "status", str(pool), "--json"))
        carla_launch(env, folder, "down", str(pool), "--server")
    up_1, up_3 = statistics.median(ups_1), statistics.median(ups_3)
    return {
        "up_1_server_1_box_s_median": round(up_1, 3),
        "up_3_servers_2_boxes_s_median": round(up_3, 3),
        "up_3_servers_2_boxes_s_max": round(max(ups_3), 3),
        "up_3_vs_1_ratio": round(up_3 / up_1, 2),
        "goal_up_3_vs_1_ratio_max": GOAL_PARALLEL_RATIO,
        "status_3_pairs_s_median": round(statistics.median(statuses), 3),
        "status_3_pairs_s_max": round(max(statuses), 3),
        "goal_status_3_pairs_s_max": GOAL_STATUS_S,
    }


if __name__ == "__main__":
    main()
