"""`carla-launch logs [P] [SERVICE]...`: the agent's containers' logs, beside `server logs P`."""

from __future__ import annotations

import click

from carla_launcher.commands.options import profile_argument
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
def logs(profile: str | None, services: tuple[str, ...], follow: bool, tail: int | None) -> None:
    """The logs of the agent's containers: `docker compose logs` of the variant `up` ran.

    The server's log is `carla-launch server logs P`. To name a SERVICE, name P before it.
    Exit 1 when `up` started nothing for P (or `down` ended it).
    """
    from carla_launcher.stack.logs import agent_logs, show

    show(agent_logs(load_profile(profile), services, follow=follow, tail=tail))
