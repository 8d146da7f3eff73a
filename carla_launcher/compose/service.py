"""The sync service: plan a folder's variants, compare them with the disk, write them by a policy.

One loop for every caller (`carla-launch sync` and `sync --check`, `up`, the daemon and
`daemon status`), so that they agree on what a variant's state is, when a hand edit is kept, and
how that is said. Planning itself is `sync.py` (pure of the disk but for reading); the files on
disk are `variants.py`. This module decides and reports; it prints nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from carla_launcher.compose.keys import (
    Reads,
    Result,
    Target,
    entries_of,
    folder_problem,
    fresh_entry,
)
from carla_launcher.compose.variants import Variant, apply, compare
from carla_launcher.errors import InputError, display_path
from carla_launcher.fsutil import remove_stale_temps, temp_names


class VariantState(str, Enum):
    """What a variant on disk is against its plan. str-valued: the state file, `--json` and the
    text of `daemon status` carry the value as it always was."""

    NEW = "new"  # not on disk yet
    CURRENT = "current"  # the disk holds exactly the plan
    STALE = "stale"  # ours, from other inputs or another address
    HAND_EDITED = "hand-edited"  # not ours as we wrote it: kept unless forced
    WRITTEN = "written"  # was new or stale (or forced), written now

    def __str__(self) -> str:
        return str(self.value)


class Mode(Enum):
    """What the service may do to the disk."""

    CHECK = "check"  # compare only (`sync --check`, `daemon status`)
    WRITE = "write"  # write new and stale variants, keep hand edits (`sync`, `up`, the daemon)
    FORCE = "force"  # write over hand edits too (`sync --force`)


# -- the message catalogue: every sentence about a variant's state, worded once ------------------
CHECK_LABELS = {
    VariantState.NEW: "missing",
    VariantState.STALE: "stale",
    VariantState.HAND_EDITED: "edited by hand",
}


def hand_edited_message(variant: Path | str, source: Path | str) -> str:
    """A hand-edited variant was kept: what happened and the fix (sync, up and the daemon)."""
    return (
        f"{display_path(variant)}: edited by hand (or not made by carla-launch); kept it. "
        f"Move the change into {display_path(source)}, "
        "or run `carla-launch sync --force` to overwrite it"
    )


def check_label(variant: Path | str, state: VariantState) -> str:
    """`sync --check`'s line for a variant that is not current."""
    return f"{display_path(variant)}: {CHECK_LABELS[state]}"


def write_line(variant: Path | str, state: VariantState) -> str:
    """`sync`'s line for a variant that is now current."""
    verb = "wrote" if state is VariantState.WRITTEN else "current"
    return f"{verb} {display_path(variant)}"


def check_summary(total: int, stale: int, unreadable: int) -> str:
    """`sync --check`'s last line."""
    summary = f"{total - stale - unreadable} of {total} variants current"
    if stale:
        summary += f", {stale} stale"
    if unreadable:
        summary += f", {unreadable} unreadable"
    return summary


# -- reports -------------------------------------------------------------------------------------
@dataclass
class VariantReport:
    """One variant after the policy ran: its state, or why it could not be read or written."""

    variant: Variant
    state: VariantState | None  # None when `error` is set
    diff: str = ""
    error: InputError | None = None
    removed: list[Path] = field(default_factory=list)  # temp files a killed writer left

    @property
    def path(self) -> Path:
        return self.variant.path


@dataclass
class EntryReport:
    """One entry file: what planning found, and each of its variants."""

    result: Result
    variants: list[VariantReport] = field(default_factory=list)

    @property
    def entry(self) -> Path:
        return self.result.entry

    @property
    def error(self) -> InputError | None:
        return self.result.error


@dataclass
class SyncReport:
    """A folder's entries, in planning order, and the counts exit codes are made of."""

    entries: list[EntryReport]
    mode: Mode

    @property
    def variants(self) -> list[VariantReport]:
        return [v for e in self.entries for v in e.variants]

    @property
    def unreadable(self) -> int:
        return sum(1 for v in self.variants if v.error is not None)

    @property
    def errors(self) -> int:
        """Entries that could not be planned plus variants that could not be read or written."""
        return sum(1 for e in self.entries if e.error is not None) + self.unreadable

    @property
    def stale(self) -> int:
        """In check mode: variants that are not current (missing, stale or edited by hand)."""
        if self.mode is not Mode.CHECK:
            return 0
        return sum(1 for v in self.variants if v.state not in (None, VariantState.CURRENT))

    @property
    def refused(self) -> int:
        """In a write mode: hand-edited variants that were kept."""
        if self.mode is Mode.CHECK:
            return 0
        return sum(1 for v in self.variants if v.state is VariantState.HAND_EDITED)

    @property
    def exit_code(self) -> int:
        """2 bad input, 1 a difference (check) or a kept hand edit (write), else 0."""
        if self.errors:
            return 2
        return 1 if self.stale or self.refused else 0


# -- the loop ------------------------------------------------------------------------------------
def sync_variant(
    variant: Variant,
    mode: Mode,
    clean: bool = True,
    fresh: bool = False,
    temps: dict[Path, list[str]] | None = None,
) -> VariantReport:
    """Compare one variant with the disk and, unless checking, bring it up to date. A variant that
    cannot be read or written is reported, never raised: the others go on. With `clean`, temp
    files a killed writer left beside it go first (the daemon does that once per full sync)."""
    try:
        if fresh:  # its content is what the disk held a moment ago, and its key matched
            removed = _clean(variant.path, temps) if clean and mode is not Mode.CHECK else []
            return VariantReport(variant, VariantState.CURRENT, removed=removed)
        outcome = compare(variant)
        if mode is Mode.CHECK:
            return VariantReport(variant, VariantState(outcome.state), outcome.diff)
        removed = _clean(variant.path, temps) if clean else []
        outcome = apply(outcome, force=mode is Mode.FORCE)
    except InputError as e:  # a folder or FIFO where the variant should be, no permission
        return VariantReport(variant, None, error=e)
    except OSError as e:
        problem = f"cannot write: {e.strerror or e}"
        return VariantReport(variant, None, error=InputError(variant.path, None, problem))
    return VariantReport(variant, VariantState(outcome.state), outcome.diff, removed=removed)


def _clean(path: Path, temps: dict[Path, list[str]] | None) -> list[Path]:
    """remove_stale_temps, listing each folder once per `temps` (one sync of a folder)."""
    if temps is None:
        return remove_stale_temps(path)
    names = temps.get(path.parent)
    if names is None:
        names = temps[path.parent] = temp_names(path.parent)
    return remove_stale_temps(path, names) if names else []


def sync_result(
    result: Result, mode: Mode, clean: bool = True, temps: dict[Path, list[str]] | None = None
) -> EntryReport:
    """Apply the policy to the variants of one planned entry (none when planning failed).
    `temps`: folder listings shared by the entries of one sync (see `_clean`)."""
    report = EntryReport(result)
    if result.error is None:
        report.variants = [
            sync_variant(v, mode, clean, result.fresh, temps) for v in result.variants
        ]
    return report


def sync_folder(
    folder: Path, target: Target, mode: Mode, files: list[Path] | None = None
) -> SyncReport:
    """Plan every entry of `folder` (or only `files`), then compare and write by `mode`. A folder
    with nothing to sync is an InputError, raised (see `keys.folder_problem`)."""
    results = plan_folder(folder, target, files)
    temps: dict[Path, list[str]] = {}
    return SyncReport([sync_result(r, mode, temps=temps) for r in results], mode)


def plan_folder(
    folder: Path, target: Target, files: list[Path] | None = None, *, refuse: bool = True
) -> list[Result]:
    """`sync.plan_folder`, but an entry whose variants' keys match is taken from the disk
    without parsing (keys.py), and so is an entry that such a plan recorded as skipped. Only
    the rest is derived, and only then is the derivation (and ruamel) imported. `refuse`:
    raise the folder's own problem (nothing to sync); the daemon reports it itself."""
    folder = Path(folder)
    entries = entries_of(folder, files)
    reads = Reads()
    found = {e: fresh_entry(e, target, reads) for e in entries}
    skipped: dict[str, str] = {}
    for f in found.values():
        if f is not None:
            skipped.update(f.skipped)
    single = files is not None and len(entries) == 1  # its own plan says why it is skipped
    results: list[Result | None] = []
    for e in entries:
        f = found[e]
        where = os.path.abspath(e) if skipped and not single else None  # noqa: PTH100  as keys.py
        why = skipped.get(where) if where is not None else None
        if f is not None:
            results.append(f.result)
        elif why is not None:
            results.append(Result(e, skipped=why, inputs=[Path(e).absolute()], fresh=True))
        else:
            results.append(None)
    todo = [e for e, r in zip(entries, results, strict=True) if r is None]
    if todo:
        from carla_launcher.compose.sync import plan_entries

        planned = iter(plan_entries(todo, target, single=single))
        results = [r if r is not None else next(planned) for r in results]
    final = [r for r in results if r is not None]
    problem = folder_problem(folder, final, listed=files is None) if refuse else None
    if problem is not None:
        raise problem
    return final
