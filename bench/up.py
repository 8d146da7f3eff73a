#!/usr/bin/env python3
"""Benchmark of `carla-launch up` and `attach` (prints JSON). Needs root (a network namespace
box, a private dockerd), like the end-to-end test.

- up: against an already deployed box whose server is stopped and starts instantly (the
  stand-in), so the time is the tool's own overhead: status over SSH, start, RPC probe, sync,
  docker compose in a tmux pane. Goal: <= 3 s.
- attach: from no local session until both panes show output. Goal: <= 0.5 s.

    python -m bench.up [--runs N]

HOME and the XDG folders point into the temporary folder, as in the tests: the records `up`
writes (known servers, sessions) never land in the user's own ~/.local/state/carla-launch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.harness.agent import AGENT, VERSION_CALL
from tests.harness.dockerd import DockerDaemon
from tests.harness.netns_box import make_box


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    sock = f"cl-bench-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        # like tests/harness/cli.py's isolated HOME, for this process and every child
        os.environ.update(
            HOME=str(home),
            XDG_STATE_HOME=str(home / ".local" / "state"),
            XDG_CONFIG_HOME=str(home / ".config"),
        )
        run(args, Path(tmp), sock)


def run(args: argparse.Namespace, tmp: Path, sock: str) -> None:
    with (
        DockerDaemon(tmp / "docker") as docker,
        make_box(tmp) as box,
    ):
        project = box.dir / "proj" / "build"
        project.mkdir(parents=True)
        (project / "docker-compose.yaml").write_text(
            AGENT.format(image=docker.image(), call=VERSION_CALL)
        )
        box.preinstall()
        box.write_profile(compose={"dir": str(project), "simulator": "carla-simulator"})
        env = {**docker.environ(), "CARLA_LAUNCH_TMUX_SOCKET": sock}
        prof = str(box.profile_path)

        def cli(*a: str) -> subprocess.CompletedProcess:
            done = subprocess.run(
                [sys.executable, "-m", "carla_launcher", *a],
                cwd=box.dir,
                env=env,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            if done.returncode != 0:
                raise SystemExit(f"carla-launch {' '.join(a)} failed: {done.stderr}")
            return done

        cli("deploy", prof)  # writes the launch files; the package is already there
        ups, noop_ups, attaches = [], [], []
        for _ in range(args.runs):
            cli("down", prof, "--server")
            t = time.perf_counter()
            cli("up", prof, "--no-attach")
            ups.append(time.perf_counter() - t)
            t = time.perf_counter()
            cli("up", prof, "--no-attach")
            noop_ups.append(time.perf_counter() - t)
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
    print(
        json.dumps(
            {
                "runs": args.runs,
                "up_from_stopped_server_s_median": round(statistics.median(ups), 3),
                "up_from_stopped_server_s_max": round(max(ups), 3),
                "up_when_all_up_s_median": round(statistics.median(noop_ups), 3),
                "goal_up_s_max": 3.0,
                "attach_until_panes_show_output_s_median": round(statistics.median(attaches), 3),
                "attach_s_max": round(max(attaches), 3),
                "goal_attach_s_max": 0.5,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
