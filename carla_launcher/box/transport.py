"""Running one shell script on a box: `run(script, timeout) -> proc.Result`, one interface.

`OpenSsh` sends the script on the standard input of `sh -s` over the profile's ssh_config (no
quoting of a long command line, values stay data); `Local` runs it here for `connector: local`.
The third implementation is pyinfra's host connection, used by the deploy child process only
(`deploy/ops.py`), with the same scripts. Exit codes: 255 is OpenSSH's own failure (see
`explain.py`), 124 our time limit, 127/126 a program that is missing or cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from carla_launcher import proc
from carla_launcher.box.shell import error_line
from carla_launcher.box.ssh import RemoteError, explain_failure, ssh_argv

if TYPE_CHECKING:
    from carla_launcher.profile import Profile


class Transport(Protocol):
    def run(self, script: str, timeout: float) -> proc.Result:
        """Run a POSIX sh script on the box: its exit code and outputs."""


@dataclass(frozen=True)
class OpenSsh:
    """A box over OpenSSH: `ssh -F <generated config> -T -- HOST sh -s`."""

    argv: tuple[str, ...]

    def run(self, script: str, timeout: float) -> proc.Result:
        return proc.run(self.argv, timeout, input=script)


@dataclass(frozen=True)
class Local:
    """This machine is the box (`connector: local`)."""

    def run(self, script: str, timeout: float) -> proc.Result:
        return proc.run(["/bin/sh", "-c", script], timeout)


def transport(
    profile: Profile, host: str | None = None, accept_new_host_key: bool = False
) -> Transport:
    """The profile's way to reach `host` (default: its first host)."""
    if profile.remote.connector == "local":
        return Local()
    argv = ssh_argv(profile, host, command="sh -s", accept_new_host_key=accept_new_host_key)
    return OpenSsh(tuple(argv))


def run(
    profile: Profile,
    host: str | None,
    script: str,
    timeout: float,
    accept_new_host_key: bool = False,
) -> proc.Result:
    """Run a script on the profile's box; failures are exit codes (see the module doc)."""
    return transport(profile, host, accept_new_host_key).run(script, timeout)


def check(
    profile: Profile,
    host: str | None,
    script: str,
    timeout: float,
    accept_new_host_key: bool = False,
) -> str:
    """`run`, raising RemoteError with one line on any failure; returns stdout."""
    host = host or profile.remote.host or "localhost"
    r = run(profile, host, script, timeout, accept_new_host_key)
    if r.rc == 0:
        return r.stdout
    if r.rc == 255 and profile.remote.connector != "local":
        raise RemoteError(explain_failure(profile, host, r.stderr))
    if r.rc == proc.TIMED_OUT:
        raise RemoteError(f"{host}: no answer within {timeout:.0f} s")
    why = error_line(r.stdout.splitlines(), r.stderr.splitlines()) or f"exit code {r.rc}"
    raise RemoteError(f"{host}: {why}")
