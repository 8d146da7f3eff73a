"""`carla-launch up` and `carla-launch down`."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence

import click

from carla_launcher import session as sess
from carla_launcher.box.tunnel import describe
from carla_launcher.commands.options import (
    PassThroughCommand,
    compose_file_option,
    gpu_pane_option,
    profile_argument,
    read_write_option,
)
from carla_launcher.errors import LauncherError, display_path
from carla_launcher.netaddr import for_url
from carla_launcher.profile import load_profile
from carla_launcher.stack import down as stack_down
from carla_launcher.stack import up as stack_up


def _say(line: str) -> None:
    click.echo(line, err=True)


class PartlyUp(LauncherError):
    """Some of what the profile asks for is not up, the rest is (exit 1)."""

    exit_code = 1


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
    """Everything up: servers, variants, an agent per server; each pair's panes side by side.

    Deploys the boxes that have nothing yet, starts the servers that are stopped (every server
    of `server.gpus` on every host of a pool, at once), waits until CARLA answers, syncs the
    distributed variants, and runs `docker compose -p PROJECT -f <variant> up` for each server
    in a local tmux session named carla-P (a window per server), then attaches. Each agent is
    its own compose project, so another profile's agents are never touched; it gets
    CARLA_LAUNCH_HOST/CARLA_LAUNCH_PORT of its server, which variants made with
    `compose.address: env` read (see `carla-launch env P`); several servers need that mode.
    With `remote.tunnel` (true, or auto: when the address does not answer on the world port
    from here) each server gets an SSH tunnel in a pane of its window, CARLA is awaited
    through it, and its agent gets host.docker.internal and the tunnel's local port; a
    tunnel needs `compose.address: env`, and keeps its local ports on the next `up`.
    A host that fails is said in one line and the others go on.
    -f picks the compose file when the folder has several; what follows `--` is passed to
    `docker compose up` (`--build`, a service name) and restarts the agents' panes with it.
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
    if report.changed:
        for what in report.done:
            click.echo(f"up: {what}")
    else:
        click.echo("up: everything is already up; nothing changed")
    for text in pair_lines(report, passed):
        click.echo(text)
    if report.left_out:  # said above, one line each; the pairs that are up stay up
        up = len(report.pairs)
        raise PartlyUp(
            f"not every server is up (the warnings above say why); the {up} that answered "
            f"run with their agents: carla-launch attach {prof.name}"
        )
    if attach is None:
        attach = sys.stdin.isatty() and sys.stdout.isatty()
    if attach:
        sess.attach(sess.tmux_server(), report.session)
    else:
        click.echo(f"attach with: carla-launch attach {prof.name}")


def pair_lines(report: stack_up.UpReport, passed: Sequence[str]) -> list[str]:
    """A line per server and its agent: where the agent reaches the server, the agent's
    command line, and where to see them (one server: the session; several: each one's
    window); before it, for a server reached through an SSH tunnel, a line about the tunnel."""
    variant = display_path(report.variant) if report.variant else "?"  # `up` always sets it
    several = len(report.pairs) > 1
    lines = []
    for pair in report.pairs:
        s = pair.server
        agent = shlex.join(["docker", "compose", "-p", pair.project, "-f", variant, "up", *passed])
        name = f"{s.host} {s.slot}" if several else s.host
        where = f"window: {pair.window}" if several else f"session: {report.session}"
        if s.tunnel is not None:
            lines.append(
                f"{pair.label}: through an SSH tunnel, {describe(s.tunnel, s.host)} ({s.why})"
            )
        address, port = s.agent_address
        lines.append(
            f"server {name} at {for_url(address)}:{port} (CARLA {s.version}); "
            f"agent: {agent}; {where}"
        )
    if several:
        lines.append(f"session: {report.session}, a window per server (tmux prefix and n, p or w)")
    return lines


@click.command()
@profile_argument()
@click.option(
    "--server/--keep-server",
    "stop_server",
    default=None,
    help="Stop the remote servers too (every host). server.mode: slurm does by default, "
    "cancelling their jobs (they hold the cluster's GPUs); --keep-server keeps them.",
)
def down(profile: str | None, stop_server: bool | None) -> None:
    """Every agent of the profile down and the local session closed (--server: its servers too).

    Only the compose projects `up` and `attach` started for this profile go: another
    profile's agents, on the same compose folder or not, keep running. The SSH tunnels go
    with the session; nothing is left listening on their local ports.
    """
    prof = load_profile(profile)
    if stop_server is None:
        stop_server = prof.server.mode == "slurm"
    done = stack_down.down(prof, stop_server, _say)
    for what in done or ["nothing was running"]:
        click.echo(f"down: {what}")
