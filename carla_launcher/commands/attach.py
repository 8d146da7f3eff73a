"""`carla-launch attach`."""

from __future__ import annotations

import click

from carla_launcher import session as sess
from carla_launcher.commands.options import (
    compose_file_option,
    gpu_pane_option,
    profile_argument,
    read_write_option,
)
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
    """The remote server's tmux pane beside the agent's pane, in one local tmux window.

    The server pane is `ssh -t box tmux attach -r -t <session>` (read-only unless --rw); the
    agent pane runs the compose variant that `up` used, with the CARLA_LAUNCH_HOST/PORT that
    `up` gave it (env-mode variants read them). Panes that still run are kept, so
    attaching again never restarts anything; an agent pane that ended is started again as
    `up` started it, with what followed `up P --` (`--build`, a service).
    Detach with the tmux prefix and `d`.
    """
    prof = load_profile(profile)
    result = attach_session(prof, compose, gpu=gpu, read_write=read_write)
    name = sess.session_name(prof.key)
    if result.created or result.respawned:
        click.echo(
            f"session {name}: "
            + ", ".join(
                [f"opened {r}" for r in result.created]
                + [f"restarted {r}" for r in result.respawned]
            ),
            err=True,
        )
    if no_attach:
        click.echo(name)
        return
    sess.attach(sess.tmux_server(), name)
