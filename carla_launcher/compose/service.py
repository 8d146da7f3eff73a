"""The sync service: plan a folder's variants, compare them with the disk, write them by a policy.

One loop for every caller (`carla-launch sync` and `sync --check`, `up`, the daemon and
`daemon status`), so that they agree on what a variant's state is, when a hand edit is kept, and
how that is said. Planning itself is `sync.py` (pure of the disk but for reading); the files on
disk are `variants.py`; with no address known, the one each variant holds is `held.py`'s; what a
variant did, for the report, is `summary.py`'s. This module decides and reports; it prints nothing.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from carla_launcher.compose.keys import (
    Reads,
    Result,
    Target,
    entries_of,
    folder_problem,
    fresh_entry,
)
from carla_launcher.compose.variants import Variant, apply, compare, split_header
from carla_launcher.errors import InputError, display_path
from carla_launcher.fsutil import read_regular, remove_stale_temps, temp_names

if TYPE_CHECKING:
    from carla_launcher.compose.summary import Facts


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


def write_line(
    variant: Path | str, state: VariantState, facts: Facts | None = None, origin: str = ""
) -> str:
    """`sync`'s line for a variant that is now current: what it did (the simulator removed, how
    many references point where) and where the address came from (`origin`, from targeting);
    the same facts briefly when it was current already. Without facts: the verb and the path."""
    written = state is VariantState.WRITTEN
    line = f"{'wrote' if written else 'current'} {display_path(variant)}"
    if facts is None:
        return line
    one = facts.references == 1
    refs = f"{facts.references} reference{'' if one else 's'}"
    why = f" ({origin})" if origin else ""
    if written:
        removed = f"removed service {facts.simulator}; " if facts.simulator else ""
        verb = ("reads" if one else "read") if facts.env else "points at" if one else "point at"
        return f"{line}: {removed}{refs} now {verb} {facts.where}{why}"
    removed = f"{facts.simulator} removed, " if facts.simulator else ""
    return f"{line}: {removed}{refs} -> {facts.where}{why}"


def check_summary(total: int, stale: int, unreadable: int) -> str:
    """`sync --check`'s last line."""
    summary = f"{total - stale - unreadable} of {total} variants current"
    if stale:
        summary += f", {stale} stale"
    if unreadable:
        summary += f", {unreadable} unreadable"
    if stale:
        summary += "; `carla-launch sync` brings them up to date"
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
    # what its variants were compared with: the caller's target, or (none known) the address
    # they already held; None when planning failed or nothing said where they point
    target: Target | None = None

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


def held(target: Target) -> bool:
    """A target with no address and not the env mode: each variant is compared for the address
    it already holds (`sync --check` where no address is known: CI, a hook, `address: null`)."""
    return target.address is None and not target.env


def sync_folder(
    folder: Path, target: Target, mode: Mode, files: list[Path] | None = None
) -> SyncReport:
    """Plan every entry of `folder` (or only `files`), then compare and write by `mode`. A folder
    with nothing to sync is an InputError, raised (see `keys.folder_problem`). A `held` target
    compares each entry for the address its variants hold."""
    if held(target):
        return _sync_held(folder, target, mode, files)
    results = plan_folder(folder, target, files)
    temps: dict[Path, list[str]] = {}
    reports = [sync_result(r, mode, temps=temps) for r in results]
    for report in reports:
        report.target = target if report.error is None else None
    return SyncReport(reports, mode)


def _sync_held(folder: Path, target: Target, mode: Mode, files: list[Path] | None) -> SyncReport:
    """Derive every entry for a probe address, read from the disk which address its variants
    hold (held.py; an entry whose variants hold none takes the one most entries hold), then
    sync it for that address as usual. Variants that tell no address are compared with the
    probe: missing or stale in a check, an error where they must be written."""
    from carla_launcher.compose import held as probe

    at = Target(probe.PROBE_ADDRESS, probe.PROBE_PORT, target.simulator)
    planned = plan_folder(folder, at, files)
    found = {
        r.entry: probe.held_target([_bodies(v) for v in r.variants])
        for r in planned
        if r.error is None and r.variants
    }
    votes = Counter(h for h in found.values() if h is not None).most_common(1)
    temps: dict[Path, list[str]] = {}
    reports = []
    for r in planned:
        h = found.get(r.entry) or (votes[0][0] if votes else None)
        if r.error is not None or not r.variants:
            reports.append(EntryReport(r))
            continue
        if h is None:
            reports.append(_unknown(r, mode))
            continue
        port = None if h.env else target.port if target.port is not None else h.port
        t = Target(h.address, port, target.simulator, env=h.env)
        [again] = plan_folder(folder, t, [r.entry], refuse=False)
        reports.append(sync_result(again, mode, temps=temps))
        reports[-1].target = t
    return SyncReport(reports, mode)


def _bodies(v: Variant) -> tuple[str, str]:
    """(the probe's body, the body on disk: empty when there is none)."""
    try:
        disk = read_regular(v.path).decode("utf-8").replace("\r\n", "\n")
    except (OSError, UnicodeDecodeError):
        disk = ""
    return split_header(v.content)[2], split_header(disk)[2]


def _unknown(result: Result, mode: Mode) -> EntryReport:
    """An entry whose variants tell no address: a check says missing or stale (its diff shows
    `<address>` where the address goes); writing it needs an address."""
    from carla_launcher.compose.held import unknown_diff

    report = EntryReport(result)
    for v in result.variants:
        checked = sync_variant(v, Mode.CHECK)
        if checked.error is not None or mode is Mode.CHECK:
            checked.diff = unknown_diff(checked.diff)
            report.variants.append(checked)
        elif checked.state is VariantState.HAND_EDITED and mode is not Mode.FORCE:
            report.variants.append(checked)
        else:
            problem = (
                "no address to write it for: run `carla-launch up` (it finds the box's address "
                "and remembers it), or pass --address ADDR, or set remote.address in the profile"
            )
            report.variants.append(VariantReport(v, None, error=InputError(v.path, None, problem)))
    return report


# -- what a variant did, for `sync`'s report and `sync --diff` -----------------------------------
def facts_of(entry: EntryReport) -> dict[Path, Facts]:
    """The facts (summary.py) of each current or written variant of an entry, read from its
    source and its text; a variant whose source cannot be read has none."""
    from carla_launcher.compose.summary import describe, header_simulator

    if entry.target is None:
        return {}
    sims = [s for v in entry.variants if (s := header_simulator(v.variant.content))]
    out = {}
    for v in entry.variants:
        source = _source_text(v.variant.source)
        if v.state in (VariantState.CURRENT, VariantState.WRITTEN) and source is not None:
            first = sims[0] if sims else None
            out[v.path] = describe(v.variant.content, source, entry.target, first)
    return out


def source_diff(v: VariantReport) -> str:
    """`sync --diff`: the variant as planned (what the disk holds when current) against its
    source, a unified diff from source to variant."""
    from carla_launcher.compose.held import unknown_diff
    from carla_launcher.compose.summary import source_diff as diff

    text = _source_text(v.variant.source) or ""
    source, variant = display_path(v.variant.source), display_path(v.path)
    return unknown_diff(diff(source, text, variant, v.variant.content))


def _source_text(path: Path) -> str | None:
    try:
        return read_regular(path).decode("utf-8-sig").replace("\r\n", "\n")
    except (OSError, UnicodeDecodeError):
        return None


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
