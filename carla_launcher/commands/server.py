"""`carla-launch server start|stop|restart|status|logs|uninstall P`: the deployed server(s),
over SSH. `start` and `restart` first apply a profile changed since the deploy (a redeploy).

With `server.gpus` a host runs several servers (slots, `server/slots.py`): every command covers
all of them on the chosen hosts, or server K alone with `--only K`; each server's line names it
("gpu-box server 1 (GPU 1, port 2003): running ..."). `logs` shows every server's log of the
box in one `tail` (its `==> FILE <==` headers, whose folder is the server's session, tell them
apart; with `-f` too), so that a crash on one GPU is not missed for looking at another.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from carla_launcher import parallel, proc
from carla_launcher.box.address import agent_address
from carla_launcher.commands.messages import error
from carla_launcher.commands.options import (
    chosen_hosts,
    host_option,
    only_option,
    profile_argument,
)
from carla_launcher.errors import LauncherError
from carla_launcher.jsonout import document, dumps
from carla_launcher.profile import Profile, load_profile
from carla_launcher.server import control
from carla_launcher.server.probe import NotReady
from carla_launcher.server.slurm import job_words
from carla_launcher.server.state import LOOP_GONE, notes, state_words
from carla_launcher.term import ProgressLine

T = TypeVar("T")

ONLY = only_option("Only server K of each host")


def _each(hosts: list[str], fn: Callable[[str], T]) -> list[tuple[str, T | None, str | None]]:
    """fn(host) on every host in parallel: [(host, result, error line)]; one host's failure
    does not hide the others' results."""

    def one(h: str) -> tuple[str, T | None, str | None]:
        try:
            return h, fn(h), None
        except LauncherError as e:
            return h, None, str(e)

    return parallel.each(hosts, one)


def _several(prof: Profile, found: list[dict[str, Any]]) -> bool:
    """Are the servers named one by one? With server.gpus, or when a box has more than one."""
    return prof.server.gpus is not None or any(st.get("slot") for st in found)


def label(st: dict[str, Any], several: bool, port: bool = False) -> str:
    """How a line names a server: its host, and with several servers which one.

    >>> label({"host": "gpu", "slot": 1, "gpu": 1, "port": 2003}, True, port=True)
    'gpu server 1 (GPU 1, port 2003)'
    >>> label({"host": "gpu", "slot": 0, "gpu": None}, False)
    'gpu'
    """
    if not several or st.get("slot") is None:
        return str(st["host"])
    what = [f"GPU {st['gpu']}"] if st.get("gpu") is not None else []
    if port and st.get("port"):
        what.append(f"port {st['port']}")
    return f"{st['host']} server {st['slot']}" + (f" ({', '.join(what)})" if what else "")


@click.group()
def server() -> None:
    """Start, stop, restart and inspect the CARLA server(s) that `deploy` set up on a box."""


@server.command()
@profile_argument()
@host_option
@ONLY
@click.option("--no-wait", is_flag=True, help="Do not wait until the server answers.")
def start(profile: str | None, host: str | None, only: int | None, no_wait: bool) -> None:
    """Start the server(s) in their tmux sessions (no-op when running) and wait until they
    answer.

    When the profile changed since the deploy (args, port, GPU(s), settings, restart), the
    launch scripts are redeployed first, which also restarts running servers.
    """
    prof = load_profile(profile)
    _act(prof, chosen_hosts(prof, host), only, control.start_servers, "started", no_wait)


@server.command()
@profile_argument()
@host_option
@ONLY
@click.option("--no-wait", is_flag=True, help="Do not wait until the server answers.")
def restart(profile: str | None, host: str | None, only: int | None, no_wait: bool) -> None:
    """Stop, then start the server(s) (and wait until they answer); a profile changed since
    the deploy is applied (the launch scripts are redeployed)."""
    prof = load_profile(profile)
    _act(prof, chosen_hosts(prof, host), only, control.restart_servers, "restarted", no_wait)


def _act(
    prof: Profile,
    hosts: list[str],
    only: int | None,
    action: Callable[[Profile, str, int | None], list[dict[str, Any]]],
    done_word: str,
    no_wait: bool,
) -> None:
    """Redeploy the drifted hosts, `action` on the others' servers, then wait for each server."""
    redeployed = _apply_drift(prof, hosts)
    failed = False
    ready: set[tuple[str, int | None]] = set()  # (host, slot) to wait for; slot None: all
    for h, results, err in _each(hosts, lambda h: [] if h in redeployed else action(prof, h, only)):
        if err or results is None:
            error(err or f"{h}: no answer")
            failed = True
            continue
        if h in redeployed:
            click.echo(f"{h}: redeployed", err=True)
            ready.add((h, None))
        several = _several(prof, results)
        for r in results:
            if r["error"]:
                error(f"{label(r, several)}: {r['error']}")
                failed = True
                continue
            ready.add((h, r["slot"]))
            said = done_word if r["done"] else "already running"
            click.echo(f"{label(r, several)}: {said}", err=True)
    if not no_wait and ready:
        failed |= not _wait_all(prof, ready, only)
    if failed:
        raise SystemExit(1)


def _apply_drift(prof: Profile, hosts: list[str]) -> set[str]:
    """Redeploy the hosts where a server's launch script the profile has drifted from; those
    hosts (a host that cannot be asked: the action itself reports it)."""
    from carla_launcher.stack.servers import redeploy_drifted

    statuses = [st for st in control.servers(prof, hosts) if not st.get("error")]
    return redeploy_drifted(prof, statuses, lambda line: click.echo(line, err=True))


def _wait_all(prof: Profile, ready: set[tuple[str, int | None]], only: int | None) -> bool:
    """Wait until each server of `ready` ((host, slot); slot None: every server of the host,
    or server `only`) answers, all at once; True when each did. A live progress line only for
    a single server (several would tear it)."""
    hosts = list(dict.fromkeys(h for h, _ in sorted(ready, key=str)))
    found = [
        st
        for st in control.servers(prof, hosts)
        if (st["host"], st.get("slot")) in ready
        or ((st["host"], None) in ready and (only is None or st.get("slot") in (only, None)))
    ]
    several = _several(prof, found)
    return all(parallel.each(found, lambda st: _wait(prof, st, several, len(found) == 1)))


def _wait(prof: Profile, st: dict[str, Any], several: bool, live: bool) -> bool:
    name = label(st, several)
    if st.get("error"):
        error(f"{name}: {st['error']}")
        return False
    if prof.server.mode == "slurm":
        return _wait_job(prof, st, name, live)
    try:
        host, slot = st["host"], int(st["slot"])
        port = st.get("port") or prof.server.port
        addr = agent_address(prof, host)
        line = ProgressLine(
            f"{name}: CARLA at {addr}:{port}",
            lambda s: click.echo(s, err=True, nl=False),
            tty=sys.stderr.isatty() and live,
        )
        try:
            version = control.wait_started(prof, host, addr, port, line, slot=slot)
        finally:
            line.done()
    except NotReady as e:
        error(f"{name}: CARLA did not answer: {e}")
        return False
    except LauncherError as e:
        error(str(e))
        return False
    click.echo(f"{name}: CARLA {version} ready at {addr}:{port}")
    return True


def _wait_job(prof: Profile, st: dict[str, Any], name: str, live: bool) -> bool:
    """server.mode: slurm: wait until the server's job runs (it may queue), then say where.
    CARLA itself is probed by `up`, through a tunnel via the login node: compute nodes are
    rarely reachable from here."""
    line = ProgressLine(
        f"{name}: Slurm job",
        lambda s: click.echo(s, err=True, nl=False),
        tty=sys.stderr.isatty() and live,
    )
    try:
        found = control.wait_placed(prof, st["host"], int(st["slot"]), line)
    except LauncherError as e:
        error(f"{name}: {str(e).removeprefix(st['host'] + ': ')}")
        return False
    finally:
        line.done()
    job = (found or {}).get("job") or {}
    click.echo(
        f"{name}: {job_words(job)}, CARLA at {job['address']}:{job['port']} there; "
        f"`carla-launch up {prof.name}` reaches it through the login node"
    )
    return True


@server.command()
@profile_argument()
@host_option
@ONLY
def stop(profile: str | None, host: str | None, only: int | None) -> None:
    """Stop the server(s): each whole process group, and wait until their ports are free."""
    prof = load_profile(profile)
    failed = False
    by = "carla-launch server stop"
    hosts = chosen_hosts(prof, host)
    for h, results, err in _each(hosts, lambda h: control.stop_servers(prof, h, by, only)):
        if err or results is None:
            error(err or f"{h}: no answer")
            failed = True
            continue
        several = _several(prof, results)
        for r in results:
            name = label(r, several)
            if r["error"]:
                error(f"{name}: {r['error']}")
                failed = True
                continue
            click.echo(
                f"{name}: {'stopped; its ports are free' if r['done'] else 'was not running'}"
            )
            if r["warning"]:
                click.echo(f"warning: {name}: {r['warning']}", err=True)
    if failed:
        raise SystemExit(1)


@server.command()
@profile_argument()
@host_option
@ONLY
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print {schema_version, profile, hosts: [one entry per server]} "
    "(schemas/server-status.schema.json).",
)
def status(profile: str | None, host: str | None, only: int | None, as_json: bool) -> None:
    """Running or not, since when, restarts, port, the last crash line, or who stopped it:
    one line per server. Exit 1 if one does not run (stopped on purpose too: `carla-launch
    status` accepts that)."""
    prof = load_profile(profile)
    results = _only(control.servers(prof, chosen_hosts(prof, host)), only)
    if as_json:
        click.echo(dumps(document(profile=prof.name, hosts=results)))
    else:
        several = _several(prof, results)
        for st in results:
            click.echo(_status_line(st, several))
            for note in notes(st, prof.name):
                click.echo(f"{label(st, several)}: {note}", err=True)
    if not all(st.get("running") for st in results):
        raise SystemExit(1)


def _only(found: list[dict[str, Any]], only: int | None) -> list[dict[str, Any]]:
    """Server `only` of each host (None: all); a host without it says so, as an error entry."""
    if only is None:
        return found
    out: list[dict[str, Any]] = []
    for h in dict.fromkeys(st["host"] for st in found):
        mine = [st for st in found if st["host"] == h]
        kept = [st for st in mine if st.get("slot") == only or st.get("error")]
        if not kept:
            listed = ", ".join(str(st["slot"]) for st in mine if st.get("deployed"))
            why = f"no server {only} here (its servers: {listed or 'none'})"
            kept = [control.unreachable(h, LauncherError(why))]
        out += kept
    return out


def _status_line(st: dict[str, Any], several: bool = False) -> str:
    name = label(st, several, port=True)
    if st.get("error"):
        return f"{name}: unknown ({st['error']})"
    if st.get("running"):
        gone = ", restart loop gone" if st.get("state") == LOOP_GONE else ""
        line = f"{name}: running{gone}"
        if not several:
            line += f" on port {st.get('port')}"
        if st.get("since"):
            line += f" since {st['since']}"
        if st.get("pid"):
            line += f" (process group {st['pid']})"
    else:
        line = f"{name}: {state_words(st)}"
        if st.get("port") and not several:
            line += f"; port {st['port']}"
    line += f", {st.get('restarts') or 0} restart(s)"
    if st.get("job") and st.get("running"):  # server.mode: slurm (not running: said above)
        line += f"; {job_words(st['job'])}"
    if st.get("last_crash_line") and st.get("running"):  # not running: state_words said it
        line += f"; last crash: {st['last_crash_line']}"
    return line


@server.command()
@profile_argument()
@host_option
@ONLY
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C ends).")
@click.option(
    "--lines",
    "-n",
    type=click.IntRange(1, 100000),
    default=50,
    show_default=True,
    help="How many of the last lines (of each server's log).",
)
def logs(profile: str | None, host: str | None, only: int | None, follow: bool, lines: int) -> None:
    """Show the server log of the box (the launch loop's notes and CARLA's output); with
    several servers, each one's under a `==> .../SESSION/server.log <==` header."""
    prof = load_profile(profile)
    h = host or prof.remote.host
    argv = control.logs_command(prof, h, lines, follow, slot=only)
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
