"""The machine under a test Slurm cluster (tests/harness/slurm.py): lock, munge, /etc/slurm,
leftover daemons and jobs.

Apart from the cluster because these are machine-wide, not the box's: Slurm's commands read
/etc/slurm (over SSH too), munged serves every process, and the daemons and job steps are
processes of this machine. A test run must leave the machine as it found it, even when it
was killed halfway: what it needs to put things back lives under `STATE`, for the next run.

- One cluster at a time on this machine: a file lock (`LOCK`) held while it lives
  (`acquire()` / `release()`, re-entrant within a process; `machine_lock()` around a test
  that prepares or compares /etc/slurm); a second test process waits for it.
- /etc/slurm: `save_etc()` copies its former content to `SAVED` (byte for byte, owners and
  modes too: `cp -a`), `restore_etc()` puts it back (what was not there is removed).
- munged: `ensure_munge()` uses one that already answers (`munge -n | unmunge`), else starts
  one as user munge and notes its pid (`MUNGED_PID`); `stop_munged()` stops that one again.
  The Debian packages start no daemon when installed without a running init system
  (invoke-rc.d cannot find a runlevel; a docker-style policy-rc.d denies it too), and the
  slurm init scripts start nothing without /etc/slurm/slurm.conf.
- Processes: `ours(pid)` tells our daemons and steps (`MARK` in their environment, or inside
  a box's network namespace) from a machine's own Slurm; `kill_all()` ends the ones picked;
  `reap()` undoes what a killed run left (its daemons, steps and jobs, /etc/slurm, its
  conf_dir named in `CONF_DIR`) before the next cluster starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from tests.harness.polling import kill_until_gone, wait_for

ETC = Path("/etc/slurm")
STATE = Path("/var/tmp/cl-slurm")  # survives a killed run: the next cluster restores from it
SAVED = STATE / "saved"  # saved/slurm: a copy of /etc/slurm, or saved/absent
MUNGED_PID = STATE / "munged.pid"  # the munged we started (stopped on close)
CONF_DIR = STATE / "conf_dir"  # the running cluster's conf_dir (removed on close)
LOCK = Path("/run/lock/cl-slurm.lock")
MARK = "CL_SLURM_HARNESS"  # in slurmctld's and slurmd's environment: how we find them again
DAEMONS = ("slurmctld", "slurmscriptd", "slurmd", "slurmstepd")
LOCK_TIMEOUT = 600.0
SBIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_LOCK: list[TextIO] = []  # the lock file while this process holds the lock
_DEPTH: list[int] = [0]


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """The machine's Slurm lock, re-entrant within this process: while it is held no other
    test process runs a cluster or writes /etc/slurm (a test that prepares /etc/slurm or
    compares it after a cluster closed holds it around both)."""
    acquire()
    try:
        yield
    finally:
        release()


def acquire() -> None:
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


def release() -> None:
    _DEPTH[0] -= 1
    if _DEPTH[0] == 0 and _LOCK:
        _LOCK.pop().close()


def ensure_munge() -> int | None:
    """munged answering; the pid of the one we had to start (None: it already ran)."""
    if MUNGED_PID.is_file():  # a killed run started it: ours to stop now
        with contextlib.suppress(ValueError):
            pid = int(MUNGED_PID.read_text())
            if alive(pid, "munged") and _munge_works():
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


def stop_munged(pid: int) -> None:
    if alive(pid, "munged"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not alive(pid, "munged"), 5)
        if alive(pid, "munged"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    MUNGED_PID.unlink(missing_ok=True)


def save_etc() -> None:
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


def restore_etc() -> None:
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


def reap() -> None:
    """What a killed run left: its daemons, their steps and jobs, and /etc/slurm to put back."""
    kill_all(lambda pid: ours(pid) or (_in_a_netns(pid) and has_env(pid, b"SLURM_JOB_ID=")))
    restore_etc()
    if CONF_DIR.is_file():
        left = Path(CONF_DIR.read_text())
        if left.name.startswith("cl-slurm-"):
            shutil.rmtree(left, ignore_errors=True)
        CONF_DIR.unlink()


def slurm_daemons() -> list[int]:
    """Live Slurm daemons and steps on this machine."""
    return [pid for pid in all_pids() if any(alive(pid, name) for name in DAEMONS)]


def alive(pid: int, name: str) -> bool:
    """`pid` is a `name` process that still runs (a zombie, dead already, does not count)."""
    return _comm(pid) == name and _state(pid) not in ("Z", "X")


def ours(pid: int) -> bool:
    """A daemon or step this harness started: our mark in its environment (slurmctld and
    slurmd), or inside a network namespace (a box: steps, slurmscriptd; a machine's own
    Slurm runs in the machine's)."""
    if _comm(pid) not in DAEMONS:
        return False
    return has_env(pid, f"{MARK}=".encode()) or _in_a_netns(pid)


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


def all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def has_env(pid: int, prefix: bytes) -> bool:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return any(var.startswith(prefix) for var in env.split(b"\0"))


def same_netns(pid: int, netns: str) -> bool:
    try:
        mine = Path(f"/proc/{pid}/ns/net").stat().st_ino
        return mine == Path(f"/var/run/netns/{netns}").stat().st_ino
    except OSError:
        return False


def kill_all(which: Callable[[int], bool]) -> None:
    """SIGKILL every process `which(pid)` picks, until none is left."""
    kill_until_gone(lambda: [pid for pid in all_pids() if pid != os.getpid() and which(pid)])


def end(proc: subprocess.Popen[bytes]) -> None:
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
