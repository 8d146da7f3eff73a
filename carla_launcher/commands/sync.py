"""`carla-launch sync`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from carla_launcher.commands.options import address_options
from carla_launcher.compose.service import (
    Mode,
    SyncReport,
    VariantReport,
    VariantState,
    check_label,
    check_summary,
    facts_of,
    hand_edited_message,
    source_diff,
    sync_folder,
    write_line,
)
from carla_launcher.errors import InputError, display_path
from carla_launcher.targeting import Resolved, sync_targets


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
@click.option(
    "--diff",
    "show_diff",
    is_flag=True,
    help="Change nothing; show each variant against its source (unified diff, source -> variant).",
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
    show_diff: bool,
    force: bool,
    quiet: bool,
) -> None:
    """Write the distributed variant of every compose file in a folder.

    A variant (docker-compose.yaml -> docker-compose.distributed.yaml, NAME.yaml ->
    NAME-distributed.yaml) is the same project without the simulator service, with every
    reference to the simulator pointing at the remote address. Variants carry a header with
    a hash; hand edits are never overwritten without --force. FILES limit the run to those
    entry files (as pre-commit passes them).

    The address comes from --address, else the profile (its remote.address, else the one
    remembered when its box was deployed); in the env address mode there is none. Where none
    is known (a fresh clone, CI, `address: null`), each variant is checked, or rewritten,
    for the address it already holds. With several profiles and no default, sync works for
    each profile's compose folder.

    \b
    Exit codes: 0 all current, 1 --check found a difference or a hand-edited variant
    was kept, 2 bad input (the other files are still synced).
    """
    if check and show_diff:
        raise InputError(None, None, "cannot be used with --check: choose one", "--diff")
    entries = [Path(f) for f in files] if files else None
    for f in entries or []:
        if not f.is_file():
            raise click.BadParameter(f"{f}: no such file", param_hint="FILES")
    if entries:
        folder = entries[0].parent
    targets = sync_targets(
        address, profile, port, simulator, address_env=address_env, folder=folder
    )
    mode = Mode.CHECK if check or show_diff else Mode.FORCE if force else Mode.WRITE
    runs = _runs(targets, folder, mode)
    reports = [(r, sync_folder(where, r.target, mode, entries)) for where, r in runs]
    for resolved, report in reports:
        _print(report, resolved, mode, quiet, show_diff)
    if check and not quiet:
        variants = [v for _, report in reports for v in report.variants]
        stale = sum(report.stale for _, report in reports)
        unreadable = sum(1 for v in variants if v.error is not None)
        click.echo(check_summary(len(variants), stale, unreadable), err=True)
    code = max((report.exit_code for _, report in reports), default=0)
    if show_diff and code == 1:
        code = 0  # a view: only bad input fails it
    if code:
        raise SystemExit(code)


def _runs(targets: list[Resolved], folder: Path | None, mode: Mode) -> list[tuple[Path, Resolved]]:
    """Each folder once per target. Two profiles that want one folder's variants for different
    boxes can be checked (one of them fails), not written (each would undo the other)."""
    runs: dict[tuple[str, object], tuple[Path, Resolved]] = {}
    for r in targets:
        where = folder or (r.profile.compose_dir if r.profile is not None else Path())
        runs.setdefault((os.path.abspath(where), r.target), (where, r))  # noqa: PTH100
    if mode is not Mode.CHECK:
        by_folder: dict[str, list[Resolved]] = {}
        for (key, _), (_, r) in runs.items():
            by_folder.setdefault(key, []).append(r)
        for key, rs in by_folder.items():
            if len(rs) > 1:
                names = ", ".join(display_path(r.profile.path) for r in rs if r.profile)
                raise InputError(
                    None,
                    None,
                    f"{names} want the variants of {display_path(key)} for different boxes: "
                    "name one with --profile P (or set `compose.address: env` in each)",
                )
    return list(runs.values())


def _print(report: SyncReport, resolved: Resolved, mode: Mode, quiet: bool, diff: bool) -> None:
    for e in report.entries:
        if e.error is not None:
            click.echo(f"error: {e.error}", err=True)
            continue
        for w in e.result.warnings:
            click.echo(f"warning: {display_path(e.entry)}: {w}", err=True)
        facts = facts_of(e) if mode is not Mode.CHECK and not quiet else {}
        for v in e.variants:
            if v.error is not None or v.state is None:
                click.echo(f"error: {v.error}", err=True)
            elif diff:
                _show_diff(v, v.state)
            elif mode is Mode.CHECK:
                if v.state is not VariantState.CURRENT:
                    click.echo(check_label(v.path, v.state), err=True)
                    click.echo(v.diff, nl=False)
            elif v.state is VariantState.HAND_EDITED:
                click.echo(hand_edited_message(v.path, v.variant.source), err=True)
            elif not quiet:
                click.echo(write_line(v.path, v.state, facts.get(v.path), resolved.origin))


def _show_diff(v: VariantReport, state: VariantState) -> None:
    """`--diff`: the variant against its source; a note when the disk holds something else."""
    click.echo(source_diff(v), nl=False)
    if state is not VariantState.CURRENT:
        click.echo(
            f"note: {check_label(v.path, state)} on disk; `carla-launch sync` writes what is shown",
            err=True,
        )
