"""`carla-launch status`."""

from __future__ import annotations

from typing import Any

import click

from carla_launcher.commands.options import profile_argument
from carla_launcher.jsonout import document, dumps
from carla_launcher.profile import load_profile
from carla_launcher.stack.overview import gather
from carla_launcher.stack.report import pairs, problems, render

#: What each pane of the local window shows, for `status --json` (its command line is ours).
PANE_DESCRIPTIONS = {
    "server": "the CARLA server's tmux session on the box, over ssh",
    "agent": "the agent's containers: docker compose up of the variant",
    "tunnel": "the SSH tunnel to the server's ports (ssh -N -L, started again when it ends)",
    "gpu": "GPU use, refreshed every second: carla-launch gpu --watch",
}


@click.command()
@profile_argument()
@click.option(
    "--json", "as_json", is_flag=True, help="The same facts as JSON (schemas/status.schema.json)."
)
def status(profile: str | None, as_json: bool) -> None:
    """Servers, address, daemon, agents' containers and local session, in one table.

    Every host of a pool (`remote.host: [a, b]`) is asked at once and gets its own server,
    server GPU and address rows; a host that cannot be reached is one problem, not a hidden
    pool. Each server of `server.gpus` gets its own row, and so does the agent `up` started
    for it (its own compose project: another profile's agents never show here); `--json`
    lists them as `pairs`, one shape however many. An agent that reaches its server through
    an SSH tunnel (`remote.tunnel`) gets a tunnel row: where it listens here, where it goes,
    how many of its three ports listen and whether its pane runs; the server is asked through it.

    Exits 1 when something is not as the profile asks: something that should run does not
    (server down, its restart loop gone, agent containers or a pane of the session ended, an
    SSH tunnel down), or
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
    pool its address, servers and GPUs; then what runs here; every server and agent pair (one
    shape however many); then the problems (exit 1 when any)."""
    session = facts["session"]
    windows = session.get("windows") or {}
    return document(
        profile=facts["profile"],
        hosts=facts["hosts"],
        daemon=facts["daemon"],
        agent=facts["agent"],
        session={
            **{k: v for k, v in session.items() if k != "windows"},
            "panes": [
                _pane(role, pane, window)
                for window, panes in windows.items()
                for role, pane in panes.items()
            ],
        },
        pairs=pairs(facts),
        problems=found,
    )


def _pane(role: str, pane: dict[str, Any], window: str) -> dict[str, Any]:
    """A pane as scripts need it: its role, window and what it shows, not its (long) shell
    line."""
    return {
        "role": role,
        "window": window,
        "description": PANE_DESCRIPTIONS.get(role, role),
        **{k: pane.get(k) for k in ("alive", "exit_status", "pid", "pane_id")},
    }
