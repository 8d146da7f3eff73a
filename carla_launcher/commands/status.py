"""`carla-launch status`."""

from __future__ import annotations

import json

import click

from carla_launcher.commands.options import profile_argument
from carla_launcher.profile import load_profile
from carla_launcher.stack.overview import gather, problems, render


@click.command()
@profile_argument()
@click.option("--json", "as_json", is_flag=True, help="The same facts as JSON.")
def status(profile: str | None, as_json: bool) -> None:
    """Server, address, daemon, agent containers and local session, in one table.

    Exits 1 when something that should run does not (server down, agent containers or a pane
    of the session ended, variants stale).
    """
    prof = load_profile(profile)
    facts = gather(prof)
    found = problems(facts)
    if as_json:
        click.echo(json.dumps({**facts, "problems": found}, indent=2, default=str))
    else:
        for line in render(facts):
            click.echo(line)
        for p in found:
            click.echo(f"problem: {p}", err=True)
    if found:
        raise SystemExit(1)
