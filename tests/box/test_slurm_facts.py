"""The `slurm` fact of a login node (`box/facts.py`): the parser over sinfo's and sbatch's
real outputs, and the snippet run for real in a POSIX sh (Slurm's client commands are
installed here; a cluster that answers them is tests/doctor/test_doctor_slurm.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from carla_launcher.box.facts import Partition, SlurmFacts, facts_script, parse_facts, parse_slurm

# `sinfo -h -o '%P|%a|%l|%D|%G'` on a cluster with two kinds of GPU node in its default
# partition (one line per kind), a short debug partition, CPU-only nodes (gres `(null)`), a
# partition drained for maintenance and an inactive one; `sbatch --version` of upstream Slurm.
CLUSTER = """\
found=sbatch
found=squeue
found=scancel
found=scontrol
found=sinfo
version=slurm 23.02.7
partition=gpu*|up|2-00:00:00|12|gpu:a100:4(S:0-1)
partition=gpu*|up|2-00:00:00|4|gpu:v100:2(S:0)
partition=debug|up|30:00|2|gpu:a100:1(S:0)
partition=cpu|up|7-00:00:00|120|(null)
partition=maint|drain|infinite|3|gpu:h100:8(S:0-3),mps:800
partition=long|inactive|infinite|8|gpu:a100:4(S:0-1)
"""


def test_partitions_of_a_cluster_are_joined_per_partition() -> None:
    s = parse_slurm(CLUSTER.splitlines())
    assert s.found == ("sbatch", "squeue", "scancel", "scontrol", "sinfo")
    assert s.version == "slurm 23.02.7" and s.sinfo_error is None
    assert s.partitions == (
        Partition("gpu", True, "up", "2-00:00:00", 16, ("gpu:a100:4(S:0-1)", "gpu:v100:2(S:0)")),
        Partition("debug", False, "up", "30:00", 2, ("gpu:a100:1(S:0)",)),
        Partition("cpu", False, "up", "7-00:00:00", 120, ()),
        Partition("maint", False, "drain", "infinite", 3, ("gpu:h100:8(S:0-3)", "mps:800")),
        Partition("long", False, "inactive", "infinite", 8, ("gpu:a100:4(S:0-1)",)),
    )


def test_the_test_clusters_own_answer() -> None:
    """What the harness's one-node cluster (Debian's Slurm 22.05) printed, section and all."""
    out = (
        "##carla-launch## id\n1001\nalice\n##carla-launch## rc 0\n"
        "##carla-launch## slurm\nfound=sbatch\nfound=squeue\nfound=scancel\nfound=scontrol\n"
        "found=sinfo\nversion=slurm-wlm 22.05.8\npartition=gpu*|up|infinite|1|gpu:2\n"
        "##carla-launch## rc 0\n"
    )
    assert parse_facts(out).slurm == SlurmFacts(
        ("sbatch", "squeue", "scancel", "scontrol", "sinfo"),
        "slurm-wlm 22.05.8",
        (Partition("gpu", True, "up", "infinite", 1, ("gpu:2",)),),
    )


def test_sinfo_that_fails_keeps_its_last_line() -> None:
    s = parse_slurm(
        [
            "found=sbatch",
            "found=sinfo",
            "sinfo_error=slurm_load_partitions: Unable to contact slurm controller "
            "(connect failure)",
        ]
    )
    assert s.partitions == () and s.version is None
    assert s.sinfo_error == (
        "slurm_load_partitions: Unable to contact slurm controller (connect failure)"
    )


def test_not_asked_is_none_and_asked_on_a_box_without_slurm_is_empty() -> None:
    assert parse_facts("##carla-launch## id\n0\nroot\n##carla-launch## rc 0\n").slurm is None
    out = "##carla-launch## slurm\n\n##carla-launch## rc 0\n"
    assert parse_facts(out).slurm == SlurmFacts()


def _run(path: str) -> tuple[str, SlurmFacts | None]:
    """The `slurm` fact's script in a real sh whose PATH is `path` (and what the prologue and
    the loop's SLURM_PATH add)."""
    done = subprocess.run(
        ["/bin/sh", "-s"],
        input=facts_script(["slurm"]),
        capture_output=True,
        text=True,
        env={"PATH": path, "HOME": os.environ.get("HOME", "/root"), "LC_ALL": "C"},
        timeout=60,
        check=False,
    )
    return done.stdout, parse_facts(done.stdout).slurm


def test_the_snippet_is_silent_where_slurm_is_absent(tmp_path: Path) -> None:
    if any(Path(d, "sbatch").exists() for d in ("/usr/local/bin", "/opt/slurm/bin", "/sbin")):
        pytest.skip("this machine has sbatch where the loop's PATH addition finds it")
    empty = tmp_path / "bin"
    empty.mkdir()
    stdout, s = _run(str(empty))
    assert s == SlurmFacts(), stdout
    assert "found=" not in stdout and "sinfo" not in stdout


def test_the_snippet_names_the_commands_it_finds(tmp_path: Path) -> None:
    """A login node whose PATH has only sbatch and squeue (the others live elsewhere)."""
    real = {t: shutil.which(t) for t in ("sbatch", "squeue", "timeout", "head")}
    if not all(real.values()):
        pytest.skip("needs sbatch and squeue (Debian package slurm-client; tests/setup)")
    if any(Path(d, "sinfo").exists() for d in ("/usr/local/bin", "/opt/slurm/bin", "/sbin")):
        pytest.skip("this machine has sinfo where the loop's PATH addition finds it")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, target in real.items():
        (bin_dir / name).symlink_to(str(target))
    stdout, s = _run(str(bin_dir))
    assert s is not None and s.found == ("sbatch", "squeue"), stdout
    assert s.partitions == () and s.sinfo_error is None  # no sinfo: not asked, not an error
