"""`carla-launch up` and `carla-launch down`."""

from __future__ import annotations

import shlex
import sys

import click

from carla_launcher import session as sess
from carla_launcher.commands.options import (
    PassThroughCommand,
    compose_file_option,
    gpu_pane_option,
    profile_argument,
    read_write_option,
)
from carla_launcher.errors import display_path
from carla_launcher.profile import load_profile
from carla_launcher.stack import down as stack_down
from carla_launcher.stack import up as stack_up


def _say(line: str) -> None:
    click.echo(line, err=True)


@click.command(cls=PassThroughCommand)
@profile_argument()
@compose_file_option(
    "The compose file to run (source or variant name) when the compose folder has several."
)
@click.option(
    "--attach/--no-attach",
    default=None,
    help="Attach to the session at the end (default: when stdin is a terminal).",
)
@gpu_pane_option
@read_write_option
def up(
    profile: str | None,
    compose: str | None,
    attach: bool | None,
    gpu: bool,
    read_write: bool,
    passed: tuple[str, ...],
) -> None:
    """Everything up: server, variants, agent; then the two panes side by side.

    Deploys the box when it has nothing yet, starts the server when it is stopped, waits until
    CARLA answers, syncs the distributed variants with the box's address, runs
    `docker compose -f <variant> up` in a local tmux session named carla-P and attaches.
    The agent gets CARLA_LAUNCH_HOST/CARLA_LAUNCH_PORT for the box, which variants made with
    `compose.address: env` read (see `carla-launch env P`).
    -f picks the compose file when the folder has several; what follows `--` is passed to
    `docker compose up` (`--build`, a service name) and restarts the agent's pane with it.
    Running it again when all is up changes nothing and says so.
    """
    from carla_launcher.term import ProgressLine, open_board

    prof = load_profile(profile)
    line = ProgressLine(
        "waiting for CARLA", lambda s: click.echo(s, err=True, nl=False), tty=sys.stderr.isatty()
    )
    try:
        report = stack_up.up(
            prof,
            compose,
            _say,
            gpu=gpu,
            read_write=read_write,
            progress=line,
            compose_args=passed,
            live=lambda: open_board(sys.stderr),
        )
    finally:
        line.done()
    where = f"{report.address}:{report.port}"
    if report.changed:
        for what in report.done:
            click.echo(f"up: {what}")
    else:
        click.echo("up: everything is already up; nothing changed")
    name = sess.session_name(prof.key)
    variant = display_path(report.variant) if report.variant else "?"  # `up` always sets it
    agent = shlex.join(["docker", "compose", "-f", variant, "up", *passed])
    click.echo(
        f"server {report.host} at {where} (CARLA {report.version}); agent: {agent}; session: {name}"
    )
    if attach is None:
        attach = sys.stdin.isatty() and sys.stdout.isatty()
    if attach:
        sess.attach(sess.tmux_server(), name)
    else:
        click.echo(f"attach with: carla-launch attach {prof.name}")


@click.command()
@profile_argument()
@click.option("--server", "stop_server", is_flag=True, help="Stop the remote server too.")
def down(profile: str | None, stop_server: bool) -> None:
    """Agent containers down and the local session closed (--server: the remote server too)."""
    prof = load_profile(profile)
    done = stack_down.down(prof, stop_server, _say)
    for what in done or ["nothing was running"]:
        click.echo(f"down: {what}")
