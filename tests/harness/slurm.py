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
- Slurm's config is machine-wide: commands over SSH read /etc/slurm/slurm.conf. While a cluster
  runs, /etc/slurm holds our slurm.conf and gres.conf; its former content is copied to
  `/var/tmp/cl-slurm/saved` first and put back on `close()` (byte for byte, owners and modes
  too; what was not there is removed). A run killed before `close()` leaves the copy behind:
  the next cluster puts it back (and ends the daemons, steps and munged left) before it starts.
- One cluster at a time on this machine: a file lock (`/run/lock/cl-slurm.lock`) held while it
  lives; a second test process waits for it.
- munged: used if one already answers (`munge -n | unmunge`), else started as user munge and
  stopped again on close. The Debian packages start no daemon when installed without a running
  init system (invoke-rc.d cannot find a runlevel; a docker-style policy-rc.d denies it too),
  and the slurm init scripts start nothing without /etc/slurm/slurm.conf.
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
import fcntl
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest

from tests.harness import netns_box
from tests.harness.netns_box import Box
from tests.harness.polling import wait_for

ETC = Path("/etc/slurm")
STATE = Path("/var/tmp/cl-slurm")  # survives a killed run: the next cluster restores from it
SAVED = STATE / "saved"  # saved/slurm: a copy of /etc/slurm, or saved/absent
MUNGED_PID = STATE / "munged.pid"  # the munged we started (stopped on close)
CONF_DIR = STATE / "conf_dir"  # the running cluster's conf_dir (removed on close)
LOCK = Path("/run/lock/cl-slurm.lock")
MARK = "CL_SLURM_HARNESS"  # in slurmctld's and slurmd's environment: how we find them again
DAEMONS = ("slurmctld", "slurmscriptd", "slurmd", "slurmstepd")
PARTITION = "gpu"
UP_TIMEOUT = 20.0
LOCK_TIMEOUT = 600.0

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
SBIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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
    others = [pid for pid in _slurm_daemons() if not _ours(pid)]
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
            _acquire()
            self._locked = True
            _OPEN.append(self)
            STATE.mkdir(parents=True, exist_ok=True)
            _reap()
            self._munged = _ensure_munge()
            self.conf_dir = Path(tempfile.mkdtemp(prefix="cl-slurm-"))
            self.conf_dir.chmod(0o755)
            CONF_DIR.write_text(str(self.conf_dir))  # for the next cluster, if this run is killed
            for sub in ("state", "spool", "dev"):
                (self.conf_dir / sub).mkdir()
            self.gpu_files = [self.conf_dir / "dev" / f"nvidia{i}" for i in range(self.gpus)]
            for f in self.gpu_files:  # /dev/null's numbers: harmless, but a device to Slurm
                os.mknod(f, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            self._install_conf()
            env = {**os.environ, MARK: str(self.conf_dir), "PATH": SBIN}
            self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-i"], env)
            self._spawn("slurmd", ["slurmd", "-D", "-N", self.node], env)
            self.wait_idle()
        except BaseException:
            self.close()
            raise
        return self

    def _install_conf(self) -> None:
        _save_etc()
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
        etc = ETC.resolve()  # where a symlinked /etc/slurm points: that folder is saved
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
                then.callback(CONF_DIR.unlink, True)
                then.callback(shutil.rmtree, self.conf_dir, True)
            if self._munged is not None:
                then.callback(_stop_munged, self._munged)
                self._munged = None
            if self._saved:
                then.callback(_restore_etc)
                self._saved = False
            self._stop_processes()

    def _stop_processes(self) -> None:
        ctld = self._procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            with contextlib.suppress(Exception):
                self.run(f"scancel -p {PARTITION}", check=False, timeout=10)
                wait_for(lambda: not self.run("squeue -h", check=False).stdout.strip(), 6)
        for proc in self._procs.values():
            _end(proc)
        self._procs.clear()
        _kill_all(lambda pid: _ours(pid) or self._job_process(pid))

    def _unlock(self) -> None:
        _OPEN.remove(self)
        _release()
        self._locked = False

    def _job_process(self, pid: int) -> bool:
        """A process of a job of ours: in the box's namespace with SLURM_JOB_ID set."""
        return _same_netns(pid, self.box.netns) and _has_env(pid, b"SLURM_JOB_ID=")

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


# -- the machine: lock, munge, /etc/slurm, processes ---------------------------------------------
_LOCK: list[TextIO] = []  # the lock file while this process holds the lock
_DEPTH: list[int] = [0]
_OPEN: list[Cluster] = []  # the cluster this process runs (one at most)


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """The machine's Slurm lock, re-entrant within this process: while it is held no other
    test process runs a cluster or writes /etc/slurm (a test that prepares /etc/slurm or
    compares it after a cluster closed holds it around both)."""
    _acquire()
    try:
        yield
    finally:
        _release()


def _acquire() -> None:
    """Take the lock (waiting for another test process's cluster to close) or nest in ours."""
    if not _LOCK:
        f = LOCK.open("w")
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    f.close()
                    raise RuntimeError(
                        f"another test process holds {LOCK} (its Slurm cluster) "
                        f"for more than {LOCK_TIMEOUT:g} s"
                    ) from None
                time.sleep(0.2)
        _LOCK.append(f)
    _DEPTH[0] += 1


def _release() -> None:
    _DEPTH[0] -= 1
    if _DEPTH[0] == 0 and _LOCK:
        _LOCK.pop().close()


def _ensure_munge() -> int | None:
    """munged answering; the pid of the one we had to start (None: it already ran)."""
    if MUNGED_PID.is_file():  # a killed run started it: ours to stop now
        with contextlib.suppress(ValueError):
            pid = int(MUNGED_PID.read_text())
            if _alive(pid, "munged") and _munge_works():
                return pid
        MUNGED_PID.unlink(missing_ok=True)
    if _munge_works():
        return None
    run = Path("/run/munge")
    run.mkdir(exist_ok=True)
    shutil.chown(run, "munge", "munge")
    run.chmod(0o755)
    done = subprocess.run(
        ["runuser", "-u", "munge", "--", "munged", "--force"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PATH": SBIN},
    )
    if done.returncode != 0:
        raise RuntimeError(f"munged does not start: {done.stderr.strip()}")
    wait_for(_munge_works, 10, "munged answering (munge -n | unmunge)")
    pid = int((run / "munged.pid").read_text())
    STATE.mkdir(parents=True, exist_ok=True)
    MUNGED_PID.write_text(str(pid))
    return pid


def _munge_works() -> bool:
    """`munge -n | unmunge`: a credential made and checked by the running munged."""
    env = {**os.environ, "PATH": SBIN}
    cred = subprocess.run(["munge", "-n"], capture_output=True, check=False, env=env)
    if cred.returncode != 0:
        return False
    done = subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, check=False, env=env)
    return done.returncode == 0


def _stop_munged(pid: int) -> None:
    if _alive(pid, "munged"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not _alive(pid, "munged"), 5)
        if _alive(pid, "munged"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    MUNGED_PID.unlink(missing_ok=True)


def _save_etc() -> None:
    """Copy /etc/slurm (owners, modes, links: `cp -a`) to SAVED, or note that it was absent."""
    etc = ETC.resolve()
    tmp = STATE / "saving"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if etc.exists():
        subprocess.run(["cp", "-a", str(etc), str(tmp / "slurm")], check=True)
    else:
        (tmp / "absent").touch()
    tmp.rename(SAVED)  # only a complete copy counts as saved


def _restore_etc() -> None:
    """Put /etc/slurm back as SAVED holds it, then forget the copy."""
    if not SAVED.is_dir():
        return
    etc = ETC.resolve()
    if etc.is_file():
        etc.unlink()
    elif etc.exists():
        shutil.rmtree(etc)
    if (SAVED / "slurm").exists():
        subprocess.run(["cp", "-a", str(SAVED / "slurm"), str(etc)], check=True)
    shutil.rmtree(SAVED)


def _reap() -> None:
    """What a killed run left: its daemons, their steps and jobs, and /etc/slurm to put back."""
    _kill_all(lambda pid: _ours(pid) or (_in_a_netns(pid) and _has_env(pid, b"SLURM_JOB_ID=")))
    _restore_etc()
    if CONF_DIR.is_file():
        left = Path(CONF_DIR.read_text())
        if left.name.startswith("cl-slurm-"):
            shutil.rmtree(left, ignore_errors=True)
        CONF_DIR.unlink()


def _slurm_daemons() -> list[int]:
    """Live Slurm daemons and steps on this machine."""
    return [pid for pid in _pids() if any(_alive(pid, name) for name in DAEMONS)]


def _alive(pid: int, name: str) -> bool:
    """`pid` is a `name` process that still runs (a zombie, dead already, does not count)."""
    return _comm(pid) == name and _state(pid) not in ("Z", "X")


def _ours(pid: int) -> bool:
    """A daemon or step this harness started: our mark in its environment (slurmctld and
    slurmd), or inside a network namespace (a box: steps, slurmscriptd; a machine's own
    Slurm runs in the machine's)."""
    if _comm(pid) not in DAEMONS:
        return False
    return _has_env(pid, f"{MARK}=".encode()) or _in_a_netns(pid)


def _in_a_netns(pid: int) -> bool:
    """`pid` runs in another network namespace than this test process (in a box's): init's
    may not be readable (a container's or VM's init)."""
    try:
        return Path(f"/proc/{pid}/ns/net").stat().st_ino != Path("/proc/self/ns/net").stat().st_ino
    except OSError:
        return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _has_env(pid: int, prefix: bytes) -> bool:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return any(var.startswith(prefix) for var in env.split(b"\0"))


def _same_netns(pid: int, netns: str) -> bool:
    try:
        mine = Path(f"/proc/{pid}/ns/net").stat().st_ino
        return mine == Path(f"/var/run/netns/{netns}").stat().st_ino
    except OSError:
        return False


def _kill_all(which: Callable[[int], bool]) -> None:
    """SIGKILL every process `which(pid)` picks, until none is left."""
    for _ in range(50):
        pids = [pid for pid in _pids() if pid != os.getpid() and which(pid)]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a daemon we started, SIGKILL it after 5 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
