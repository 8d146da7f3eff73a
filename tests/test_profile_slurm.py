"""`server.mode: slurm` in a profile: the sbatch options of the jobs, validated where they
enter (file:line:field, exit code 2), and the settings that make no sense for a cluster
refused rather than ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from carla_launcher.errors import InputError
from carla_launcher.profile import parse_profile

BASE = """\
remote:
  host: login.cluster.example.edu
  user: jdoe
server:
  mode: slurm
  package:
    url: https://carla-releases.s3.us-east-005.backblazeb2.com/Linux/Leaderboard/CARLA_Leaderboard_2.0.tar.xz
    root: /scratch/jdoe/CARLA_Leaderboard_20
  slurm:
    jobs: 2
    partition: gpu-a100,gpu-v100
    account: lab-carla_2024
    time: 1-12:00:00
    sbatch:
      - --qos=normal
      - --constraint=a100|h100
      - --cpus-per-task=8
      - --mem=32G
compose:
  address: env
"""


def _load(text: str, tmp_path: Path) -> object:
    return parse_profile(text, tmp_path / "profiles" / "cluster.yaml")


def test_a_cluster_profile_as_real_clusters_write_it(tmp_path: Path) -> None:
    p = parse_profile(BASE, tmp_path / "profiles" / "cluster.yaml")
    s = p.server.slurm
    assert (s.jobs, s.partition, s.account, s.time, s.gres) == (
        2,
        "gpu-a100,gpu-v100",
        "lab-carla_2024",
        "1-12:00:00",
        "gpu:1",
    )
    assert s.sbatch == ("--qos=normal", "--constraint=a100|h100", "--cpus-per-task=8", "--mem=32G")
    assert p.remote.tunnel is True  # compute nodes are reached through the login node


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "words"),
    [
        ("    jobs: 2", "    jobs: 0", 10, "server.slurm.jobs", "between 1 and 64"),
        ("    time: 1-12:00:00", "    time: 12h", 13, "server.slurm.time", "time limit"),
        ("    time: 1-12:00:00", '    time: "1:00; touch /tmp/x"', 13, "server.slurm.time", ""),
        (
            "    partition: gpu-a100,gpu-v100",
            "    partition: gpu a100",
            11,
            "server.slurm.partition",
            "",
        ),
        ("    account: lab-carla_2024", "    account: '$(id)'", 12, "server.slurm.account", ""),
        (
            "      - --mem=32G",
            "      - --output=/tmp/x.log",
            18,
            "server.slurm.sbatch[3]",
            "is carla-launch's to set",
        ),
        (
            "      - --mem=32G",
            "      - -J mine",
            18,
            "server.slurm.sbatch[3]",
            "is carla-launch's to set",
        ),
        ("      - --mem=32G", "      - mem=32G", 18, "server.slurm.sbatch[3]", "starts with -"),
        (
            "      - --mem=32G",
            "      - -Jmine",
            18,
            "server.slurm.sbatch[3]",
            "-J is carla-launch's",
        ),
        (
            "      - --mem=32G",
            "      - --out=x.log",
            18,
            "server.slurm.sbatch[3]",
            "--output is carla-launch's",
        ),
        (
            "      - --mem=32G",
            "      - -M cluster2",
            18,
            "server.slurm.sbatch[3]",
            "-M is carla-launch's",
        ),
        (
            "      - --mem=32G",
            '      - "--mem=32G\\n#SBATCH --wrap=x"',
            18,
            "server.slurm.sbatch[3]",
            "",
        ),
        (
            "      - --mem=32G",
            """      - '--comment=say "hi"'""",
            18,
            "server.slurm.sbatch[3]",
            "without a double quote",
        ),
        ("  mode: slurm", "  mode: slurm\n  gpus: [0, 1]", 6, "server.gpus", "server.slurm.jobs"),
        ("  mode: slurm", "  mode: slurm\n  gpu: 1", 6, "server.gpu", "Slurm pick"),
        (
            "  user: jdoe",
            "  user: jdoe\n  tunnel: false",
            4,
            "remote.tunnel",
            "through an SSH tunnel",
        ),
        (
            "  host: login.cluster.example.edu",
            "  host: [login1, login2]",
            2,
            "remote.host",
            "one login node",
        ),
    ],
)
def test_what_a_cluster_cannot_take_is_one_line(
    tmp_path: Path, old: str, new: str, line: int, field: str, words: str
) -> None:
    assert old in BASE
    with pytest.raises(InputError) as e:
        parse_profile(BASE.replace(old, new), tmp_path / "profiles" / "cluster.yaml")
    msg = str(e.value)
    assert f"cluster.yaml:{line}: {field}: " in msg and words in msg, msg
    assert e.value.exit_code == 2


def test_slurm_settings_outside_slurm_mode_are_kept_but_unused(tmp_path: Path) -> None:
    """A profile switched back to package mode keeps its slurm section (no edit needed)."""
    p = parse_profile(BASE.replace("  mode: slurm", "  mode: package"), tmp_path / "p.yaml")
    assert p.server.mode == "package" and p.server.slurm.jobs == 2
    assert p.remote.tunnel is False
