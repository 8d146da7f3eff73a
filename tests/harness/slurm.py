"""A real one-node Slurm cluster inside a netns test box: the box's sshd is the login node.

    from tests.harness.slurm import Cluster, slurm_missing   # `slurm_box`: a plugin fixture

    def test_something(slurm_box):
        box, cluster = slurm_box            # a fresh box (root login) and its running cluster
        cluster.node, cluster.partition     # "cl-box-N" (NodeName), "gpu" (Default=YES)
        cluster.node_address                # box.address: where the node's jobs listen
        cluster.run("squeue -h")            # as root inside the box's namespace
        cluster.jobs(user="clboxN")         # [{"id", "name", "state", "node"}, ...] from squeue
        cluster.job("3")["JobState"]        # `scontrol show job -o 3` as fields ({} once purged)
        # over SSH to the box, as any user: `sbatch --gres=gpu:1 job.sh` runs within ~1 s

`Cluster(box, gpus=2, min_job_age=30)` is a context manager (or `.start()` / `.close()`);
`conf_dir` holds its slurm.conf, gres.conf, state, spool, logs and the GPU files (`gpu_files`);
`logs()` the tail of slurmctld's and slurmd's logs; `wait_idle()` waits for the node.
`machine_lock()`: what a test holds while it prepares or compares /etc/slurm around a cluster.

Debian 12's Slurm 22.05 (packages slurmctld, slurmd, slurm-client, munge), run like this:
- slurmctld and `slurmd -N <node>` run inside the box's network namespace, entered with
  `nsenter --net=/var/run/netns/NS` (`ip netns exec` remounts /sys, and slurmd then finds no
  cgroup file system), so jobs run there too: a job listening on 0.0.0.0 answers at
  `box.address`, i.e. to the box's sshd and through an SSH tunnel via the login node. The
  namespace shares the file system: a job writes into its user's home as on a shared FS. A job
  runs as its submitter; `hostname` in it is this machine's, $SLURMD_NODENAME the node's name.
- Slurm's config and munge are machine-wide (how: tests/harness/slurm_machine.py): while a
  cluster runs, /etc/slurm holds our slurm.conf and gres.conf, put back byte for byte on
  `close()` (or by the next cluster, after a killed run, which also ends what that run left);
  one cluster at a time on this machine (a second test process waits); munged is used if one
  answers, else started and stopped again on close.
- GPUs are device files under `conf_dir/dev` (gres.conf `File=`), made with /dev/null's numbers
  (1:3): Slurm drops plain files (it wants a character or block device, and then sets no GPU
  variable), so with these a job sees CUDA_VISIBLE_DEVICES, GPU_DEVICE_ORDINAL,
  ROCR_VISIBLE_DEVICES, ZE_AFFINITY_MASK and SLURM_JOB_GPUS (its GPU's index, 0 or 1) and
  SLURM_GPUS_ON_NODE=1, as on a real cluster.
- Tuned for tests: slurmctld starts batch jobs on its once-a-second background pass
  (`batch_sched_delay=0`; Slurm's default waits 3 s, and slurmctld reads the setting on its
  first pass, so `start()` returns after that pass), so a job runs 0.3-1 s after `sbatch`; a
  job that ends frees its GPU for a waiting job at once. `KillWait=2`: scancel ends a job within a
  fraction of a second (SIGTERM, SIGKILL after 2 s). `MinJobAge` (30 s) keeps an ended job in
  `scontrol show job` (then: "Invalid job id specified", exit 1). `CR_Core`: memory is not a
  consumable (each job would otherwise hold the whole node); CPUs (2 per GPU) do not run out
  before GPUs, so a job beyond the GPUs waits with Reason=Resources.

`slurm_missing()` says why a cluster cannot run here (for pytest.skip): not root, a binary
missing (naming its Debian package), no netns boxes, or a Slurm daemon of the machine running.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import netns_box
from tests.harness import slurm_machine as machine
from tests.harness.netns_box import Box
from tests.harness.polling import wait_for
from tests.harness.slurm_machine import SBIN
from tests.harness.slurm_machine import machine_lock as machine_lock  # part of this API

PARTITION = "gpu"
UP_TIMEOUT = 20.0

NEEDED = (
    ("slurmctld", "slurmctld"),
    ("slurmd", "slurmd"),
    ("slurmstepd", "slurmd"),
    ("sbatch", "slurm-client"),
    ("squeue", "slurm-client"),
    ("scontrol", "slurm-client"),
    ("sinfo", "slurm-client"),
    ("scancel", "slurm-client"),
    ("munged", "munge"),
    ("munge", "munge"),
    ("unmunge", "munge"),
    ("nsenter", "util-linux"),
)


def slurm_missing() -> str | None:
    """Why a cluster cannot run here (None: it can), naming what is missing."""
    if os.geteuid() != 0:
        return "needs root (a Slurm cluster: munged, slurmctld, slurmd, /etc/slurm)"
    for tool, package in NEEDED:
        if shutil.which(tool, path=SBIN) is None:
            return f"needs {tool} (Debian package {package}; tests/setup installs it)"
    if not Path("/etc/munge/munge.key").is_file():
        return "needs /etc/munge/munge.key (reinstall the Debian package munge)"
    why = netns_box.missing()
    if why:
        return why
    others = [pid for pid in machine.slurm_daemons() if not machine.ours(pid)]
    if others:
        return (
            f"a Slurm daemon of this machine runs (pid {others[0]}): "
            "its /etc/slurm must not be replaced by a test"
        )
    return None


def conf_text(
    *,
    controller: str,
    node: str,
    address: str,
    gpus: int,
    folder: Path,
    min_job_age: int,
) -> str:
    """slurm.conf for one node `node` at `address` with `gpus` GPUs, state under `folder`."""
    cpus = max(2, 2 * gpus)  # GPUs, not CPUs, are what runs out (config_overrides: any machine)
    return "\n".join(
        [
            "# carla-launcher tests: a one-node cluster in a netns box (tests/harness/slurm.py)",
            "ClusterName=carla-test",
            f"SlurmctldHost={controller}({address})",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=batch_sched_delay=0",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SlurmdParameters=config_overrides",
            "GresTypes=gpu",
            "ReturnToService=2",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "PropagateResourceLimits=NONE",
            "KillWait=2",
            f"MinJobAge={min_job_age}",
            "InactiveLimit=0",
            "SlurmdTimeout=30",
            "SlurmctldTimeout=30",
            "MessageTimeout=5",
            f"StateSaveLocation={folder / 'state'}",
            f"SlurmdSpoolDir={folder / 'spool'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"NodeName={node} NodeAddr={address} CPUs={cpus} Gres=gpu:{gpus} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def gres_text(node: str, devices: list[Path]) -> str:
    """gres.conf: one `File=` line per GPU (without File= the node goes INVAL)."""
    return "".join(f"NodeName={node} Name=gpu File={d}\n" for d in devices)


def parse_jobs(out: str) -> list[dict[str, str]]:
    """squeue -h -o '%i|%j|%T|%N' -> [{"id", "name", "state", "node"}] (a name may hold '|')."""
    jobs = []
    for line in out.splitlines():
        if not line.strip():
            continue
        job_id, rest = line.split("|", 1)
        name, state, node = rest.rsplit("|", 2)
        jobs.append({"id": job_id, "name": name, "state": state, "node": node})
    return jobs


def parse_show(out: str) -> dict[str, str]:
    """`scontrol show job -o ID` -> its Key=Value fields. A word that does not start with a
    key (`Command=/x/job.sh 2001`) belongs to the value before it."""
    fields: dict[str, str] = {}
    key = ""
    for word in out.strip().split(" "):
        k, sep, v = word.partition("=")
        if sep and _KEY.fullmatch(k):
            key = k
            fields[key] = v
        elif key:
            fields[key] += " " + word
    return fields


_KEY = re.compile(r"[A-Z][A-Za-z0-9_:/]*")  # JobState, CPUs/Task, ReqB:S:C:T, AllocNode:Sid


class Cluster:
    """slurmctld + slurmd (one node, `gpus` GPUs) inside `box`'s namespace; a context manager.

    Attributes: `node`, `node_address`, `partition`, `conf_dir`, `gpu_files`."""

    def __init__(self, box: Box, gpus: int = 2, *, min_job_age: int = 30) -> None:
        self.box = box
        self.gpus = gpus
        self.min_job_age = min_job_age
        self.node = box.alias  # NodeName: cl-box-N
        self.node_address = box.address
        self.partition = PARTITION
        self.conf_dir = Path()
        self.gpu_files: list[Path] = []
        self._locked = False
        self._saved = False
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._munged: int | None = None  # pid of the munged we started

    # -- starting --------------------------------------------------------------------------------
    def start(self) -> Cluster:
        """Take the machine's cluster lock, restore a crashed run's leftovers, then munge,
        /etc/slurm, slurmctld, slurmd; return when the node is idle."""
        try:
            if _OPEN:
                raise RuntimeError("a Cluster is already open in this process (one per machine)")
            machine.acquire()
            self._locked = True
            _OPEN.append(self)
            machine.STATE.mkdir(parents=True, exist_ok=True)
            machine.reap()
            self._munged = machine.ensure_munge()
            self.conf_dir = Path(tempfile.mkdtemp(prefix="cl-slurm-"))
            self.conf_dir.chmod(0o755)
            # for the next cluster, if this run is killed
            machine.CONF_DIR.write_text(str(self.conf_dir))
            for sub in ("state", "spool", "dev"):
                (self.conf_dir / sub).mkdir()
            self.gpu_files = [self.conf_dir / "dev" / f"nvidia{i}" for i in range(self.gpus)]
            for f in self.gpu_files:  # /dev/null's numbers: harmless, but a device to Slurm
                os.mknod(f, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            self._install_conf()
            env = {**os.environ, machine.MARK: str(self.conf_dir), "PATH": SBIN}
            self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-i"], env)
            self._spawn("slurmd", ["slurmd", "-D", "-N", self.node], env)
            self.wait_idle()
        except BaseException:
            self.close()
            raise
        return self

    def _install_conf(self) -> None:
        machine.save_etc()
        self._saved = True
        controller = socket.gethostname().split(".")[0]  # slurmctld insists on `hostname`
        conf = conf_text(
            controller=controller,
            node=self.node,
            address=self.node_address,
            gpus=self.gpus,
            folder=self.conf_dir,
            min_job_age=self.min_job_age,
        )
        etc = machine.ETC.resolve()  # where a symlinked /etc/slurm points: that folder is saved
        etc.mkdir(mode=0o755, exist_ok=True)
        for name, text in (
            ("slurm.conf", conf),
            ("gres.conf", gres_text(self.node, self.gpu_files)),
        ):
            (self.conf_dir / name).write_text(text)
            (etc / name).write_text(text)
            (etc / name).chmod(0o644)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        out = (self.conf_dir / f"{name}.out").open("wb")
        with out:
            self._procs[name] = subprocess.Popen(
                ["nsenter", f"--net=/var/run/netns/{self.box.netns}", *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.conf_dir,
                start_new_session=True,
            )

    def wait_idle(self, timeout: float = UP_TIMEOUT) -> None:
        """Until sinfo shows the node idle (resuming it once it has registered) and the main
        scheduler has run once; raises with the tail of the daemons' logs when that takes more
        than `timeout` s. slurmctld reads SchedulerParameters (`batch_sched_delay=0`) on its
        first scheduling pass, 3 s after it starts: a job sent before waits for that pass."""
        deadline = time.monotonic() + timeout
        resumed = False
        state = ""
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited ({proc.returncode}) while the cluster came up"
                        f"\n{self.logs()}"
                    )
            done = self.run(f"sinfo -h -n {self.node} -o %T", check=False)
            state = done.stdout.strip().rstrip("*~#!%$@^-")
            if state == "idle" and self._scheduler_ran():
                return
            if not resumed and state and state not in ("unknown", "idle"):
                # down/drained/inval after the first registration: say it may run jobs
                self.run(f"scontrol update nodename={self.node} state=resume", check=False)
                resumed = True
            time.sleep(0.1)
        raise RuntimeError(
            f"the Slurm node {self.node} is not idle after {timeout:g} s "
            f"(sinfo: {state or 'no answer'})\n{self.logs()}"
        )

    def _scheduler_ran(self) -> bool:
        out = self.run("sdiag", check=False).stdout
        cycles = re.search(r"Main schedule statistics.*?Total cycles:\s*(\d+)", out, re.S)
        return bool(cycles and int(cycles.group(1)) > 0)

    # -- using it --------------------------------------------------------------------------------
    def run(
        self, cmd: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """A shell command as root inside the box's network namespace (squeue, scancel, ...)."""
        done = subprocess.run(
            ["nsenter", f"--net=/var/run/netns/{self.box.netns}", "sh", "-c", cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "PATH": SBIN},
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{cmd!r} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
            )
        return done

    def jobs(self, user: str | None = None) -> list[dict[str, str]]:
        """The jobs squeue knows (pending, running, ending): id, name, state, node."""
        who = f" -u {shlex.quote(user)}" if user else ""
        return parse_jobs(self.run(f"squeue -h{who} -o '%i|%j|%T|%N'").stdout)

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -o ID` as fields (JobState, Reason, NodeList, ...); {} once gone."""
        done = self.run(f"scontrol show job -o {int(job_id)}", check=False)
        return parse_show(done.stdout) if done.returncode == 0 else {}

    def logs(self, lines: int = 20) -> str:
        """The last lines of slurmctld's and slurmd's logs (what they printed, before they had
        a log file)."""
        parts = []
        for name in ("slurmctld", "slurmd"):
            for path in (self.conf_dir / f"{name}.log", self.conf_dir / f"{name}.out"):
                text = path.read_text(errors="replace") if path.is_file() else ""
                if text.strip():
                    tail = "\n".join(text.splitlines()[-lines:])
                    parts.append(f"--- {path} ---\n{tail}")
                    break
        return "\n".join(parts) or f"(no logs in {self.conf_dir})"

    # -- stopping --------------------------------------------------------------------------------
    def close(self) -> None:
        """Cancel the jobs, end the daemons and every step they left, restore /etc/slurm, stop
        the munged we started, free the lock: each step runs even when one before failed."""
        if not self._locked:
            return  # start() failed before it took the machine: nothing here is ours
        with contextlib.ExitStack() as then:  # run last-in first-out, after the body
            then.callback(self._unlock)
            if self.conf_dir != Path():
                then.callback(machine.CONF_DIR.unlink, True)
                then.callback(shutil.rmtree, self.conf_dir, True)
            if self._munged is not None:
                then.callback(machine.stop_munged, self._munged)
                self._munged = None
            if self._saved:
                then.callback(machine.restore_etc)
                self._saved = False
            self._stop_processes()

    def _stop_processes(self) -> None:
        ctld = self._procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            with contextlib.suppress(Exception):
                self.run(f"scancel -p {PARTITION}", check=False, timeout=10)
                wait_for(lambda: not self.run("squeue -h", check=False).stdout.strip(), 6)
        for proc in self._procs.values():
            machine.end(proc)
        self._procs.clear()
        machine.kill_all(lambda pid: machine.ours(pid) or self._job_process(pid))

    def _unlock(self) -> None:
        _OPEN.remove(self)
        machine.release()
        self._locked = False

    def _job_process(self, pid: int) -> bool:
        """A process of a job of ours: in the box's namespace with SLURM_JOB_ID set."""
        return machine.same_netns(pid, self.box.netns) and machine.has_env(pid, b"SLURM_JOB_ID=")

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def slurm_box(box_factory: Any) -> Iterator[tuple[Box, Cluster]]:
    """A fresh netns box (root login) with a running one-node cluster on it: (box, cluster)."""
    why = slurm_missing()
    if why:
        pytest.skip(why)
    box = box_factory()
    with Cluster(box) as cluster:
        yield box, cluster


_OPEN: list[Cluster] = []  # the cluster this process runs (one at most)
