"""The Slurm harness (tests/harness/slurm.py): what the `server.mode: slurm` tests rely on.

Everything runs for real: munged, slurmctld and slurmd inside a netns box, jobs submitted over
SSH to the box (the login node) as the server user, which each test makes the plain way
(`useradd` on the box) rather than through a deploy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import slurm
from tests.harness import slurm_machine as machine
from tests.harness.netns_box import PREFIX, Box, make_box
from tests.harness.polling import wait_for
from tests.harness.slurm import Cluster, slurm_missing
from tests.harness.standin_carla import standin_python

pytestmark = pytest.mark.root

# What a CARLA stand-in job does: keep its environment, say where it runs (each file whole
# once it is there), listen on port $1.
JOB = """#!/bin/sh
#SBATCH --job-name=standin
#SBATCH --output=standin-%j.out
cd "$HOME"
env > ".env-$SLURM_JOB_ID" && mv ".env-$SLURM_JOB_ID" "env-$SLURM_JOB_ID.txt"
echo "$(hostname) $SLURMD_NODENAME $SLURM_JOB_ID" > ".job-$SLURM_JOB_ID"
mv ".job-$SLURM_JOB_ID" "job-$SLURM_JOB_ID.txt"
exec python3 -m http.server "$1" --bind 0.0.0.0
"""


@pytest.fixture
def login(slurm_box: tuple[Box, Cluster]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`login(cmd, input=None)`: a command over SSH to the box as its server user, who has
    the stand-in job in ~/job.sh."""
    box, _ = slurm_box
    if standin_python() != "/usr/bin/python3":
        pytest.skip("needs /usr/bin/python3 that any user can run (the job's listener)")
    user = box.server_user
    box.run(f"useradd -m -s /bin/bash {user} && usermod -p '*' {user}")

    def ssh(cmd: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = ["ssh", "-F", str(box.ssh_config), "-o", "BatchMode=yes", "-T", "-l", user]
        return subprocess.run(
            [*argv, box.alias, cmd],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert ssh("cat > job.sh && chmod +x job.sh", input=JOB).returncode == 0
    return ssh


def submit(login: Callable[..., Any], *args: str) -> str:
    """sbatch over SSH; the job's id."""
    done = login("sbatch --parsable --gres=gpu:1 " + " ".join(map(shlex.quote, args)))
    assert done.returncode == 0, done.stderr
    return str(done.stdout.strip())


def state(cluster: Cluster, job_id: str) -> str:
    return cluster.job(job_id).get("JobState", "")


def get_ok(url: str, netns: str | None = None) -> bool:
    """An HTTP GET of `url` (from inside the namespace `netns`, or from here) gets 200."""
    curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url]
    ns = ["nsenter", f"--net=/var/run/netns/{netns}"] if netns else []
    done = subprocess.run([*ns, *curl], capture_output=True, text=True, check=False)
    return done.stdout == "200"


def answers(box: Box, port: int) -> bool:
    """The job's port answers inside the box's namespace (where the login node's sshd is)."""
    return get_ok(f"http://{box.address}:{port}/", box.netns)


def test_a_job_runs_as_its_user_on_the_node_and_is_reached_through_the_login_node(
    slurm_box: tuple[Box, Cluster], login: Callable[..., Any]
) -> None:
    box, cluster = slurm_box
    started = time.monotonic()
    job = submit(login, "job.sh", "2001")
    running = wait_for(
        lambda: [j for j in cluster.jobs(box.server_user) if j["state"] == "RUNNING"],
        10,
        lambda: f"job {job} RUNNING; squeue: {cluster.jobs()}",
    )
    print(f"sbatch to RUNNING: {time.monotonic() - started:.2f} s")  # measured, not asserted
    assert running == [{"id": job, "name": "standin", "state": "RUNNING", "node": cluster.node}]

    said = box.server_home / f"job-{job}.txt"
    wait_for(said.is_file, 10, f"{said} written by the job")
    assert said.read_text().split() == [socket.gethostname(), cluster.node, job]
    assert said.owner() == box.server_user  # the job ran as its submitter, in their home
    env = dict(
        line.split("=", 1)
        for line in (box.server_home / f"env-{job}.txt").read_text().splitlines()
        if "=" in line
    )
    assert env["SLURM_JOB_USER"] == box.server_user
    assert env["CUDA_VISIBLE_DEVICES"] == env["SLURM_JOB_GPUS"] == env["GPU_DEVICE_ORDINAL"]

    wait_for(lambda: answers(box, 2001), 10, "the job's port answering inside the box")
    # ... and through an SSH tunnel via the login node, as the agent reaches the server
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
    tunnel = subprocess.Popen(
        [
            *box.ssh_argv()[:-1],
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            f"127.0.0.1:{local}:127.0.0.1:2001",
            box.alias,
        ],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: get_ok(f"http://127.0.0.1:{local}/"),
            10,
            "the job's port through an SSH tunnel via the login node",
        )
    finally:
        tunnel.terminate()
        tunnel.wait(10)


def test_two_gpus_run_two_jobs_and_a_third_waits_for_resources(
    slurm_box: tuple[Box, Cluster], login: Callable[..., Any]
) -> None:
    box, cluster = slurm_box
    first, second = submit(login, "job.sh", "2001"), submit(login, "job.sh", "2002")
    wait_for(
        lambda: state(cluster, first) == state(cluster, second) == "RUNNING",
        10,
        lambda: f"jobs {first} and {second} RUNNING; squeue: {cluster.jobs()}",
    )
    third = submit(login, "job.sh", "2003")
    pending = f"squeue -h -j {third} -o '%T|%r'"
    wait_for(
        lambda: cluster.run(pending).stdout.strip() == "PENDING|Resources",
        10,
        lambda: f"job {third} PENDING (Resources): {cluster.run(pending).stdout.strip()}",
    )
    gpus = set()
    for job in (first, second):
        env = box.server_home / f"env-{job}.txt"
        wait_for(env.is_file, 10, f"{env} written by the job")
        gpus |= {line for line in env.read_text().splitlines() if line.startswith("SLURM_JOB_GPUS")}
    assert gpus == {"SLURM_JOB_GPUS=0", "SLURM_JOB_GPUS=1"}  # one GPU each, not the same one
    assert state(cluster, third) == "PENDING"


def test_scancel_ends_a_job_and_its_listener_and_the_waiting_job_starts(
    slurm_box: tuple[Box, Cluster], login: Callable[..., Any]
) -> None:
    box, cluster = slurm_box
    jobs = [submit(login, "job.sh", str(port)) for port in (2001, 2002, 2003)]
    wait_for(lambda: answers(box, 2001) and answers(box, 2002), 15, "two jobs listening")
    assert state(cluster, jobs[2]) == "PENDING"

    started = time.monotonic()
    assert login(f"scancel {jobs[0]}").returncode == 0
    wait_for(lambda: 2001 not in box.listening(), 10, "the cancelled job's listener gone")
    print(f"scancel to listener gone: {time.monotonic() - started:.2f} s")  # measured only
    wait_for(lambda: state(cluster, jobs[0]) == "CANCELLED", 10, f"job {jobs[0]} CANCELLED")
    wait_for(lambda: answers(box, 2003), 15, "the waiting job started on the freed GPU")
    assert state(cluster, jobs[2]) == "RUNNING"
    assert answers(box, 2002)  # the other job was left alone

    done = login("sbatch --parsable --wrap true")
    wait_for(lambda: state(cluster, done.stdout.strip()) == "COMPLETED", 10, "a job COMPLETED")


def etc_listing() -> dict[str, tuple[Any, ...]]:
    """/etc/slurm as (type, mode, owner, content hash or link target) per path; {} if absent."""
    out: dict[str, tuple[Any, ...]] = {}
    top = machine.ETC
    if not top.exists():
        return out
    for p in sorted([top, *top.rglob("*")]):
        st = p.lstat()
        if p.is_symlink():
            what = str(p.readlink())
        elif p.is_file():
            what = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            what = ""
        out[str(p)] = (st.st_mode, st.st_uid, st.st_gid, what)
    return out


def munged_pids() -> set[int]:
    return {pid for pid in machine.all_pids() if machine.alive(pid, "munged")}


def test_close_puts_etc_slurm_back_byte_for_byte_and_leaves_nothing_running(
    box_factory: Any,
) -> None:
    why = slurm_missing()
    if why:
        pytest.skip(why)
    conf = machine.ETC / "slurm.conf"
    admins = "# the administrator's\nClusterName=theirs\n"
    with slurm.machine_lock():  # no other test process's cluster writes /etc/slurm meanwhile
        before_munged = munged_pids()
        ours = not conf.exists()
        if ours:  # an administrator's slurm.conf (odd mode) where the cluster writes its own
            machine.ETC.mkdir(exist_ok=True)
            conf.write_text(admins)
            conf.chmod(0o600)
        try:
            before = etc_listing()
            box = box_factory()
            with Cluster(box) as cluster:
                assert "ClusterName=carla-test" in conf.read_text()  # ours, while it runs
                box.run(f"useradd -m -s /bin/bash {box.server_user}")
                job = box.run(
                    f"cd {box.server_home} && runuser -u {box.server_user} -- "
                    "sbatch --parsable --gres=gpu:1 --output=/dev/null --wrap 'sleep 300'"
                ).stdout.strip()
                wait_for(
                    lambda: state(cluster, job) == "RUNNING",
                    10,
                    lambda: f"job {job} RUNNING: {cluster.job(job)}",
                    cluster.logs,
                )
            assert etc_listing() == before
            if ours:
                assert conf.read_text() == admins
            assert not machine.slurm_daemons(), "a Slurm daemon or job step is left running"
            assert not box.server_processes(), "a job's process is left running"
            assert munged_pids() == before_munged  # ours stopped; one that ran before runs
        finally:
            if ours:
                conf.unlink(missing_ok=True)


CRASHING = """
import sys, time
from pathlib import Path
from tests.harness.netns_box import make_box
from tests.harness.slurm import Cluster
box = make_box(Path(sys.argv[1]))
cluster = Cluster(box).start()
print(box.n, cluster.conf_dir, flush=True)
time.sleep(600)
"""


def test_a_killed_run_is_cleaned_up_by_the_next_cluster(box_factory: Any, tmp_path: Path) -> None:
    """A test process killed with its cluster up leaves daemons, munged and our /etc/slurm
    behind; the next cluster ends them and puts /etc/slurm back before it starts."""
    why = slurm_missing()
    if why:
        pytest.skip(why)
    with slurm.machine_lock():
        before, before_munged = etc_listing(), munged_pids()
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING, str(tmp_path / "crashed")],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()  # the child's cluster is up (or the child died)
    child.kill()
    _, err = child.communicate(timeout=10)
    assert line.split()[:1] != [] and line.split()[0].isdigit(), f"no cluster came up: {err}"
    dead, left_dir = int(line.split()[0]), Path(line.split()[1])
    try:
        left = [p for p in machine.slurm_daemons() if machine.same_netns(p, f"{PREFIX}{dead}")]
        assert left, "the killed run's daemons should still run"
        with slurm.machine_lock():
            with Cluster(box_factory()) as cluster:
                assert not set(left) & set(machine.slurm_daemons())
                assert "ClusterName=carla-test" in (machine.ETC / "slurm.conf").read_text()
                cluster.run("sinfo")
            assert etc_listing() == before
            assert not machine.slurm_daemons()
            assert munged_pids() == before_munged
            assert not left_dir.exists()
    finally:  # the killed run's box: its namespace, users, links (unless another test
        # process has claimed its number since, which cleans it up the same way)
        with contextlib.suppress(RuntimeError):
            make_box(tmp_path / "again", n=dead).close()
