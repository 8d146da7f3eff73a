"""`carla-launch status`."""

from __future__ import annotations

from typing import Any

import click

from carla_launcher.commands.options import profile_argument
from carla_launcher.jsonout import document, dumps
from carla_launcher.profile import load_profile
from carla_launcher.stack.overview import gather, problems, render

#: What each pane of the local window shows, for `status --json` (its command line is ours).
PANE_DESCRIPTIONS = {
    "server": "the CARLA server's tmux session on the box, over ssh",
    "agent": "the agent's containers: docker compose up of the variant",
    "gpu": "GPU use, refreshed every second: carla-launch gpu --watch",
}


@click.command()
@profile_argument()
@click.option(
    "--json", "as_json", is_flag=True, help="The same facts as JSON (schemas/status.schema.json)."
)
def status(profile: str | None, as_json: bool) -> None:
    """Server, address, daemon, agent containers and local session, in one table.

    Every host of a pool (`remote.host: [a, b]`) is asked at once and gets its own server,
    server GPU and address rows; a host that cannot be reached is one problem, not a hidden
    pool.

    Exits 1 when something is not as the profile asks: something that should run does not
    (server down, its restart loop gone, agent containers or a pane of the session ended), or
    is out of date (variants stale, a launch script older than the profile's last edit, a port
    of the server held by someone else). A server stopped with `server stop` or
    `down --server` is stopped on purpose, not a problem.
    """
    prof = load_profile(profile)
    facts = gather(prof)
    found = problems(facts)
    if as_json:
        click.echo(dumps(to_json(facts, found)))
    else:
        for line in render(facts):
            click.echo(line)
        for p in found:
            click.echo(f"problem: {p}", err=True)
    if found:
        raise SystemExit(1)


def to_json(facts: dict[str, Any], found: list[str]) -> dict[str, Any]:
    """`status --json` (schemas/status.schema.json) from the overview's facts: per host of the
    pool its address, server and GPUs; then what runs here; then the problems (exit 1 when
    any)."""
    session = facts["session"]
    panes = session.get("panes") or {}
    return document(
        profile=facts["profile"],
        hosts=facts["hosts"],
        daemon=facts["daemon"],
        agent=facts["agent"],
        session={
            **{k: v for k, v in session.items() if k != "panes"},
            "panes": [_pane(role, pane) for role, pane in panes.items()],
        },
        problems=found,
    )


def _pane(role: str, pane: dict[str, Any]) -> dict[str, Any]:
    """A pane as scripts need it: its role and what it shows, not its (long) shell line."""
    return {
        "role": role,
        "description": PANE_DESCRIPTIONS.get(role, role),
        **{k: pane.get(k) for k in ("alive", "exit_status", "pid", "pane_id")},
    }
