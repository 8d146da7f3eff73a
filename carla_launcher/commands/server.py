"""`carla-launch server start|stop|restart|status|logs|uninstall P`: the deployed server, over
SSH. `start` and `restart` first apply a profile changed since the deploy (a redeploy)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from carla_launcher import parallel, proc
from carla_launcher.box.address import agent_address
from carla_launcher.commands.messages import error
from carla_launcher.commands.options import chosen_hosts, host_option, profile_argument
from carla_launcher.errors import LauncherError
from carla_launcher.jsonout import document, dumps
from carla_launcher.profile import Profile, load_profile
from carla_launcher.server import control
from carla_launcher.server.probe import NotReady
from carla_launcher.server.state import LOOP_GONE, notes, state_words
from carla_launcher.term import ProgressLine

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


@click.group()
def server() -> None:
    """Start, stop, restart and inspect the CARLA server that `deploy` set up on a box."""


@server.command()
@profile_argument()
@host_option
@click.option("--no-wait", is_flag=True, help="Do not wait until the server answers.")
def start(profile: str | None, host: str | None, no_wait: bool) -> None:
    """Start the server in its tmux session (no-op when it runs) and wait until it answers.

    When the profile changed since the deploy (args, port, GPU, settings, restart), the launch
    script is redeployed first, which also restarts a running server.
    """
    prof = load_profile(profile)
    redeployed = _apply_drift(prof, host)
    _then_wait(
        prof,
        host,
        lambda p, h: "redeployed" if h in redeployed else control.start(p, h),
        lambda started: {True: "started", False: "already running"}.get(started, started),
        no_wait,
    )


def _apply_drift(prof: Profile, host: str | None) -> set[str]:
    """Redeploy the hosts whose launch script the profile has drifted from; those hosts."""
    from carla_launcher.stack.up import redeploy_drifted

    if host:
        try:
            statuses = [control.server_status(prof, host)]
        except LauncherError:
            return set()  # the action itself reports the failure
    else:
        statuses = control.server_statuses(prof)
    return redeploy_drifted(prof, statuses, lambda line: click.echo(line, err=True))


def _then_wait(prof: Profile, host: str | None, action: Any, said: Any, no_wait: bool) -> None:
    """action(prof, h) on every host; then, unless no_wait, wait until each server answers."""
    failed = False
    for h, result, err in _each(chosen_hosts(prof, host), lambda h: action(prof, h)):
        if err:
            error(err)
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
        error(f"{host}: CARLA did not answer: {e}")
        return False
    except LauncherError as e:
        error(str(e))
        return False
    click.echo(f"{host}: CARLA {version} ready at {addr}:{port}")
    return True


@server.command()
@profile_argument()
@host_option
def stop(profile: str | None, host: str | None) -> None:
    """Stop the server: its whole process group, and wait until its ports are free."""
    prof = load_profile(profile)
    failed = False
    by = "carla-launch server stop"
    for h, done, err in _each(chosen_hosts(prof, host), lambda h: control.stop_report(prof, h, by)):
        if err or done is None:
            error(err or f"{h}: no answer")
            failed = True
            continue
        stopped, warning = done
        click.echo(f"{h}: {'stopped; its ports are free' if stopped else 'was not running'}")
        if warning:
            click.echo(f"warning: {h}: {warning}", err=True)
    if failed:
        raise SystemExit(1)


@server.command()
@profile_argument()
@host_option
@click.option("--no-wait", is_flag=True, help="Do not wait until the server answers.")
def restart(profile: str | None, host: str | None, no_wait: bool) -> None:
    """Stop, then start the server (and wait until it answers); a profile changed since the
    deploy is applied (the launch script is redeployed)."""
    prof = load_profile(profile)
    redeployed = _apply_drift(prof, host)
    _then_wait(
        prof,
        host,
        lambda p, h: "redeployed" if h in redeployed else control.restart(p, h),
        lambda result: result if isinstance(result, str) else "restarted",
        no_wait,
    )


@server.command()
@profile_argument()
@host_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print {schema_version, profile, hosts: [...]} (schemas/server-status.schema.json).",
)
def status(profile: str | None, host: str | None, as_json: bool) -> None:
    """Running or not, since when, restarts, port, the last crash line, or who stopped it.
    Exit 1 if not running (stopped on purpose too: `carla-launch status` accepts that)."""
    prof = load_profile(profile)
    results = [control.server_status(prof, host)] if host else control.server_statuses(prof)
    if as_json:
        click.echo(dumps(document(profile=prof.name, hosts=results)))
    else:
        for st in results:
            click.echo(_status_line(st))
            for note in notes(st, prof.name):
                click.echo(f"{st['host']}: {note}", err=True)
    if not all(st.get("running") for st in results):
        raise SystemExit(1)


def _status_line(st: dict[str, Any]) -> str:
    if st.get("error"):
        return f"{st['host']}: unknown ({st['error']})"
    if st.get("running"):
        gone = ", restart loop gone" if st.get("state") == LOOP_GONE else ""
        line = f"{st['host']}: running{gone} on port {st.get('port')}"
        if st.get("since"):
            line += f" since {st['since']}"
        if st.get("pid"):
            line += f" (process group {st['pid']})"
    else:
        line = f"{st['host']}: {state_words(st)}"
        if st.get("port"):
            line += f"; port {st['port']}"
    line += f", {st.get('restarts') or 0} restart(s)"
    if st.get("last_crash_line") and st.get("running"):  # not running: state_words said it
        line += f"; last crash: {st['last_crash_line']}"
    return line


@server.command()
@profile_argument()
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
def logs(profile: str | None, host: str | None, follow: bool, lines: int) -> None:
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


@server.command()
@profile_argument()
@host_option
@click.option(
    "--user",
    "remove_user",
    is_flag=True,
    help="Remove the server user too (only one the deploy created).",
)
@click.option(
    "--dry-run", is_flag=True, help="List what would be removed (with sizes); remove nothing."
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask (needed when not on a terminal).")
def uninstall(
    profile: str | None, host: str | None, remove_user: bool, dry_run: bool, yes: bool
) -> None:
    """Stop the server and remove it from the box: the install root, the launch files and the
    download cache of this profile (with --user, the server user and its home).

    Only what carla-launch made goes: an install root without carla-launch's marker, a user
    the deploy did not create, root and the login user are kept, and it says so.
    """
    from carla_launcher.server import uninstall as un

    if not (dry_run or yes or sys.stdin.isatty()):
        raise LauncherError(
            "server uninstall deletes files on the box: add --yes "
            "(or --dry-run to list what it removes)"
        )
    prof = load_profile(profile)
    archive = _archive_name(prof)
    hosts = chosen_hosts(prof, host)
    if dry_run or not yes:
        found, failed = _show(hosts, lambda h: un.inspect(prof, h, archive, remove_user), True)
        if dry_run or failed:
            raise SystemExit(1 if failed else 0)
        if not any(f.items or (f.user and f.user[0] == "remove") for f in found):
            return
        click.confirm("Remove these from the box?", abort=True, err=True)
    if _show(hosts, lambda h: un.uninstall(prof, h, archive, remove_user), False)[1]:
        raise SystemExit(1)


def _show(hosts: list[str], fn: Callable[[str], Any], dry_run: bool) -> tuple[list[Any], bool]:
    """fn(host) on every host, rendered; its results, and whether one failed."""
    from carla_launcher.server.uninstall import render

    failed, results = False, []
    for h, found, err in _each(hosts, fn):
        if err or found is None:
            error(err or f"{h}: no answer")
            failed = True
            continue
        results.append(found)
        for line in render(h, found, dry_run):
            click.echo(line)
    return results, failed


def _archive_name(prof: Profile) -> str | None:
    """The file name the profile's package has in the box's download cache."""
    from carla_launcher.deploy.package import package_source

    pkg = prof.server.package
    try:
        return package_source(pkg.url, pkg.sha256, prof.base_dir).archive_name
    except (ValueError, LauncherError):  # a URL the deploy refuses never reached the box
        return None
