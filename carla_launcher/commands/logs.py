"""`carla-launch logs [P] [SERVICE]...`: the agent's containers' logs, beside `server logs P`."""

from __future__ import annotations

import click

from carla_launcher.commands.options import chosen_hosts, host_option, only_option, profile_argument
from carla_launcher.profile import load_profile


@click.command()
@profile_argument()
@click.argument("services", metavar="[SERVICE]...", nargs=-1, help="Only these services.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C ends).")
@click.option(
    "--tail",
    "-n",
    type=click.IntRange(0),
    metavar="N",
    help="Only the last N lines of each container (default: all).",
)
@host_option
@only_option("Only the agent of server K")
def logs(
    profile: str | None,
    services: tuple[str, ...],
    follow: bool,
    tail: int | None,
    host: str | None,
    only: int | None,
) -> None:
    """The logs of the agents' containers: `docker compose logs` of the projects `up` started.

    The servers' logs are `carla-launch server logs P`. To name a SERVICE, name P before it.
    With several servers (`server.gpus`, a pool) each agent's logs come in turn under a
    `==> HOST server K (PROJECT) <==` header; --follow needs one of them (--only K, and
    --host H in a pool). Exit 1 when `up` started nothing for P (or `down` ended it).
    """
    from carla_launcher.stack.logs import agent_logs, show_all

    prof = load_profile(profile)
    if host is not None:
        chosen_hosts(prof, host)  # a host of the profile, or a usage error naming them
    calls = agent_logs(prof, services, follow=follow, tail=tail, host=host, only=only)
    status = show_all(calls, click.echo, lambda line: click.echo(line, err=True))
    if status:
        raise SystemExit(status)
