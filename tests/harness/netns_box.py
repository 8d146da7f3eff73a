"""A "remote GPU box" for tests: a network namespace with its own sshd, made by the test run.

    from tests.harness.netns_box import Box, make_box   # `box`, `box_factory`: plugin fixtures

    def test_something(box: Box):       # a fresh box (root login), torn down after the test
        box.address                     # 10.77.N.2: what agents should use
        box.run("hostname -I")          # as root inside the namespace -> "172.17.0.1 10.77.N.2"
        box.install_standin()           # stand-in CARLA package served over HTTP, in the profile
        box.preinstall()                # ... or already unpacked on the box: deploys start at once
        box.deploy()                    # `carla-launch deploy <box profile>` for real
        box.cli("server", "status", str(box.profile_path))

API of `Box` (all paths absolute):
- identity: `n`, `netns`, `address`, `host_address`, `alias`, `user` (login), `server_user`,
  `ssh_config`, `known_hosts`, `identity`, `host_key`, `profile_path`, `profile_data`, `dir`,
  `server_home`, `root` (install root), `session_dir`, `sshd_pid`;
- `run(cmd, user=None)` inside the namespace; `run_as_sshd(cmd)` in sshd's own mount namespace
  (what SSH sessions see); `ssh_argv(command)` for plain OpenSSH through the alias;
- `write_profile(**sections)` merges into the profile (None removes a key);
- `serve(files)` an HTTP server on `host_address`; `serve_files(files, rate=, ranges=)` one
  that streams from disk, throttled and/or without Range support (`FileServer`);
  `install_standin(fmt, version=, sha=, padding=)`; `use_package_of(other_box)`; `preinstall()`;
- `cut_route()`: no default route any more, i.e. a box without internet (ssh and this
  machine's end of the veth still answer);
- `firewall(allow=(22,))`: a firewall inside the box that drops every connection from outside
  but to ssh (`firewall_missing()` says why it cannot run here);
- `deploy(*args, check=True)` and `cli(*args)`: the real CLI in a child process;
- `carla_pid()`, `server_processes()`, `listening()`; `add_inner_sshd(port)` (a second sshd on
  the box's loopback, only reachable with the box as jump host).
`make_box(tmp_path, n=None, login="root"|"user"|"nosudo")` makes one (close it, or use `with`);
`box_factory(login=...)` makes several in one test; `missing()` / `require_boxes()` say why not.

Each box N (10..49; other suites use 50 and up) is:
- network namespace `cl-box-N`, veth pair `clhN` (host side, 10.77.N.1/24) and `eth0` inside
  (10.77.N.2/24, default route via .1);
- a bridge `docker0` with 172.17.0.1/16 made first, so `hostname -I` inside lists the wrong
  address first, as on real GPU boxes;
- an OpenSSH server on 10.77.N.2:22 with its own host key; a client key (`identity`), a
  `known_hosts` holding the box's key, and an `ssh_config` with the alias `cl-box-N`;
- login as root by default (`login="user"`: a user with passwordless sudo, `login="nosudo"`:
  one without), and the server user `clboxN` that a deploy creates (CARLA refuses root);
- a profile `profiles/boxN.yaml` (`profile_path`) for all of that, with `os_packages` limited to
  what this machine has (the box shares its file system and has no internet).

The namespace shares users, /home and /tmp with this machine. Teardown kills every process in
the namespace (by pid), deletes the users and their homes, the links and the namespace.
Skips, naming what is missing, without root, `ip netns`, sshd or tmux.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.harness.polling import kill_until_gone, wait_for
from tests.harness.standin_carla import build_package, sha256, standin_python, wait_listening
from tests.harness.standin_carla.http import PackageServer, Request

FIRST, LAST = 10, 49
PREFIX = "cl-box-"
MARKER = ".carla-launch-package"  # as carla_launcher.box.shell.MARKER
PACKAGES_HERE = ("tmux", "curl")  # what the box "has" (checked against dpkg in `missing()`)


def missing() -> str | None:
    """Why boxes cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, users, an sshd)"
    for tool, why in (
        ("ip", "iproute2 (ip netns)"),
        ("tmux", "tmux"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        ("runuser", "util-linux (runuser)"),
        ("setsid", "util-linux (setsid)"),
        ("curl", "curl"),
    ):
        if shutil.which(tool) is None:
            return f"needs {why}"
    if not Path("/usr/sbin/sshd").exists():
        return "needs openssh-server (/usr/sbin/sshd)"
    probe = f"{PREFIX}probe-{os.getpid()}"
    done = subprocess.run(
        ["ip", "netns", "add", probe], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return f"`ip netns add` fails here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def firewall_missing() -> str | None:
    """Why `Box.firewall` cannot run here (None: it can)."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian package iptables) for a firewall inside the box"
    return None


_MISSING: list[str | None] = []


def require_boxes() -> None:
    """pytest.skip with the reason when this machine cannot make boxes."""
    if not _MISSING:
        _MISSING.append(missing())
    if _MISSING[0]:
        pytest.skip(_MISSING[0])


def _sh(
    cmd: list[str] | str, check: bool = True, timeout: float = 60, **kw: Any
) -> subprocess.CompletedProcess:
    done = subprocess.run(
        cmd,
        shell=isinstance(cmd, str),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,
    )
    if check and done.returncode != 0:
        raise RuntimeError(
            f"{cmd!r} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
    return done


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


@dataclass
class Box:
    n: int
    dir: Path  # client-side files: key, known_hosts, ssh_config, profiles/
    login: str = "root"  # root | user | nosudo
    netns: str = ""
    address: str = ""  # 10.77.N.2, inside the namespace
    host_address: str = ""  # 10.77.N.1, this machine's end of the veth
    alias: str = ""  # ssh_config host alias
    user: str = "root"  # the login user
    server_user: str = ""  # who runs CARLA on the box
    ssh_config: Path = Path()
    known_hosts: Path = Path()
    identity: Path = Path()
    profile_path: Path = Path()
    host_key: str = ""  # "ssh-ed25519 AAAA..."
    profile_data: dict[str, Any] = field(default_factory=dict)
    package_path: Path | None = None  # the archive the profile's package.url serves
    _sshd_dir: Path = Path()
    _lock: Any = None
    _servers: list[PackageServer | FileServer] = field(default_factory=list)
    _users: list[str] = field(default_factory=list)
    _extra_files: list[Path] = field(default_factory=list)

    # -- making and unmaking ---------------------------------------------------------------------
    @property
    def veth(self) -> str:
        return f"clh{self.n}"

    def _create(self) -> None:
        n = self.n
        self.netns, self.alias = f"{PREFIX}{n}", f"{PREFIX}{n}"
        self.address, self.host_address = f"10.77.{n}.2", f"10.77.{n}.1"
        _cleanup_leftovers(n)
        ns = self.netns
        _sh(["ip", "netns", "add", ns])
        cmds = [
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            # docker0 first: `hostname -I` then lists 172.17.0.1 before the real address
            ["ip", "-n", ns, "link", "add", "docker0", "type", "bridge"],
            ["ip", "-n", ns, "addr", "add", "172.17.0.1/16", "dev", "docker0"],
            ["ip", "-n", ns, "link", "set", "docker0", "up"],
            ["ip", "link", "add", self.veth, "type", "veth", "peer", "name", f"clb{n}"],
            ["ip", "link", "set", f"clb{n}", "netns", ns],
            ["ip", "-n", ns, "link", "set", f"clb{n}", "name", "eth0"],
            ["ip", "addr", "add", f"{self.host_address}/24", "dev", self.veth],
            ["ip", "link", "set", self.veth, "up"],
            ["ip", "-n", ns, "addr", "add", f"{self.address}/24", "dev", "eth0"],
            ["ip", "-n", ns, "link", "set", "eth0", "up"],
            ["ip", "-n", ns, "route", "add", "default", "via", self.host_address],
        ]
        for c in cmds:
            _sh(c)
        # sshd's files must be readable by the login user (it reads authorized_keys as them)
        self._sshd_dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{n}-sshd-"))
        self._sshd_dir.chmod(0o755)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.identity = self.dir / "id_ed25519"
        _sh(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"test@{self.alias}",
                "-f",
                str(self.identity),
            ]
        )
        host_key = self._sshd_dir / "host_ed25519"
        _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.alias, "-f", str(host_key)])
        self.host_key = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
        auth = self._sshd_dir / "authorized_keys"
        auth.write_text(Path(f"{self.identity}.pub").read_text())
        auth.chmod(0o644)
        self._make_login_user()
        config = self._sshd_dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    "Port 22",
                    f"ListenAddress {self.address}",
                    f"HostKey {host_key}",
                    f"PidFile {self._sshd_dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {auth}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    "Subsystem sftp internal-sftp",
                    "MaxStartups 100:30:200",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        _sh(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "/usr/sbin/sshd",
                "-f",
                str(config),
                "-E",
                str(self._sshd_dir / "sshd.log"),
            ]
        )
        wait_listening(self.address, 22, 10)
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text(f"{self.address} {self.host_key}\n")
        self.ssh_config = self.dir / "ssh_config"
        self.ssh_config.write_text(
            "\n".join(
                [
                    f"Host {self.alias}",
                    f"  HostName {self.address}",
                    f"  User {self.user}",
                    f"  IdentityFile {self.identity}",
                    "  IdentitiesOnly yes",
                    f"  UserKnownHostsFile {self.known_hosts}",
                    "",
                ]
            )
        )
        self.profile_path = self.dir / "profiles" / f"box{n}.yaml"
        self.profile_data = {
            "remote": {
                "host": self.alias,
                "ssh_config": str(self.ssh_config),
                "connect_timeout": 5,
            },
            "server": {
                "user": self.server_user,
                "os_packages": list(PACKAGES_HERE),
                "port": 2000,
                "restart": "on-failure",
                "tmux_session": "carla",
                "ready_timeout": 30,
                "package": {"root": "~/CARLA_Leaderboard_20"},
            },
        }
        self.write_profile()

    def _make_login_user(self) -> None:
        self.server_user = f"clbox{self.n}"
        self._users.append(self.server_user)
        if self.login == "root":
            self.user = "root"
            return
        self.user = f"clbox{self.n}{'s' if self.login == 'user' else 'n'}"
        self.server_user = self.user  # not root: the server runs as the login user
        self._users.append(self.user)
        _sh(["useradd", "-m", "-s", "/bin/bash", self.user])
        _sh(["usermod", "-p", "*", self.user])  # UsePAM no refuses locked accounts
        if self.login == "user":
            sudoers = Path(f"/etc/sudoers.d/cl-box-{self.n}")
            sudoers.write_text(f"{self.user} ALL=(ALL) NOPASSWD: ALL\n")
            sudoers.chmod(0o440)
            self._extra_files.append(sudoers)

    def close(self) -> None:
        for srv in self._servers:  # every one, even if another fails to stop
            with contextlib.suppress(Exception):
                srv.stop()
        self._servers.clear()
        _kill_netns(self.netns)
        for user in self._users:
            _remove_user(user)
        for f in self._extra_files:
            f.unlink(missing_ok=True)
        _sh(["ip", "link", "del", self.veth], check=False)
        _sh(["ip", "netns", "del", self.netns], check=False)
        shutil.rmtree(self._sshd_dir, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Box:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_inner_sshd(self, port: int = 2222) -> str:
        """A second sshd on the box's loopback (127.0.0.1:port): reachable only through the box
        itself as a jump host. Returns its ssh_config alias (`cl-box-N-inner`)."""
        config = self._sshd_dir / "sshd_config"
        inner = self._sshd_dir / "sshd_inner_config"
        text = config.read_text().replace(
            f"ListenAddress {self.address}", "ListenAddress 127.0.0.1"
        )
        text = text.replace("Port 22\n", f"Port {port}\n").replace("sshd.pid", "sshd_inner.pid")
        inner.write_text(text)
        _sh(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                "/usr/sbin/sshd",
                "-f",
                str(inner),
                "-E",
                str(self._sshd_dir / "sshd_inner.log"),
            ]
        )
        wait_for(
            lambda: (
                self.run(f"grep -q ':{port:04X} .* 0A ' /proc/net/tcp", check=False).returncode == 0
            ),
            10,
            f"the inner sshd listening on 127.0.0.1:{port}",
        )
        alias = f"{self.alias}-inner"
        with self.known_hosts.open("a") as f:
            f.write(f"[127.0.0.1]:{port} {self.host_key}\n")
        with self.ssh_config.open("a") as f:
            f.write(
                "\n".join(
                    [
                        f"Host {alias}",
                        "  HostName 127.0.0.1",
                        f"  Port {port}",
                        f"  User {self.user}",
                        f"  IdentityFile {self.identity}",
                        "  IdentitiesOnly yes",
                        f"  UserKnownHostsFile {self.known_hosts}",
                        "",
                    ]
                )
            )
        return alias

    # -- using it --------------------------------------------------------------------------------
    def run(
        self, cmd: str, user: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        """Run a shell command inside the namespace (as root, or as `user`)."""
        argv = ["ip", "netns", "exec", self.netns]
        if user:
            argv += ["runuser", "-u", user, "--"]
        return _sh([*argv, "sh", "-c", cmd], check=check, timeout=timeout)

    @property
    def sshd_pid(self) -> int:
        """The pid of the box's sshd (its listener)."""
        return int((self._sshd_dir / "sshd.pid").read_text().strip())

    def run_as_sshd(self, cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command (as root) in the box's sshd's own namespaces, mount namespace included:
        what sessions over SSH see (`ip netns exec` gives every call a fresh mount namespace)."""
        return _sh(["nsenter", "-t", str(self.sshd_pid), "-m", "-n", "sh", "-c", cmd], check=check)

    def ssh_argv(self, command: str | None = None) -> list[str]:
        """Plain OpenSSH to the box through its alias (as a user would type it)."""
        argv = ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", "-T", self.alias]
        return argv + ([command] if command else [])

    def write_profile(self, **sections: Any) -> Path:
        """(Re)write the box's profile; keyword sections are merged in (None removes a key)."""
        self.profile_data = _deep_merge(self.profile_data, sections)
        self.profile_path.parent.mkdir(parents=True, exist_ok=True)
        self.profile_path.write_text(_to_yaml(self.profile_data))
        return self.profile_path

    @property
    def server_home(self) -> Path:
        return Path("/home") / self.server_user

    @property
    def root(self) -> Path:
        """The install root of the profile, as a path on the box (and here: shared)."""
        r = self.profile_data["server"]["package"]["root"]
        return self.server_home / r[2:] if r.startswith("~/") else Path(r)

    @property
    def session_dir(self) -> Path:
        return self.server_home / ".carla-launch" / self.profile_data["server"]["tmux_session"]

    def serve(self, files: dict[str, Path] | None = None) -> PackageServer:
        """An HTTP server on this machine's end of the veth (reachable from the box)."""
        srv = PackageServer(self.host_address, files or {}).start()
        self._servers.append(srv)
        return srv

    def serve_files(
        self, files: dict[str, Path], *, rate: int | None = None, ranges: bool = True
    ) -> FileServer:
        """A `FileServer` on this machine's end of the veth: throttled to `rate` bytes/s,
        without Range support when `ranges` is False."""
        srv = FileServer(self.host_address, files, rate=rate, ranges=ranges).start()
        self._servers.append(srv)
        return srv

    def cut_route(self) -> None:
        """No default route: the box reaches this machine's end of the veth (ssh, package
        servers) and nothing beyond, as a box without internet; apt fails to connect at once."""
        _sh(["ip", "-n", self.netns, "route", "del", "default"])

    def firewall(self, allow: tuple[int, ...] = (22,)) -> None:
        """A firewall inside the box that drops every connection from outside but to the TCP
        ports in `allow` (ssh): what university boxes and cloud VMs do. Replies to the box's
        own connections (package downloads) and loopback still pass; ping does not. iptables
        (nf_tables or legacy) in the box's namespace only; gone with the box. Skips, naming
        the package, where iptables is missing."""
        why = firewall_missing()
        if why:
            pytest.skip(why)
        for tool in ("iptables", "ip6tables"):
            rules = [
                ["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
                [
                    "-A",
                    "INPUT",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ],
                *(["-A", "INPUT", "-p", "tcp", "--dport", str(p), "-j", "ACCEPT"] for p in allow),
                ["-P", "INPUT", "DROP"],
            ]
            for rule in rules:
                _sh(["ip", "netns", "exec", self.netns, tool, "-w", *rule])

    def install_standin(
        self, fmt: str = "tar.gz", *, version: str = "0.9.15", sha: str | None = None, **build: Any
    ) -> tuple[PackageServer, str, str]:
        """Build the stand-in package, serve it, and name it in the profile.

        Returns (server, url, sha256); `sha` overrides the checksum written to the profile.
        """
        if standin_python() is None:
            pytest.skip("needs a python3 that any user can run (e.g. /usr/bin/python3)")
        path = build_package(self.dir / "pkg", fmt, version=version, **build)
        srv = self.serve({path.name: path})
        digest = sha256(path)
        self.package_path = path
        self.write_profile(server={"package": {"url": srv.url(path.name), "sha256": sha or digest}})
        return srv, srv.url(path.name), digest

    def use_package_of(self, other: Box) -> None:
        """Name another box's stand-in package (same URL and checksum) in this profile."""
        self.package_path = other.package_path
        self.write_profile(server={"package": dict(other.profile_data["server"]["package"])})

    def preinstall(self, version: str = "0.9.15") -> None:
        """The state after a first deploy's install: server user, stand-in unpacked, marker.

        A deploy then skips download and unpack and only writes the launch script and starts
        the server (which answers at once): "already deployed, the server starts instantly".
        """
        if standin_python() is None:
            pytest.skip("needs a python3 that any user can run (e.g. /usr/bin/python3)")
        if not _user_exists(self.server_user):
            _sh(["useradd", "-m", "-s", "/bin/bash", self.server_user])
        if self.package_path is None:
            self.install_standin(version=version)
        pkg = self.profile_data["server"]["package"]
        archive = self.package_path
        assert archive is not None
        root = self.root
        if root.exists():
            shutil.rmtree(root)
        unpack = Path(tempfile.mkdtemp(dir=root.parent, prefix=".preinstall-"))
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                z.extractall(unpack)  # noqa: S202  a package the harness built itself
        else:
            with tarfile.open(archive) as t:
                t.extractall(unpack, filter="tar")
        top = next(p.parent for p in unpack.rglob("CarlaUE4.sh"))
        (top / MARKER).write_text(
            f"sha256={pkg['sha256']}\nurl={pkg['url']}\narchive={archive.name}\n"
        )
        top.rename(root)
        shutil.rmtree(unpack, ignore_errors=True)
        _sh(["chown", "-R", f"{self.server_user}:", str(root)])
        for p in root.rglob("*"):
            if p.name in ("CarlaUE4.sh", "CarlaUE4-Linux-Shipping"):
                p.chmod(0o755)

    def deploy(
        self, *args: str, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess:
        """`carla-launch deploy <profile> ARGS` in a child process, as a user runs it."""
        done = _sh(
            [sys.executable, "-m", "carla_launcher", "deploy", str(self.profile_path), *args],
            check=False,
            timeout=timeout,
            cwd=str(self.dir),
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"deploy failed ({done.returncode}):\n{done.stderr}\n{done.stdout}"
            )
        return done

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Any `carla-launch` command in a child process, from the box's folder."""
        return _sh(
            [sys.executable, "-m", "carla_launcher", *args],
            check=False,
            timeout=timeout,
            cwd=str(self.dir),
        )

    def server_processes(self) -> list[int]:
        """Pids of the server user's processes inside the namespace."""
        try:
            uid = pwd.getpwnam(self.server_user).pw_uid
        except KeyError:
            return []
        pids = []
        for pid in _netns_pids(self.netns):
            try:
                if Path(f"/proc/{pid}").stat().st_uid == uid:
                    pids.append(pid)
            except FileNotFoundError:
                continue
        return pids

    def carla_pid(self) -> int | None:
        """The pid of the (stand-in) CARLA binary on the box, if it runs."""
        for pid in self.server_processes():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if any(part.endswith(b"CarlaUE4-Linux-Shipping") for part in cmd[:2]):
                return pid
        return None

    def listening(self) -> set[int]:
        """TCP ports listening inside the namespace."""
        out = self.run("cat /proc/net/tcp /proc/net/tcp6").stdout.splitlines()
        ports = set()
        for line in out[1:]:
            f = line.split()
            if len(f) > 3 and f[3] == "0A":
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
        return ports


class FileServer:
    """An HTTP server that streams files from disk (a few hundred MB stay off the heap), as
    hosting that misbehaves in the ways tests need: `rate` bytes/s at most, no Range support
    (`ranges=False`: a ranged GET gets 200 and the whole file), and `break_after[name]` cuts the
    next transfer of `name` after that many bytes. `requests` logs what was asked and sent."""

    CHUNK = 64 * 1024

    def __init__(
        self, host: str, files: dict[str, Path], *, rate: int | None = None, ranges: bool = True
    ) -> None:
        self.files = {name: Path(p) for name, p in files.items()}
        self.requests: list[Request] = []
        self.break_after: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                outer._serve(self, body=False)

            def do_GET(self) -> None:
                outer._serve(self, body=True)

        self.rate, self.ranges = rate, ranges
        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        name = h.path.lstrip("/").split("?", 1)[0]
        rng = h.headers.get("Range")
        path = self.files.get(name)
        if path is None or not path.is_file():
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            self.requests.append(Request(h.command, name, rng, 404, 0))
            return
        size = path.stat().st_size
        start = 0
        if self.ranges and rng and rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
            start = min(int(rng[6:].split("-")[0]), size)
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            h.send_response(200)
        h.send_header("Content-Length", str(size - start))
        h.send_header("Accept-Ranges", "bytes" if self.ranges else "none")
        h.end_headers()
        sent = 0
        if body:
            cut = self.break_after.pop(name, None)
            todo = size - start if cut is None else min(cut, size - start)
            t0 = time.monotonic()
            with path.open("rb") as f:
                f.seek(start)
                while sent < todo:
                    chunk = f.read(min(self.CHUNK, todo - sent))
                    if not chunk:
                        break
                    try:
                        h.wfile.write(chunk)
                    except OSError:  # the client went away
                        break
                    sent += len(chunk)
                    if self.rate:  # pace: never ahead of rate * elapsed
                        ahead = sent / self.rate - (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
            if cut is not None:
                h.close_connection = True
                with contextlib.suppress(OSError):
                    h.connection.shutdown(2)
        self.requests.append(Request(h.command, name, rng, 206 if start else 200, sent))

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/{name}"

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- helpers -------------------------------------------------------------------------------------
def _to_yaml(data: dict[str, Any]) -> str:
    """YAML from plain data (JSON flow values are YAML)."""
    lines: list[str] = []

    def emit(d: dict[str, Any], indent: int) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                lines.append(f"{' ' * indent}{k}:")
                emit(v, indent + 2)
            else:
                lines.append(f"{' ' * indent}{k}: {json.dumps(v)}")

    emit(data, 0)
    return "\n".join(lines) + "\n"


def _netns_pids(ns: str) -> list[int]:
    done = _sh(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def _kill_netns(ns: str) -> None:
    """Kill every process inside the namespace, by pid, until none is left."""
    kill_until_gone(lambda: _netns_pids(ns))


def _remove_user(name: str) -> None:
    if not _user_exists(name):
        return
    uid = pwd.getpwnam(name).pw_uid
    _sh(["userdel", "-r", "-f", name], check=False)
    shutil.rmtree(f"/home/{name}", ignore_errors=True)
    shutil.rmtree(f"/tmp/tmux-{uid}", ignore_errors=True)


def _cleanup_leftovers(n: int) -> None:
    """A crashed earlier run may have left box N behind."""
    ns = f"{PREFIX}{n}"
    if ns in _sh(["ip", "netns", "list"], check=False).stdout.split():
        _kill_netns(ns)
        _sh(["ip", "netns", "del", ns], check=False)
    _sh(["ip", "link", "del", f"clh{n}"], check=False)
    for name in (f"clbox{n}", f"clbox{n}s", f"clbox{n}n"):
        _remove_user(name)
    Path(f"/etc/sudoers.d/cl-box-{n}").unlink(missing_ok=True)


def _claim(n: int | None) -> tuple[int, Any]:
    """A box number nobody else (no other test process either) uses: a lock file per number."""
    lock_dir = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    for cand in [n] if n is not None else range(FIRST, LAST + 1):
        f = (lock_dir / f"cl-box-{cand}.lock").open("w")  # held while the box lives
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return cand, f
        except OSError:
            f.close()
    raise RuntimeError("no free box number in 10..49")


def make_box(tmp_path: Path, n: int | None = None, *, login: str = "root") -> Box:
    """Make box N (default: the first free one); call `.close()` (or use `with`)."""
    require_boxes()
    num, lock = _claim(n)
    box = Box(n=num, dir=Path(tmp_path) / f"box{num}", login=login)
    box._lock = lock
    try:
        box._create()
    except BaseException:
        box.close()
        raise
    return box


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    """A fresh box (root login), torn down after the test."""
    with make_box(tmp_path) as b:
        yield b


def pool_profile(boxes: list[Box], folder: Path, **server: Any) -> Path:
    """`folder/profiles/pool.yaml`: one profile over all `boxes` (a pool), reached through one
    ssh_config that holds each box's, the stand-in package built on the first and served to
    all; `server` adds or overrides server fields. Written as JSON (which is YAML), so a test
    can read it back with json.loads, edit and rewrite it."""
    first, *rest = boxes
    _, url, sha = first.install_standin()
    for b in rest:
        b.use_package_of(first)
    config = folder / "pool_ssh_config"
    config.write_text("".join(b.ssh_config.read_text() for b in boxes))
    profile = folder / "profiles" / "pool.yaml"
    profile.parent.mkdir(exist_ok=True)
    doc = {
        "remote": {
            "host": [b.alias for b in boxes],
            "ssh_config": str(config),
            "connect_timeout": 5,
        },
        "server": {
            "os_packages": ["tmux"],
            "ready_timeout": 30,
            "package": {"url": url, "sha256": sha},
            **server,
        },
    }
    profile.write_text(json.dumps(doc))
    return profile


@pytest.fixture
def box_factory(tmp_path: Path) -> Iterator[Any]:
    """`box_factory(login="root")` -> a new Box; all of them are torn down after the test."""
    made: list[Box] = []

    def factory(login: str = "root") -> Box:
        b = make_box(tmp_path, login=login)
        made.append(b)
        return b

    yield factory
    for b in made:
        b.close()
