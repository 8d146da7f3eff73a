"""`carla-launch logs`: the logs of the agents' containers, from the projects `up` recorded.

`logs_argv` is pure; `agent_logs` reads what `up` recorded; `show` hands the terminal to
`docker compose logs` (an exec, as `attach` hands it to tmux), so that `--follow` ends with
Ctrl-C like docker's own and the exit status is docker's. Several agents (a server each) are
shown one after the other under a header, as `tail` shows several files; following needs one
(`--only K`), since one terminal can be handed to one program.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from carla_launcher import proc, records
from carla_launcher.errors import LauncherError, display_path
from carla_launcher.profile import Profile
from carla_launcher.stack.env import checked_env


class NothingStarted(LauncherError):
    """No agent of `up` to show: a fact about this machine, not bad input (exit 1)."""

    exit_code = 1


class CannotRun(LauncherError):
    """docker is missing (127) or cannot run (126), as the shell would say."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class LogsCall:
    """The program to run, where, and with which environment."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    header: str = ""  # `==> HOST server K (PROJECT) <==` when there are several


def logs_argv(
    variant: Path,
    services: Sequence[str],
    *,
    follow: bool,
    tail: int | None,
    project: str | None = None,
) -> list[str]:
    """`docker compose [-p PROJECT] -f VARIANT logs [--follow] [--tail N] -- [SERVICE...]`:
    the services after `--`, so that none is read as an option."""
    named = ["-p", project] if project is not None else []
    argv = ["docker", "compose", *named, "-f", str(variant), "logs"]
    if follow:
        argv.append("--follow")
    if tail is not None:
        argv += ["--tail", str(tail)]
    return [*argv, "--", *services] if services else argv


def agent_logs(
    profile: Profile,
    services: Sequence[str],
    *,
    follow: bool,
    tail: int | None,
    host: str | None = None,
    only: int | None = None,
) -> list[LogsCall]:
    """The `docker compose logs` of each agent `up` started for this profile (on `host`, of
    server `only`, when given), with a header each when there are several."""
    found = records.session(profile)
    again = f"`carla-launch up {profile.name}`"
    if found is None:
        raise NothingStarted(f"no agent started by `up` for profile {profile.name}: run {again}")
    first = profile.remote.hosts[0] if profile.remote.hosts else ""
    agents = [
        a
        for a in found.pairs
        if (host is None or (a.host or first) == host) and (only is None or a.slot == only)
    ]
    if not agents:
        listed = ", ".join(f"{a.host or first} server {a.slot}" for a in found.pairs)
        raise NothingStarted(f"no agent of that server was started by `up` (agents: {listed})")
    if follow and len(agents) > 1:
        choices = ", ".join(str(a.slot) for a in agents)
        raise LauncherError(
            f"{len(agents)} agents: follow one with --only K ({choices})"
            + (" and --host HOST" if len({a.host for a in agents}) > 1 else "")
        )
    calls = []
    for a in agents:
        if not a.variant.is_file():
            raise NothingStarted(
                f"{display_path(a.variant)}, which `up` ran, is gone: run {again} again"
            )
        argv = logs_argv(a.variant, services, follow=follow, tail=tail, project=a.project)
        header = (
            f"==> {a.host or first} server {a.slot} ({a.project}) <==" if len(agents) > 1 else ""
        )
        # an env-mode variant does not load without the CARLA_LAUNCH_* that `up` gave its agent
        calls.append(LogsCall(argv, a.variant.parent, {**os.environ, **checked_env(a.env)}, header))
    return calls


def show_all(
    calls: Sequence[LogsCall], echo: Callable[[str], None], err: Callable[[str], None]
) -> int:
    """One agent: `show` (an exec). Several: each one's logs after its header, in turn; the
    exit status is the first that failed (0: none)."""
    if len(calls) == 1:
        show(calls[0])
    status = 0
    for call in calls:
        echo(call.header)
        result = proc.run(call.argv, None, env=call.env, cwd=str(call.cwd))
        if result.rc in (proc.NOT_FOUND, proc.CANNOT_RUN):
            raise CannotRun(result.stderr, result.rc)
        echo(result.stdout.rstrip("\n"))
        if result.stderr.strip():
            err(result.stderr.rstrip("\n"))
        status = status or result.rc
    return status


def show(call: LogsCall) -> NoReturn:
    """Replace this process with docker compose (no Python process lingers while it follows)."""
    name = call.argv[0]
    os.chdir(call.cwd)
    try:
        os.execvpe(name, call.argv, call.env)  # noqa: S606  exec is the point
    except FileNotFoundError:
        raise CannotRun(
            f"{name}: not found; install Docker and its compose plugin", proc.NOT_FOUND
        ) from None
    except OSError as e:
        raise CannotRun(f"{name}: cannot run: {e.strerror or e}", proc.CANNOT_RUN) from None
