"""The scripts of `server.mode: slurm` (`server/slurm.py`), run for real where Slurm is not
needed: the job's own part (its port on the node, where it says it runs, CARLA's command
line) in a real `sh`, and the squeue answers `status` reads. The whole loop runs against a
real Slurm in tests/stack/test_slurm_e2e.py."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from carla_launcher.profile import Slurm
from carla_launcher.server.launch import LaunchConfig, LaunchOrigin
from carla_launcher.server.slurm import (
    JOB_TARGET,
    job_words,
    parse_job,
    render_job_loop,
    render_job_script,
)

SLURM = Slurm(
    2, "gpu", "lab", "04:00:00", "gpu:1", 600, ("--qos=normal", "--comment=carla eval run 7")
)


def _config(tmp_path: Path, port: int, args: tuple[str, ...] = ()) -> LaunchConfig:
    root = tmp_path / "CARLA root"  # a space: every path is one quoted word
    root.mkdir()
    (root / "CarlaUE4.sh").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/argv"\n')
    (root / "CarlaUE4.sh").chmod(0o755)
    sdir = tmp_path / "state dir"
    sdir.mkdir()
    origin = LaunchOrigin(args, None, port, "on-failure", None)
    full = (*args, f"-carla-rpc-port={port}")
    return LaunchConfig(str(root), str(sdir), full, port, "on-failure", "pkg", origin)


def _free_triple() -> int:
    for base in range(21000, 30000, 3):
        socks = []
        try:
            for i in range(3):
                s = socket.socket()
                s.bind(("0.0.0.0", base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port triple")


def _run_job(cfg: LaunchConfig, job_id: str = "4242") -> subprocess.CompletedProcess[str]:
    script = render_job_script(cfg, SLURM)
    env = {**os.environ, "SLURM_JOB_ID": job_id, "SLURMD_NODENAME": "gpu-node-07"}
    env.pop("SLURM_JOB_GPUS", None)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.run(["sh", "-s"], input=script, env=env, capture_output=True, text=True)


def test_the_job_takes_the_next_free_triple_on_its_node_and_says_where(tmp_path: Path) -> None:
    port = _free_triple()
    cfg = _config(tmp_path, port, ("-RenderOffScreen", "-nosound", "-carla-rpc-port=1"))
    taken = socket.socket()
    taken.bind(("0.0.0.0", port + 1))  # another job on this node holds N+1
    taken.listen()
    try:
        done = _run_job(cfg)
    finally:
        taken.close()
    assert done.returncode == 0, done.stderr
    target = (Path(cfg.session_dir) / JOB_TARGET).read_text().split()
    assert target == ["4242", "gpu-node-07", str(port + 3)]
    argv = (Path(cfg.root) / "argv").read_text().splitlines()
    # the profile's args, its port flag replaced by the one the job chose on its node
    assert argv == ["-RenderOffScreen", "-nosound", f"-carla-rpc-port={port + 3}"]
    assert f"job 4242 on gpu-node-07: starting CARLA on port {port + 3}" in done.stdout


def test_the_job_asks_slurm_for_what_the_profile_says(tmp_path: Path) -> None:
    script = render_job_script(_config(tmp_path, 2000), SLURM)
    sbatch = [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]
    assert sbatch == [
        "#SBATCH --gres=gpu:1",
        "#SBATCH --ntasks=1",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --time=04:00:00",
        "#SBATCH --qos=normal",
        '#SBATCH --comment="carla eval run 7"',  # sbatch splits these lines at spaces
    ]
    assert script.index("#SBATCH") < script.index("set -u")  # sbatch reads them before code


def test_the_loop_is_valid_sh_and_carries_its_origin_for_drift(tmp_path: Path) -> None:
    cfg = _config(tmp_path, 2003, ("-quality-level=Low",))
    loop = render_job_loop(cfg, SLURM, "carla-1")
    assert subprocess.run(["sh", "-n"], input=loop, text=True).returncode == 0
    assert loop.splitlines()[1].startswith("# carla-launch-config: ")
    assert "NAME=carla-launch-carla-1" in loop
    # the job's script travels inside the loop: the deploy's digest covers both
    assert render_job_script(cfg, SLURM) in loop


@pytest.mark.parametrize(
    ("kv", "sections", "words"),
    [
        (
            {"job": "118", "node": "", "addr": ""},
            {"job": ["118|PENDING|Priority||4:00:00|gpu"], "queue": ["97", "118", "120"]},
            "job 118 pending (Priority), 2nd of 3 in partition gpu",
        ),
        (
            {"job": "118", "node": "gpu-node-07", "addr": "10.1.4.7", "job_port": "2003"},
            {"job": ["118|RUNNING|None|gpu-node-07|3:41:09|gpu"], "queue": []},
            "job 118 running on gpu-node-07, 3:41:09 left",
        ),
        (  # no --time and a partition without a limit
            {"job": "5", "node": "n1", "addr": "10.1.4.7", "job_port": "2000"},
            {"job": ["5|RUNNING|None|n1|UNLIMITED|gpu"], "queue": []},
            "job 5 running on n1, no time limit",
        ),
        (  # squeue forgot it: ended a while ago
            {"job": "96", "node": "gpu-node-02"},
            {"job": [], "queue": []},
            "job 96 ended",
        ),
    ],
)
def test_what_squeue_says_of_a_job_in_words(
    kv: dict[str, str], sections: dict[str, list[str]], words: str
) -> None:
    job = parse_job(kv, sections)
    assert job is not None and job_words(job) == words


def test_no_job_submitted_is_no_job() -> None:
    assert parse_job({"job": ""}, {"job": [], "queue": []}) is None


def test_an_edited_slurm_section_is_drift_that_up_and_server_start_apply(tmp_path: Path) -> None:
    """The sbatch options are on the launch script's config line, so `status` names an edit
    and `up`/`server start` redeploy it (the job is inside the loop)."""
    from dataclasses import replace

    from carla_launcher.profile import parse_profile
    from carla_launcher.server.drift import drift, profile_origin
    from carla_launcher.server.launch import parse_origin

    text = "remote:\n  host: login1\nserver:\n  mode: slurm\n  slurm:\n    time: '1:00:00'\n"
    before = parse_profile(text, tmp_path / "profiles" / "c.yaml")
    box_side = parse_origin(profile_origin(before).line())
    assert box_side is not None
    assert box_side.slurm == ("--gres=gpu:1", "--ntasks=1", "--time=1:00:00")
    edited = text.replace("'1:00:00'", "'4:00:00'\n    jobs: 2\n    partition: a100")
    after = profile_origin(parse_profile(edited, tmp_path / "profiles" / "c.yaml"))
    assert drift(after, box_side) == [
        "server.slurm: --partition=a100 added, --time: 1:00:00 -> 4:00:00",
    ]
    # the number of jobs is no field of a server's script: more jobs restart none of them
    assert drift(replace(after, slurm=box_side.slurm), box_side) == []
