"""`carla-launch sync`."""

from __future__ import annotations

from pathlib import Path

import click

from carla_launcher.commands.options import address_options
from carla_launcher.compose.service import (
    Mode,
    VariantReport,
    VariantState,
    check_label,
    check_summary,
    hand_edited_message,
    sync_folder,
    write_line,
)
from carla_launcher.errors import display_path
from carla_launcher.targeting import resolve_target


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
    mode = Mode.CHECK if check else Mode.FORCE if force else Mode.WRITE
    report = sync_folder(folder, target, mode, entries)
    for e in report.entries:
        if e.error is not None:
            click.echo(f"error: {e.error}", err=True)
            continue
        for w in e.result.warnings:
            click.echo(f"warning: {display_path(e.entry)}: {w}", err=True)
        for v in e.variants:
            _report(v, mode, quiet)
    if check and not quiet:
        total = len(report.variants)
        click.echo(check_summary(total, report.stale, report.unreadable), err=True)
    if report.exit_code:
        raise SystemExit(report.exit_code)


def _report(v: VariantReport, mode: Mode, quiet: bool) -> None:
    """One variant's lines: its error, its diff (--check), or what was done."""
    if v.error is not None or v.state is None:
        click.echo(f"error: {v.error}", err=True)
    elif mode is Mode.CHECK:
        if v.state is not VariantState.CURRENT:
            click.echo(check_label(v.path, v.state), err=True)
            click.echo(v.diff, nl=False)
    elif v.state is VariantState.HAND_EDITED:
        click.echo(hand_edited_message(v.path, v.variant.source), err=True)
    elif not quiet:
        click.echo(write_line(v.path, v.state))
