"""`carla-launch daemon`: the foreground watcher (what systemd runs), and its unit."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import click

from carla_launcher.commands.completion import complete_profile
from carla_launcher.commands.options import address_options
from carla_launcher.daemon.systemd import Report, absolute_folder
from carla_launcher.errors import LauncherError
from carla_launcher.profile import load_profile
from carla_launcher.targeting import resolve_target

DIR_OPTION = click.option(
    "--dir",
    "-d",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of compose files (default: the profile's compose.dir, else .).",
)


PROFILE_OPTION = click.option(
    "--profile",
    "-p",
    "profile",
    metavar="P",
    help="Profile whose compose.dir is the folder.",
    shell_complete=complete_profile,
)


def _folder(folder: Path | None, profile: str | None, address: str | None) -> Path:
    """--dir, else the profile's compose.dir (as `sync` does), else the current folder."""
    if folder is not None:
        return absolute_folder(folder)
    if profile is not None:  # named: it must load (a typo must not watch the wrong folder)
        return absolute_folder(load_profile(profile).compose_dir)
    if address is None:
        try:
            return absolute_folder(load_profile(None).compose_dir)
        except LauncherError:
            pass
    return absolute_folder(".")


@dataclass(frozen=True)
class Choice:
    """What the user chose with --dir, --profile, --address, --port and --simulator."""

    folder: Path | None = None
    profile: str | None = None
    address: str | None = None
    port: int | None = None
    simulator: str | None = None


def choice_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--dir and the address options, handed to the command as one `choice` argument."""

    @functools.wraps(f)
    def wrapper(
        *args: Any,
        folder: Path | None,
        profile: str | None,
        address: str | None,
        port: int | None,
        simulator: str | None,
        **kwargs: Any,
    ) -> Any:
        return f(*args, choice=Choice(folder, profile, address, port, simulator), **kwargs)

    return DIR_OPTION(address_options(wrapper))


@click.group(invoke_without_command=True)
@choice_options
@click.option(
    "--debounce",
    type=click.FloatRange(0, 10),
    default=0.05,
    show_default=True,
    metavar="SECONDS",
    help="Quiet time after the last change before syncing.",
)
@click.option(
    "--recheck",
    type=click.FloatRange(1),
    default=300,
    show_default=True,
    metavar="SECONDS",
    help="Period of the content-hash re-check (catches lost events).",
)
@click.pass_context
def daemon(ctx: click.Context, choice: Choice, debounce: float, recheck: float) -> None:
    """Keep every distributed variant of a folder current, in the foreground.

    Syncs everything at start, then watches the compose files (and the files they include
    or extend, wherever they are) and the profile, and re-derives exactly the variants whose
    inputs changed. Logs one line per event on stderr. SIGHUP reloads; SIGTERM stops.
    One daemon per folder.

    \b
    Under systemd: `carla-launch daemon install --dir DIR` (a user unit, Type=notify).
    Without it (containers, WSL): run it in a tmux pane, or with nohup.
    """
    if ctx.invoked_subcommand is not None:
        # `daemon --dir X status` means the same as `daemon status --dir X`
        ctx.obj = choice
        return
    from carla_launcher.daemon.service import Daemon, Options

    c = choice
    opts = Options(
        _folder(c.folder, c.profile, c.address),
        c.address,
        c.profile,
        c.port,
        c.simulator,
        debounce=debounce,
        recheck=recheck,
    )
    ctx.exit(Daemon(opts).run())


def _inherit(ctx: click.Context, given: Choice) -> Choice:
    """Options given to the group (`daemon --dir X status`) fill in those the subcommand
    was not given."""
    parent = ctx.obj if isinstance(ctx.obj, Choice) else Choice()
    return Choice(
        *(
            mine if mine is not None else theirs
            for mine, theirs in zip(astuple(given), astuple(parent), strict=True)
        )
    )


@daemon.command()
@choice_options
@click.pass_context
def install(ctx: click.Context, choice: Choice) -> None:
    """Install and start the systemd user unit for a folder.

    The profile (or --address) is checked now and written into the unit by absolute path.
    """
    from carla_launcher.daemon.systemd import install as do_install

    o = _inherit(ctx, choice)
    address, profile, port, simulator = o.address, o.profile, o.port, o.simulator

    target, prof = resolve_target(address, profile, port, simulator)  # fail now, not in the journal
    where = _folder(o.folder, profile, address)
    if not where.is_dir():
        raise click.BadParameter(f"{where}: no such folder", param_hint="--dir")
    args: list[str] = []
    if address is not None:
        args += ["--address", target.address or address]
    if prof is not None and (address is None or profile is not None):
        args += ["--profile", str(Path(prof.path).resolve())]
    if port is not None:
        args += ["--port", str(port)]
    if simulator is not None:
        args += ["--simulator", simulator]
    _emit(do_install(where, args))


@daemon.command()
@DIR_OPTION
@PROFILE_OPTION
@click.pass_context
def uninstall(ctx: click.Context, folder: Path | None, profile: str | None) -> None:
    """Stop, disable and remove the systemd user unit of a folder."""
    from carla_launcher.daemon.systemd import uninstall as do_uninstall

    o = _inherit(ctx, Choice(folder, profile))
    _emit(do_uninstall(_folder(o.folder, o.profile, None)))


@daemon.command()
@DIR_OPTION
@PROFILE_OPTION
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (schemas/daemon-status.schema.json)."
)
@click.option(
    "--no-check", is_flag=True, help="Trust the daemon's state file; do not compare the files now."
)
@click.pass_context
def status(
    ctx: click.Context, folder: Path | None, profile: str | None, as_json: bool, no_check: bool
) -> None:
    """Is the daemon running (pid, uptime, RSS), when did it last sync, is every variant current?

    Exit code 0 when it runs and every variant is current, 1 otherwise.
    """
    from carla_launcher.daemon.status import daemon_status, format_status
    from carla_launcher.daemon.systemd import unit_status

    o = _inherit(ctx, Choice(folder, profile))
    where = _folder(o.folder, o.profile, None)
    s = daemon_status(where, check=not no_check)
    s["systemd"] = unit_status(where)
    if as_json:
        from carla_launcher.jsonout import document, dumps

        click.echo(dumps(document(**s)))
    else:
        for line in format_status(s):
            click.echo(line)
        u = s["systemd"]
        if u["installed"]:
            state = u["active"] if u["manager"] else "no user manager here"
            click.echo(f"systemd: {u['unit']} installed ({state})")
    raise SystemExit(0 if s["running"] and s["current"] else 1)


def _emit(rep: Report) -> None:
    for line in rep.out:
        click.echo(line)
    for line in rep.err:
        click.echo(line, err=True)
    if rep.code:
        raise SystemExit(rep.code)
