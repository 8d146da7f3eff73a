"""`carla-launch deploy P`: a fresh GPU box (or several) to a running, probed CARLA server."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

import click

from carla_launcher.commands.messages import error
from carla_launcher.commands.options import (
    accept_new_host_key_option,
    chosen_hosts,
    host_option,
    profile_argument,
)
from carla_launcher.deploy.runner import DeployReport
from carla_launcher.deploy.runner import deploy as run_deploy
from carla_launcher.jsonout import document, dumps, seconds
from carla_launcher.netaddr import for_url
from carla_launcher.profile import Profile, load_profile
from carla_launcher.term import open_board


@click.command()
@profile_argument()
@click.option(
    "--dry-run",
    "-n",
    is_flag=True,
    help="Read the box(es) and show what would change; change nothing.",
)
@host_option
@accept_new_host_key_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the result as JSON on stdout (schemas/deploy.schema.json).",
)
def deploy(
    profile: str | None, dry_run: bool, host: str | None, accept_new_host_key: bool, as_json: bool
) -> None:
    """Make the box(es) of profile P run the CARLA server, and wait until it answers.

    Over SSH, with pyinfra, on every host of the profile at once: a server user when logging
    in as root, the OS packages, the CARLA package (download with resume or upload, sha256
    checked before unpacking), a launch script that restarts a crashed server, and a tmux
    session that survives disconnects (one of each per free GPU with server.gpus). Ends when
    every server answers CARLA's `version` call, or fails with the tail of its log. Running it
    again changes nothing that is in place.

    \b
    Exit codes: 0 every server is up, 1 a host failed, 2 bad input.
    """
    prof = load_profile(profile)
    hosts = chosen_hosts(prof, host)
    board = open_board(sys.stderr)  # live rows on a terminal; None: plain lines (a log, a pipe)
    try:
        report = run_deploy(
            prof,
            dry_run=dry_run,
            accept_new_host_key=accept_new_host_key,
            on_line=lambda line: click.echo(line, err=True),
            board=board,
            hosts=hosts,
        )
    finally:
        if board is not None:
            board.close()
    if as_json:
        click.echo(dumps(to_json(report)))
    else:
        _summary(report, prof)
    if not report.ok:
        raise SystemExit(1)


def _summary(report: DeployReport, prof: Profile) -> None:
    for h in report.hosts:
        if not h.ok:
            error(f"{h.host}: {h.error or 'failed'}")
            for line in h.log_tail:
                click.echo(f"  | {line}", err=True)
            continue
        servers = h.servers or [{"slot": 0, "gpu": None, "port": h.port, "version": h.version}]
        if report.dry_run:
            todo = [f"{s['name']} ({s['why']})" for s in h.steps if s.get("changes")]
            where = ", ".join(_where(h.address, s["port"]) + _gpu(s) for s in servers)
            click.echo(
                f"{h.host}: would "
                + ("; ".join(todo) if todo else "change nothing")
                + f" [server{'s' if len(servers) > 1 else ''} at {where}]"
            )
            continue
        changed = ", ".join(s.lower() for s in h.changed) if h.changed else "nothing changed"
        if prof.server.mode == "slurm":  # Slurm runs the jobs when it decides: not probed here
            click.echo(
                f"{h.host}: {len(servers)} server(s) submitted as Slurm jobs from this login "
                f"node ({changed}); `carla-launch server status {prof.name}` shows where they "
                f"run, `carla-launch up {prof.name}` reaches them"
            )
            continue
        if len(servers) == 1:
            click.echo(
                f"{h.host}: CARLA {h.version} ready at {_where(h.address, h.port)} ({changed})"
            )
            continue
        for s in servers:
            click.echo(
                f"{h.host} server {s['slot']}{_gpu(s)}: CARLA {s['version']} ready at "
                f"{_where(h.address, s['port'])}"
            )
        click.echo(f"{h.host}: {len(servers)} servers ({changed})")


def _where(address: str | None, port: object) -> str:
    return f"{for_url(address)}:{port}" if address else f"port {port}"


def _gpu(server: dict[str, Any]) -> str:
    return f" (GPU {server['gpu']})" if server.get("gpu") is not None else ""


#: What `deploy --json` keeps of the facts read from a box: who, where, and how it was reached
#: (the address evidence); the rest (process tables, the raw status file) is internal.
FACTS_SHOWN = (
    "login_user",
    "server_user",
    "server_home",
    "privilege",
    "ssh_connection",
    "interfaces",
    "hostname_i",
    "package_root",
    "session_dir",
    "marker",
)


def to_json(report: DeployReport) -> dict[str, Any]:
    """`deploy --json` (schemas/deploy.schema.json): the outcome, the time each phase took
    (seconds), and per host what was done and what the box said."""
    hosts = []
    for h in report.hosts:
        d = asdict(h)
        facts = d.pop("facts") or {}
        d["facts"] = {k: facts.get(k) for k in FACTS_SHOWN} if facts else None
        hosts.append(d)
    return document(
        profile=report.profile,
        ok=report.ok,
        dry_run=report.dry_run,
        elapsed_s=seconds(report.elapsed),
        timings_s={k: seconds(v) for k, v in report.timings.items()},
        hosts=hosts,
    )
