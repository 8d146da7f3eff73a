"""`carla-launch attach`."""

from __future__ import annotations

import sys

import click

from carla_launcher import session as sess
from carla_launcher.commands.options import (
    compose_file_option,
    gpu_pane_option,
    profile_argument,
    read_write_option,
)
from carla_launcher.errors import LauncherError
from carla_launcher.profile import load_profile
from carla_launcher.stack.attach import attach_session


@click.command()
@profile_argument()
@compose_file_option("The compose file for the agent pane (default: the one `up` ran).")
@gpu_pane_option
@read_write_option
@click.option(
    "--no-attach", is_flag=True, help="Build the session, do not attach (scripts, tests)."
)
def attach(
    profile: str | None, compose: str | None, gpu: bool, read_write: bool, no_attach: bool
) -> None:
    """Each server's tmux pane beside its agent's pane, a local tmux window per server.

    The server pane is `ssh -t box tmux attach -r -t <session>` (read-only unless --rw); the
    agent pane runs the compose variant that `up` used, as its own compose project, with the
    CARLA_LAUNCH_HOST/PORT that `up` gave it (env-mode variants read them). Panes that still
    run are kept, so attaching again never restarts anything; an agent pane that ended is
    started again as `up` started it, with what followed `up P --` (`--build`, a service);
    so is an SSH tunnel's pane (`remote.tunnel`), on the local ports `up` chose for it.
    An agent it starts is recorded as `up`'s are: `down` removes it, `status` shows it.
    Refuses, before building anything, when stdout is not a terminal (use --no-attach) or no
    server of the profile runs (exit 1: start them with `up`).
    Detach with the tmux prefix and `d`; go through the windows with the prefix and n, p or w.
    """
    if not no_attach and not sys.stdout.isatty():
        raise LauncherError(
            "attach needs a terminal on stdout: run it in one, or add --no-attach to build "
            "the session without attaching"
        )
    prof = load_profile(profile)
    result = attach_session(prof, compose, gpu=gpu, read_write=read_write)
    several = len(result.windows) > 1
    for window, done in result.windows.items():
        did = [f"opened {r}" for r in done.created] + [f"restarted {r}" for r in done.respawned]
        if did:
            where = f" window {window}" if several else ""
            click.echo(f"session {result.session}{where}: " + ", ".join(did), err=True)
    if no_attach:
        click.echo(result.session)
        return
    sess.attach(sess.tmux_server(), result.session)
