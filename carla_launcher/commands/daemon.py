"""`carla-launch daemon`: the foreground watcher (what systemd runs), and its unit."""

from __future__ import annotations

import json
from pathlib import Path

import click

from carla_launcher.commands.sync import address_options
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


@click.group(invoke_without_command=True)
@DIR_OPTION
@address_options
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
def daemon(
    ctx: click.Context,
    folder: Path | None,
    profile: str | None,
    address: str | None,
    port: int | None,
    simulator: str | None,
    debounce: float,
    recheck: float,
) -> None:
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
        ctx.obj = {
            "folder": folder,
            "profile": profile,
            "address": address,
            "port": port,
            "simulator": simulator,
        }
        return
    from carla_launcher.daemon.service import Daemon, Options

    target_folder = _folder(folder, profile, address)
    opts = Options(
        target_folder, address, profile, port, simulator, debounce=debounce, recheck=recheck
    )
    ctx.exit(Daemon(opts).run())


def _inherit(ctx: click.Context, **given: object) -> dict[str, object]:
    """Options given to the group fill in those not given to the subcommand."""
    parent = ctx.obj if isinstance(ctx.obj, dict) else {}
    return {k: (v if v is not None else parent.get(k)) for k, v in given.items()}


@daemon.command()
@DIR_OPTION
@address_options
@click.pass_context
def install(
    ctx: click.Context,
    folder: Path | None,
    profile: str | None,
    address: str | None,
    port: int | None,
    simulator: str | None,
) -> None:
    """Install and start the systemd user unit for a folder.

    The profile (or --address) is checked now and written into the unit by absolute path.
    """
    from carla_launcher.daemon.systemd import install as do_install

    o = _inherit(
        ctx, folder=folder, profile=profile, address=address, port=port, simulator=simulator
    )
    folder, profile, address = o["folder"], o["profile"], o["address"]  # type: ignore[assignment]
    port, simulator = o["port"], o["simulator"]  # type: ignore[assignment]

    target, prof = resolve_target(address, profile, port, simulator)  # fail now, not in the journal
    where = _folder(folder, profile, address)
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
@click.option(
    "--profile", "-p", "profile", metavar="P", help="Profile whose compose.dir is the folder."
)
@click.pass_context
def uninstall(ctx: click.Context, folder: Path | None, profile: str | None) -> None:
    """Stop, disable and remove the systemd user unit of a folder."""
    from carla_launcher.daemon.systemd import uninstall as do_uninstall

    o = _inherit(ctx, folder=folder, profile=profile)
    _emit(do_uninstall(_folder(o["folder"], o["profile"], None)))  # type: ignore[arg-type]


@daemon.command()
@DIR_OPTION
@click.option(
    "--profile", "-p", "profile", metavar="P", help="Profile whose compose.dir is the folder."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
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

    o = _inherit(ctx, folder=folder, profile=profile)
    where = _folder(o["folder"], o["profile"], None)  # type: ignore[arg-type]
    s = daemon_status(where, check=not no_check)
    s["systemd"] = unit_status(where)
    if as_json:
        click.echo(json.dumps(s, indent=2, sort_keys=True))
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
