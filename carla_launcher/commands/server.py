"""`carla-launch server start|stop|restart|status|logs P`: the deployed server, over SSH."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from carla_launcher import parallel, proc
from carla_launcher.box.address import agent_address
from carla_launcher.errors import LauncherError
from carla_launcher.profile import Profile, load_profile
from carla_launcher.server import control
from carla_launcher.server.probe import NotReady
from carla_launcher.term import ProgressLine


def _hosts(prof: Profile, host: str | None) -> list[str]:
    return [host] if host else list(prof.remote.hosts)


T = TypeVar("T")


def _each(hosts: list[str], fn: Callable[[str], T]) -> list[tuple[str, T | None, str | None]]:
    """fn(host) on every host in parallel: [(host, result, error line)]; one host's failure
    does not hide the others' results."""

    def one(h: str) -> tuple[str, T | None, str | None]:
        try:
            return h, fn(h), None
        except LauncherError as e:
            return h, None, str(e)

    return parallel.each(hosts, one)


host_option = click.option("--host", metavar="HOST", help="One host of a pool (default: all).")


@click.group()
def server() -> None:
    """Start, stop, restart and inspect the CARLA server that `deploy` set up on a box."""


@server.command()
@click.argument("profile", metavar="P")
@host_option
@click.option("--no-wait", is_flag=True, help="Do not wait until the server answers.")
def start(profile: str, host: str | None, no_wait: bool) -> None:
    """Start the server in its tmux session (no-op when it runs) and wait until it answers."""
    prof = load_profile(profile)
    _then_wait(
        prof,
        host,
        control.start,
        lambda started: "started" if started else "already running",
        no_wait,
    )


def _then_wait(prof: Profile, host: str | None, action: Any, said: Any, no_wait: bool) -> None:
    """action(prof, h) on every host; then, unless no_wait, wait until each server answers."""
    failed = False
    for h, result, err in _each(_hosts(prof, host), lambda h: action(prof, h)):
        if err:
            click.echo(f"error: {err}", err=True)
            failed = True
            continue
        click.echo(f"{h}: {said(result)}", err=True)
        if not no_wait:
            failed |= not _wait(prof, h)
    if failed:
        raise SystemExit(1)


def _wait(prof: Profile, host: str) -> bool:
    try:
        st = control.server_status(prof, host)
        port = st.get("port") or prof.server.port
        addr = agent_address(prof, host)
        line = ProgressLine(
            f"{host}: CARLA at {addr}:{port}",
            lambda s: click.echo(s, err=True, nl=False),
            tty=sys.stderr.isatty(),
        )
        try:
            version = control.wait_started(prof, host, addr, port, line)
        finally:
            line.done()
    except NotReady as e:
        click.echo(f"error: {host}: CARLA did not answer: {e}", err=True)
        return False
    except LauncherError as e:
        click.echo(f"error: {e}", err=True)
        return False
    click.echo(f"{host}: CARLA {version} ready at {addr}:{port}")
    return True


@server.command()
@click.argument("profile", metavar="P")
@host_option
def stop(profile: str, host: str | None) -> None:
    """Stop the server: its whole process group, and wait until its ports are free."""
    prof = load_profile(profile)
    failed = False
    for h, stopped, err in _each(_hosts(prof, host), lambda h: control.stop(prof, h)):
        if err:
            click.echo(f"error: {err}", err=True)
            failed = True
        else:
            click.echo(f"{h}: {'stopped; its ports are free' if stopped else 'was not running'}")
    if failed:
        raise SystemExit(1)


@server.command()
@click.argument("profile", metavar="P")
@host_option
@click.option("--no-wait", is_flag=True, help="Do not wait until the server answers.")
def restart(profile: str, host: str | None, no_wait: bool) -> None:
    """Stop, then start the server (and wait until it answers)."""
    _then_wait(load_profile(profile), host, control.restart, lambda _: "restarted", no_wait)


@server.command()
@click.argument("profile", metavar="P")
@host_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON: an object (a list of them for a pool)."
)
def status(profile: str, host: str | None, as_json: bool) -> None:
    """Running or not, since when, restarts, port, the last crash line. Exit 1 if not running."""
    prof = load_profile(profile)
    results = [control.server_status(prof, host)] if host else control.server_statuses(prof)
    if as_json:
        click.echo(json.dumps(results if len(results) > 1 else results[0], indent=2))
    else:
        for st in results:
            click.echo(_status_line(st))
    if not all(st.get("running") for st in results):
        raise SystemExit(1)


def _status_line(st: dict[str, Any]) -> str:
    if st.get("error"):
        return f"{st['host']}: unknown ({st['error']})"
    if st.get("running"):
        line = f"{st['host']}: running on port {st.get('port')}"
        if st.get("since"):
            line += f" since {st['since']}"
        if st.get("pid"):
            line += f" (process group {st['pid']})"
    else:
        line = f"{st['host']}: {st.get('state') or 'not running'}"
        if st.get("port"):
            line += f" (port {st['port']})"
    line += f", {st.get('restarts') or 0} restart(s)"
    if st.get("last_crash_line"):
        line += f"; last crash: {st['last_crash_line']}"
    return line


@server.command()
@click.argument("profile", metavar="P")
@host_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C ends).")
@click.option(
    "--lines",
    "-n",
    type=click.IntRange(1, 100000),
    default=50,
    show_default=True,
    help="How many of the last lines.",
)
def logs(profile: str, host: str | None, follow: bool, lines: int) -> None:
    """Show the server log of the box (the launch loop's notes and CARLA's output)."""
    prof = load_profile(profile)
    h = host or prof.remote.host
    argv = control.logs_command(prof, h, lines, follow)
    try:
        rc = proc.call(argv)
    except KeyboardInterrupt:
        rc = 0
    if rc == 255:
        raise SystemExit(1)
    raise SystemExit(rc)
