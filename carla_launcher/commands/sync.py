"""`carla-launch sync`."""

from __future__ import annotations

from pathlib import Path

import click

from carla_launcher.compose.sync import Outcome, apply, compare, plan_folder
from carla_launcher.errors import InputError, display_path
from carla_launcher.fsutil import remove_stale_temps
from carla_launcher.targeting import resolve_target


def address_options(f):  # type: ignore[no-untyped-def]
    """--profile / --address / --port / --simulator, shared by sync and daemon."""
    f = click.option(
        "--simulator",
        metavar="NAME",
        help="The simulator service (default: found by its image or command).",
    )(f)
    f = click.option(
        "--port",
        type=click.IntRange(1, 65533),
        help="The remote server's world port, when agents must use another one.",
    )(f)
    f = click.option(
        "--address", metavar="ADDR", help="Address agents connect to; wins over the profile."
    )(f)
    f = click.option(
        "--profile",
        "-p",
        "profile",
        metavar="P",
        help="Profile name (profiles/P.yaml) or path; default: the default profile.",
    )(f)
    return f


@click.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--dir",
    "-d",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of compose files (default: the profile's compose.dir, else .).",
)
@address_options
@click.option(
    "--address-env",
    is_flag=True,
    help="Env address mode: variants read CARLA_LAUNCH_HOST/CARLA_LAUNCH_PORT when they run "
    "(see `carla-launch env P`), so one committed variant serves every box.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Change nothing; show the diff and exit 1 if any variant is stale.",
)
@click.option("--force", is_flag=True, help="Overwrite variants that were edited by hand.")
@click.option("--quiet", "-q", is_flag=True, help="Print only problems.")
def sync(
    files: tuple[Path, ...],
    folder: Path | None,
    profile: str | None,
    address: str | None,
    port: int | None,
    simulator: str | None,
    address_env: bool,
    check: bool,
    force: bool,
    quiet: bool,
) -> None:
    """Write the distributed variant of every compose file in a folder.

    A variant (docker-compose.yaml -> docker-compose.distributed.yaml, NAME.yaml ->
    NAME-distributed.yaml) is the same project without the simulator service, with every
    reference to the simulator pointing at the remote address. Variants carry a header with
    a hash; hand edits are never overwritten without --force. FILES limit the run to those
    entry files (as pre-commit passes them).

    \b
    Exit codes: 0 all current, 1 --check found a difference or a hand-edited variant
    was kept, 2 bad input (the other files are still synced).
    """
    target, prof = resolve_target(address, profile, port, simulator, address_env=address_env)
    if folder is None:
        folder = prof.compose_dir if prof is not None and not files else Path()
    entries = [Path(f) for f in files] if files else None
    if entries:
        for f in entries:
            if not f.is_file():
                raise click.BadParameter(f"{f}: no such file", param_hint="FILES")
        folder = entries[0].parent
    results = plan_folder(folder, target, entries)
    errors = stale = refused = unreadable = 0
    for r in results:
        if r.error is not None:
            errors += 1
            click.echo(f"error: {r.error}", err=True)
            continue
        for w in r.warnings:
            click.echo(f"warning: {display_path(r.entry)}: {w}", err=True)
        for v in r.variants:
            try:  # a variant that cannot be read or written is its own error; the others go on
                outcome = compare(v)
                if check:
                    stale += _report_check(outcome)
                    continue
                remove_stale_temps(v.path)  # left by a sync that was killed mid-write
                outcome = apply(outcome, force)
            except InputError as e:
                errors += 1
                unreadable += 1
                click.echo(f"error: {e}", err=True)
                continue
            refused += _report_write(outcome, quiet)
    if check and not quiet:
        n = sum(len(r.variants) for r in results)
        summary = f"{n - stale - unreadable} of {n} variants current"
        summary += (f", {stale} stale" if stale else "") + (
            f", {unreadable} unreadable" if unreadable else ""
        )
        click.echo(summary, err=True)
    if errors:
        raise SystemExit(2)
    if stale or refused:
        raise SystemExit(1)


def _report_check(o: Outcome) -> int:
    if o.state == "current":
        return 0
    label = {"new": "missing", "stale": "stale", "hand-edited": "edited by hand"}[o.state]
    click.echo(f"{display_path(o.variant.path)}: {label}", err=True)
    click.echo(o.diff, nl=False)
    return 1


def _report_write(o: Outcome, quiet: bool) -> int:
    name = display_path(o.variant.path)
    if o.state == "hand-edited":
        click.echo(
            f"{name}: edited by hand (or not made by carla-launch); kept. Move your changes into "
            f"{display_path(o.variant.source)} or rerun with --force to overwrite.",
            err=True,
        )
        return 1
    if not quiet:
        click.echo(f"{'wrote' if o.state == 'written' else 'current'} {name}")
    return 0
