"""`doctor P` for `server.mode: slurm`: the box is the cluster's login node, which has no GPU.

The checks as pure functions over the `slurm` fact of realistic login nodes (sinfo's and
sbatch's own output), then `doctor --json` against a real one-node cluster
(tests/harness/slurm.py: Debian's slurmctld, slurmd and munge in a network-namespace box
whose sshd is the login node).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from carla_launcher.box.facts import BoxFacts, parse_slurm
from carla_launcher.doctor.checks_box import box_checks
from carla_launcher.doctor.checks_slurm import slurm_check
from carla_launcher.doctor.model import DIST, Check
from carla_launcher.profile import Profile, read_profile
from tests.box.test_slurm_facts import CLUSTER
from tests.harness.netns_box import Box
from tests.harness.slurm import Cluster

TOOLS = ["found=sbatch", "found=squeue", "found=scancel", "found=scontrol", "found=sinfo"]


@pytest.fixture
def slurm_profile(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A profile in slurm mode with these `server.slurm` lines (YAML, indented by 4)."""

    def make(*slurm: str) -> Profile:
        p = tmp_path / "profiles" / "cluster.yaml"
        p.parent.mkdir(exist_ok=True)
        lines = "".join(f"    {s}\n" for s in slurm)
        p.write_text(
            "remote:\n  host: login.cluster\nserver:\n  mode: slurm\n"
            + (f"  slurm:\n{lines}" if lines else "")
            + "compose:\n  address: env\n"
        )
        return read_profile(p)

    return make


def check(profile: Profile, *lines: str) -> Check:
    return slurm_check(BoxFacts(slurm=parse_slurm(list(lines))), profile, "login")


def test_all_good_names_version_partition_limit_and_gres(slurm_profile) -> None:  # type: ignore[no-untyped-def]
    c = check(slurm_profile("time: '1-00:00:00'"), *CLUSTER.splitlines())
    assert c.status == "ok", c
    assert c.detail == (
        "slurm 23.02.7; partition gpu (the default): time limit 2-00:00:00, 16 nodes, "
        "gpu:a100:4(S:0-1), gpu:v100:2(S:0)"
    )
    typed = check(slurm_profile("partition: debug", "gres: gpu:a100:1"), *CLUSTER.splitlines())
    assert typed.status == "ok" and "partition debug: time limit 30:00, 2 nodes" in typed.detail


@pytest.mark.parametrize(
    ("found", "missing"),
    [
        ([], "sbatch, squeue, scancel, scontrol not found on the login node's PATH"),
        (
            ["found=squeue", "found=scancel", "found=scontrol", "found=sinfo"],
            "sbatch not found on the login node's PATH (found: squeue, scancel, scontrol)",
        ),
    ],
)
def test_missing_commands_fail_and_say_how_to_get_them(  # type: ignore[no-untyped-def]
    slurm_profile, found: list[str], missing: str
) -> None:
    c = check(slurm_profile(), *found)
    assert c.status == "failing" and c.blocks == DIST
    assert c.detail == missing
    assert "module load slurm" in c.fix and "~/.bashrc" in c.fix


def test_an_unknown_partition_fails_and_lists_the_clusters(slurm_profile) -> None:  # type: ignore[no-untyped-def]
    c = check(slurm_profile("partition: gpus"), *CLUSTER.splitlines())
    assert c.status == "failing" and c.blocks == DIST
    assert c.detail == (
        "server.slurm.partition gpus: no such partition; the cluster has gpu (the default), "
        "debug, cpu, maint, long"
    )
    assert c.fix == "set server.slurm.partition to one of them, or null for the default (gpu)"


def test_sinfo_that_cannot_reach_the_controller_fails(slurm_profile) -> None:  # type: ignore[no-untyped-def]
    c = check(
        slurm_profile(),
        *TOOLS,
        "sinfo_error=slurm_load_partitions: Unable to contact slurm controller (connect failure)",
    )
    assert c.status == "failing"
    assert c.detail.endswith("sinfo failed: slurm_load_partitions: Unable to contact slurm "
                             "controller (connect failure)")  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "status", "words"),
    [
        ([*TOOLS[:4], "version=slurm 23.02.7"], "warning", "slurm 23.02.7; sinfo not found, so"),
        (TOOLS, "failing", "Slurm (version unknown); sinfo lists no partition you may use"),
        ([*TOOLS, "partition=a|up|1:00:00|2|gpu:1", "partition=b|up|1:00:00|2|gpu:1"], "failing",
         "server.slurm.partition is null and the cluster has no default partition"),
    ],
)  # fmt: skip
def test_what_sinfo_does_not_say_is_not_taken_as_good(  # type: ignore[no-untyped-def]
    slurm_profile, lines: list[str], status: str, words: str
) -> None:
    c = check(slurm_profile(), *lines)
    assert c.status == status and c.detail.startswith(words), c


@pytest.mark.parametrize(
    ("partition", "words"),
    [
        ("maint", "partition maint is drain: Slurm refuses new jobs until it is up"),
        ("long", "partition long is inactive: Slurm refuses new jobs until it is up"),
    ],
)
def test_a_partition_that_takes_no_jobs_warns(  # type: ignore[no-untyped-def]
    slurm_profile, partition: str, words: str
) -> None:
    c = check(slurm_profile(f"partition: {partition}"), *CLUSTER.splitlines())
    assert c.status == "warning" and c.detail == words


def test_the_default_partition_down_warns_too(slurm_profile) -> None:  # type: ignore[no-untyped-def]
    c = check(slurm_profile(), *TOOLS, "partition=batch*|down|infinite|4|gpu:4")
    assert c.status == "warning"
    assert c.detail == "partition batch is down: its jobs queue but do not start until it is up"


def test_a_time_over_the_partitions_limit_warns(slurm_profile) -> None:  # type: ignore[no-untyped-def]
    c = check(slurm_profile("partition: debug", "time: '1:00:00'"), *CLUSTER.splitlines())
    assert c.status == "warning"
    assert c.detail == (
        "server.slurm.time 1:00:00 is over the time limit of partition debug (30:00): the jobs "
        "would stay pending (PartitionTimeLimit)"
    )
    assert c.fix.startswith("set server.slurm.time to at most 30:00")
    # 30 minutes written as MINUTES:SECONDS, and no limit at all, are within it
    within = check(slurm_profile("partition: debug", "time: '30:00'"), *CLUSTER.splitlines())
    assert within.status == "ok", within
    # sbatch takes the first of several partitions that can run the job: maint has no limit
    either = check(
        slurm_profile("partition: gpu,maint", "time: '5-00:00:00'"), *CLUSTER.splitlines()
    )
    assert either.status == "ok", either


def test_no_node_with_the_gres_the_jobs_ask_for_warns(slurm_profile) -> None:  # type: ignore[no-untyped-def]
    cpu = check(slurm_profile("partition: cpu"), *CLUSTER.splitlines())
    assert cpu.status == "warning"
    assert cpu.detail == (
        "server.slurm.gres asks for gpu, and no node of partition cpu has it (their gres: none): "
        "sbatch refuses such jobs"
    )
    assert cpu.fix == "set server.slurm.partition to gpu or debug (they have gpu)"  # the ones up
    h100 = check(slurm_profile("gres: gpu:h100:1"), *CLUSTER.splitlines())
    assert h100.status == "warning" and h100.detail == (
        "server.slurm.gres asks for gpu:h100, and no node of partition gpu has it (their gres: "
        "gpu:a100:4(S:0-1), gpu:v100:2(S:0)): sbatch refuses such jobs"
    )
    assert h100.fix == "set server.slurm.partition to maint (they have gpu:h100)"


def test_a_login_node_gets_no_gpu_checks(slurm_profile) -> None:  # type: ignore[no-untyped-def]
    """What the doctor's round trip printed on a login node without nvidia-smi or Vulkan."""
    out = (
        "##carla-launch## id\n1001\nalice\n##carla-launch## rc 0\n"
        "##carla-launch## slurm\n" + CLUSTER + "##carla-launch## rc 0\n"
    )
    checks = box_checks(slurm_profile(), "login", 0, out, "")
    assert [(c.name, c.status) for c in checks] == [
        ("box reachable", "ok"),
        ("box host key", "ok"),
        ("box user", "ok"),
        ("box GPUs", "ok"),
        ("box Slurm", "ok"),
        ("box disk", "warning"),  # `disk` not in this answer
        ("box ports", "ok"),
        ("box package", "warning"),  # not installed yet
    ]
    assert "the GPUs are the compute nodes'" in checks[3].detail


# -- a real cluster ------------------------------------------------------------------------------
def box_checks_of(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    from tests.commands.test_json_outputs import checked

    assert done.stdout.strip(), done.stderr
    return {c["name"]: c for c in checked("doctor", done.stdout)["checks"] if c["host"]}


@pytest.mark.root
def test_doctor_on_a_real_login_node(slurm_box: tuple[Box, Cluster]) -> None:
    box, cluster = slurm_box
    box.write_profile(
        server={"mode": "slurm", "slurm": {"partition": cluster.partition}},
        compose={"address": "env"},
    )
    checks = box_checks_of(box.cli("doctor", str(box.profile_path), "--json"))
    slurm = checks["box Slurm"]
    assert slurm["status"] == "ok", slurm
    assert (
        f"partition {cluster.partition} (the default): time limit infinite, 1 node, gpu:2"
        in (slurm["detail"])
    )
    assert slurm["detail"].startswith("slurm")  # the version sbatch printed
    assert "box GPU driver" not in checks and "box Vulkan" not in checks
    assert checks["box GPUs"]["status"] == "ok"
    assert not [c for c in checks.values() if c["status"] == "failing"], checks

    box.write_profile(server={"slurm": {"partition": "nope"}})
    nope = box_checks_of(box.cli("doctor", str(box.profile_path), "--json"))["box Slurm"]
    assert nope["status"] == "failing" and nope["blocks"] == ["distributed"]
    assert nope["detail"] == (
        f"server.slurm.partition nope: no such partition; the cluster has {cluster.partition} "
        "(the default)"
    )

    # an admin drains the partition and gives it a 30-minute limit; the jobs ask for an hour
    cluster.run(f"scontrol update partitionname={cluster.partition} state=drain MaxTime=30")
    box.write_profile(server={"slurm": {"partition": None, "time": "1:00:00"}})
    drained = box_checks_of(box.cli("doctor", str(box.profile_path), "--json"))["box Slurm"]
    assert drained["status"] == "warning", drained
    assert drained["detail"] == (
        f"partition {cluster.partition} is drain: Slurm refuses new jobs until it is up; "
        f"server.slurm.time 1:00:00 is over the time limit of partition {cluster.partition} "
        "(30:00): the jobs would stay pending (PartitionTimeLimit)"
    )


def test_a_login_shell_that_exits_early_is_said_once(slurm_profile) -> None:  # type: ignore[no-untyped-def]
    """~/.bashrc that runs `exit` (some clusters' do, for non-interactive logins): no section."""
    checks = box_checks(slurm_profile(), "login", 0, "Welcome to the cluster\n", "")
    assert [(c.name, c.status) for c in checks][-1] == ("box facts", "failing")
    assert "box Slurm" not in [c.name for c in checks]
