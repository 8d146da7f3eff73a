"""`carla-launch logs`: the logs of the agent's containers, from the compose file `up` ran.

`logs_argv` is pure; `agent_logs` reads what `up` recorded; `show` hands the terminal to
`docker compose logs` (an exec, as `attach` hands it to tmux), so that `--follow` ends with
Ctrl-C like docker's own and the exit status is docker's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from carla_launcher import proc, records
from carla_launcher.errors import LauncherError, display_path
from carla_launcher.profile import Profile
from carla_launcher.stack.env import compose_environ


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


def logs_argv(
    variant: Path, services: Sequence[str], *, follow: bool, tail: int | None
) -> list[str]:
    """`docker compose -f VARIANT logs [--follow] [--tail N] -- [SERVICE...]`: the services
    after `--`, so that none is read as an option."""
    argv = ["docker", "compose", "-f", str(variant), "logs"]
    if follow:
        argv.append("--follow")
    if tail is not None:
        argv += ["--tail", str(tail)]
    return [*argv, "--", *services] if services else argv


def agent_logs(
    profile: Profile, services: Sequence[str], *, follow: bool, tail: int | None
) -> LogsCall:
    """The `docker compose logs` of what the last `up` of this profile started."""
    found = records.session(profile)
    again = f"`carla-launch up {profile.name}`"
    if found is None:
        raise NothingStarted(f"no agent started by `up` for profile {profile.name}: run {again}")
    if not found.variant.is_file():
        raise NothingStarted(
            f"{display_path(found.variant)}, which `up` ran, is gone: run {again} again"
        )
    argv = logs_argv(found.variant, services, follow=follow, tail=tail)
    # an env-mode variant does not load without the CARLA_LAUNCH_* that `up` gave its agent
    return LogsCall(argv, found.variant.parent, compose_environ(profile))


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
