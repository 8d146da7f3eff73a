"""SSH to the box, the same way for OpenSSH (our commands, `attach`, `doctor`) and for pyinfra.

Running a script over it is `transport.py`; explaining its failures is `explain.py`.

A profile becomes an ssh_config file (`render_ssh_config`, pure): a `Host` block with the
profile's user, port, identity and jump host, a `Host *` block with our policy (strict host
key checking unless the profile or a flag accepts new keys, BatchMode, ConnectTimeout), then
the user's own ~/.ssh/config, so aliases, ProxyJump, IdentityFile and known_hosts work as with
plain `ssh`. OpenSSH reads it with `-F` (its jump hops get the same policy, which `-o` options
would not reach) and pyinfra (paramiko) with `ssh_config_file`.

Values stay data: every path is quoted for ssh_config (`ssh_config_value`), and the profile
refuses quotes and control characters in them at load. Connections are shared per box for a
minute (ControlMaster) through sockets in a folder only this user may use (`control_dir`), and
the socket's name holds a digest of the known_hosts files, so a changed file means a new
connection that checks the host key instead of an open one reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import shlex
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from carla_launcher import proc
from carla_launcher.box.explain import explain
from carla_launcher.errors import LauncherError, display_path
from carla_launcher.fsutil import atomic_write
from carla_launcher.state import state_dir

if TYPE_CHECKING:
    from carla_launcher.profile import Profile


class RemoteError(LauncherError):
    """Something on or on the way to the box failed; one line says what (exit code 1)."""

    exit_code = 1


def _path(profile: Profile, value: str | None) -> str | None:
    return str(profile.local_path(value)) if value else None


def user_config_path(profile: Profile) -> Path:
    return Path(_path(profile, profile.remote.ssh_config) or Path.home() / ".ssh" / "config")


def known_hosts_path(profile: Profile) -> str:
    """Where host keys are checked: the profile's file, else OpenSSH's default."""
    return _path(profile, profile.remote.known_hosts) or str(Path.home() / ".ssh" / "known_hosts")


def ssh_config_value(value: str) -> str:
    """`value` as ssh_config reads it back unchanged: double-quoted, `\\` and `"` escaped, `%`
    doubled (IdentityFile, UserKnownHostsFile and ControlPath expand %-tokens). A control
    character cannot be quoted there: the profile refuses them at load, and so does this."""
    if re.search("[\x00-\x1f\x7f]", value):
        raise LauncherError(f"{value!r}: a control character cannot go into ssh_config; rename it")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def _comment(value: object) -> str:
    """A file name for a comment line of ssh_config: a newline in it would end the comment."""
    return re.sub("[\x00-\x1f\x7f]", "?", str(value))


def private_dir_problem(st: os.stat_result, uid: int) -> str | None:
    """Why a folder (its lstat) is not private to `uid`, or None. Pure."""
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder (a link or a file)"
    if st.st_uid != uid:
        return f"belongs to uid {st.st_uid}, not to you (uid {uid})"
    if st.st_mode & 0o077:
        return f"others may use it (mode {st.st_mode & 0o777:o})"
    return None


def control_dir() -> Path:
    """Short (sockets are limited to 108 bytes) and private: $TMPDIR/carla-launch-ssh-UID, made
    0700. Refused when another user owns it or others may enter it: a socket planted there
    would carry our SSH sessions."""
    uid = os.getuid()
    d = Path(tempfile.gettempdir()) / f"carla-launch-ssh-{uid}"
    with contextlib.suppress(FileExistsError):
        d.mkdir(mode=0o700)
    problem = private_dir_problem(d.lstat(), uid)
    if problem:
        raise LauncherError(
            f"{d}: {problem}; SSH control sockets need a folder only you can use: remove it, "
            "or set TMPDIR to a private folder"
        )
    return d


_KNOWN_HOSTS_OPTION = re.compile(
    r"^[ \t]*(user|global)knownhostsfile[ \t]*(?:=[ \t]*|[ \t]+)(\S.*?)[ \t]*$", re.I | re.M
)


def known_hosts_files(
    profile_file: str | None, user_config: str | None, home: Path, user: str
) -> list[str]:
    """The known_hosts files OpenSSH may check: the profile's (it overrides the user's), else
    those the user's ssh_config names and OpenSSH's defaults; then the system-wide ones. Pure;
    a superset is fine (a change to any of them only costs a new connection)."""
    named: dict[str, list[str]] = {"user": [], "global": []}
    tokens = {"%d": str(home), "%u": user, "%%": "%"}
    for kind, value in _KNOWN_HOSTS_OPTION.findall(user_config or ""):
        try:
            words = shlex.split(value, comments=True)
        except ValueError:
            continue
        for w in words:
            if w.lower() != "none":
                path = re.sub("%[du%]", lambda m: tokens[m.group()], w)
                named[kind.lower()].append(str(home / path[2:]) if path.startswith("~/") else path)
    ssh = home / ".ssh"
    own = (
        [profile_file]
        if profile_file
        else [*named["user"], f"{ssh}/known_hosts", f"{ssh}/known_hosts2"]
    )
    system = [*named["global"], "/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"]
    return list(dict.fromkeys([*own, *system]))


def _user_name() -> str:
    """The local user name, as OpenSSH's %u has it."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def known_hosts_digest(files: list[str]) -> str:
    """A short digest of the known_hosts files' contents: part of the ControlPath, so that a
    changed file means a new connection that checks the host key, not an open one reused."""
    h = hashlib.sha256()
    for name in files:
        try:
            content = Path(name).read_bytes()
        except OSError:
            content = b"-"
        h.update(f"{name}\0{len(content)}\0".encode() + content)
    return h.hexdigest()[:8]


def render_ssh_config(
    profile: Profile,
    user_config: str | None,
    user_config_name: str = "~/.ssh/config",
    accept_new_host_key: bool = False,
    *,
    control_path: str | None = None,
) -> str:
    """The ssh_config for a profile: its hosts, our policy, then the user's own config. Pure.

    `control_path`: where the shared connections' sockets go (`%C` is appended); None: none.
    Every path is quoted for ssh_config (`ssh_config_value`); host, user and jump values were
    checked at load to hold no spaces, quotes or control characters.
    """
    r = profile.remote
    lines = [f"# Generated by carla-launch from {_comment(profile.path)}; rewritten on every use."]
    host_opts = []
    if r.user:
        host_opts.append(f"User {r.user}")
    if r.port:
        host_opts.append(f"Port {r.port}")
    if r.identity_file:
        host_opts.append(f"IdentityFile {ssh_config_value(_path(profile, r.identity_file) or '')}")
    if r.jump:
        host_opts.append(f"ProxyJump {r.jump}")
    if host_opts:
        lines.append("Host " + " ".join(r.hosts))
        lines += [f"  {o}" for o in host_opts]
    accept = accept_new_host_key or r.accept_new_host_key
    lines.append("Host *")
    lines.append(f"  StrictHostKeyChecking {'accept-new' if accept else 'yes'}")
    if r.known_hosts:
        known = ssh_config_value(_path(profile, r.known_hosts) or "")
        lines.append(f"  UserKnownHostsFile {known}")
    lines += [
        "  BatchMode yes",
        f"  ConnectTimeout {r.connect_timeout}",
        "  ServerAliveInterval 15",
        "  ServerAliveCountMax 4",
    ]
    if control_path is not None:
        # one TCP+SSH handshake per box and minute: status, the server pane and the probe's
        # helpers then open a channel in ~0.1 s instead of a new connection in ~0.35 s
        socket = ssh_config_value(control_path)[:-1] + '%C"'  # %C: ssh's hash of host and user
        lines += ["  ControlMaster auto", f"  ControlPath {socket}", "  ControlPersist 60"]
    if user_config:
        lines += ["", f"# ---- {_comment(user_config_name)} ----", user_config.rstrip("\n")]
    return "\n".join(lines) + "\n"


def ssh_config_file(profile: Profile, accept_new_host_key: bool = False) -> Path:
    """Write (when changed) and return the profile's generated ssh_config."""
    src = user_config_path(profile)
    try:
        user_text: str | None = src.read_text(encoding="utf-8")
    except OSError:
        user_text = None
    files = known_hosts_files(
        _path(profile, profile.remote.known_hosts),
        user_text,
        Path.home(),
        _user_name(),
    )
    control = f"{control_dir()}/{known_hosts_digest(files)}-"
    text = render_ssh_config(
        profile, user_text, str(src), accept_new_host_key, control_path=control
    )
    key = hashlib.sha256(f"{profile.path}|{accept_new_host_key}".encode()).hexdigest()[:10]
    path = state_dir() / "ssh" / f"{profile.name}-{key}.conf"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        if path.read_text(encoding="utf-8") == text:
            return path
    except OSError:
        pass
    atomic_write(path, text, mode=0o600)
    return path


def ssh_argv(
    profile: Profile,
    host: str | None = None,
    *,
    tty: bool = False,
    command: str | None = None,
    accept_new_host_key: bool = False,
) -> list[str]:
    """An OpenSSH command line for the profile's box (`connector: local`: a local shell).

    `command` is one remote shell command line; build it with `shlex.quote` for each value.
    """
    host = host or profile.remote.host
    if profile.remote.connector == "local":
        if command is None:
            return [os.environ.get("SHELL") or "/bin/sh"]
        return ["/bin/sh", "-c", command]
    argv = ["ssh", "-F", str(ssh_config_file(profile, accept_new_host_key)), "-t" if tty else "-T"]
    argv += ["--", str(host)]
    if command is not None:
        argv.append(command)
    return argv


def effective_option(profile: Profile, host: str, key: str) -> str | None:
    """What OpenSSH would use for `key` when connecting to host (`ssh -G`), or None."""
    done = proc.run(["ssh", "-F", str(ssh_config_file(profile)), "-G", "--", host], 10)
    for line in done.stdout.splitlines():
        k, _, v = line.partition(" ")
        if k.lower() == key.lower():
            return v.split()[0] if v.split() else None
    return None


def known_hosts_in_use(profile: Profile, host: str) -> str:
    """The known_hosts file OpenSSH really checks for host (as a user would write it)."""
    found = effective_option(profile, host, "userknownhostsfile")
    if found:
        return display_path(str(Path(found).expanduser()))
    return display_path(known_hosts_path(profile))


def explain_failure(
    profile: Profile, host: str, stderr: str, rc: int | None = 255, with_host: bool = True
) -> str:
    """`explain.explain` for this profile's box: its known_hosts and connect timeout."""
    return explain(
        rc,
        stderr,
        host,
        known_hosts=lambda: known_hosts_in_use(profile, host),
        connect_timeout=profile.remote.connect_timeout,
        with_host=with_host,
    )
