"""Deploy timings on network-namespace boxes (needs root, like the tests); prints JSON.

    python -m bench.deploy [--runs N]

- first deploy of one fresh box (stand-in package over HTTP) and the no-op re-deploy after it
  (`carla-launch deploy`, as a user runs it: CLI process, pyinfra child, facts, plan, probe);
- the same no-op run as a plain `pyinfra` CLI run of the same operations (same fact script, same
  seven steps from the same plan), and the ratio of the two;
- a no-op deploy of a 4-box pool against the same for one of those boxes (parallel SSH).
- how long a deploy to an address nobody answers at takes to fail (connect_timeout 2 s).

Goals (issue 4): no-op re-deploy <= 3 s on loopback and within 1.1x of plain pyinfra; 4 boxes
within 1.5x of one.
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
from pathlib import Path

from bench import REPO
from tests.harness.netns_box import Box, make_box, missing

PLAIN_DEPLOY = '''\
"""The same operations as `carla-launch deploy`, as a plain pyinfra deploy file."""
import os
from pathlib import Path

from pyinfra import host

from carla_launcher.profile import read_profile
from carla_launcher.deploy.inputs import facts_script_for, local_inputs
from carla_launcher.deploy.ops import BoxFactsFact, step
from carla_launcher.deploy.plan import STEPS, plan_host

profile = read_profile(Path(os.environ["CL_PROFILE"]))
srv = profile.server
local = local_inputs(profile)
script = facts_script_for(profile, local.source.archive_name)
facts = host.get_fact(BoxFactsFact, script=script, packages=srv.os_packages)
plan = plan_host(profile, host.name, facts, local, None)
for name, s in zip(STEPS, plan.steps):
    step(name=name, script=s.script, why=s.why, upload=s.upload, after_upload=s.after_upload)
'''

PLAIN_INVENTORY = """\
import os
from pathlib import Path

from carla_launcher.profile import read_profile
from carla_launcher.deploy.inputs import make_inventory_data

profile = read_profile(Path(os.environ["CL_PROFILE"]))
hosts = [(h, make_inventory_data(profile, False)) for h in profile.remote.hosts]
"""


def run(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr}\n{done.stdout}")
    return elapsed


def deploy(profile: Path) -> float:
    return run([sys.executable, "-m", "carla_launcher", "deploy", str(profile)], cwd=profile.parent)


def median(fn, runs: int) -> float:  # type: ignore[no-untyped-def]
    return round(statistics.median(fn() for _ in range(runs)), 3)


def pool_profile(boxes: list[Box], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "pool_ssh_config"
    config.write_text("".join(b.ssh_config.read_text() for b in boxes))
    pkg = boxes[0].profile_data["server"]["package"]
    hosts = ", ".join(b.alias for b in boxes)
    p = folder / "profiles" / f"pool{len(boxes)}.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(
        f"remote:\n  host: [{hosts}]\n  ssh_config: {config}\n  connect_timeout: 5\n"
        "server:\n  os_packages: [tmux, curl]\n  ready_timeout: 30\n"
        f"  package: {{url: '{pkg['url']}', sha256: {pkg['sha256']}}}\n"
    )
    return p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    why = missing()
    if why:
        print(json.dumps({"skipped": why}))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    os.environ["HOME"] = str(tmp / "home")
    os.environ["XDG_STATE_HOME"] = str(tmp / "home" / ".local" / "state")
    boxes: list[Box] = []
    try:
        one = make_box(tmp / "one")
        boxes.append(one)
        one.install_standin()
        first = round(deploy(one.profile_path), 3)
        noop = median(lambda: deploy(one.profile_path), args.runs)
        # giving up on a host nobody answers at: connect_timeout 2 s plus start-up (was a
        # wall-clock assertion in tests/deploy/test_deploy.py; the anchor is the connect_timeout)
        remote = dict(one.profile_data["remote"])
        one.write_profile(remote={"host": f"10.77.{one.n}.99", "connect_timeout": 2})
        t = time.perf_counter()
        unreachable = one.deploy(check=False, timeout=60)
        unreachable_s = round(time.perf_counter() - t, 3)
        assert unreachable.returncode == 1, unreachable.stderr
        one.write_profile(remote=remote)  # back to the reachable box

        plain_dir = tmp / "plain"
        plain_dir.mkdir()
        (plain_dir / "deploy.py").write_text(PLAIN_DEPLOY)
        (plain_dir / "inventory.py").write_text(PLAIN_INVENTORY)
        env = dict(
            os.environ,
            CL_PROFILE=str(one.profile_path),
            PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        )
        plain_argv = [sys.executable, "-m", "pyinfra", "-y", "inventory.py", "deploy.py"]
        run(plain_argv, env=env, cwd=plain_dir)  # warm-up (and proof that it is a no-op)
        plain = median(lambda: run(plain_argv, env=env, cwd=plain_dir), args.runs)

        pool = [make_box(tmp / f"pool{i}", login="user") for i in range(4)]
        boxes += pool
        pool[0].install_standin()
        for b in pool[1:]:
            b.use_package_of(pool[0])
        for b in pool:
            b.preinstall()
        four = pool_profile(pool, tmp / "pool")
        single = pool_profile(pool[:1], tmp / "single")
        deploy(four)  # first deploy of all four: servers up
        noop_one = median(lambda: deploy(single), max(3, args.runs // 2))
        noop_four = median(lambda: deploy(four), max(3, args.runs // 2))
    finally:
        for b in boxes:
            b.close()
    result = {
        "first_deploy_s": first,
        "noop_redeploy_s": noop,
        "plain_pyinfra_noop_s": plain,
        "noop_vs_plain_pyinfra_ratio": round(noop / plain, 3),
        "noop_1_box_s": noop_one,
        "noop_4_boxes_s": noop_four,
        "boxes_4_vs_1_ratio": round(noop_four / noop_one, 3),
        "unreachable_host_fails_s": unreachable_s,
        "unreachable_connect_timeout_s": 2,
        "runs": args.runs,
        "goals": {
            "noop_redeploy_s": 3.0,
            "unreachable_host_fails_s": 2 + 8,
            "noop_vs_plain_pyinfra_ratio": 1.1,
            "boxes_4_vs_1_ratio": 1.5,
        },
    }
    result["met"] = {k: result[k] <= v for k, v in result["goals"].items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
