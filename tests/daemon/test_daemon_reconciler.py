"""The daemon's reconciler in-process: feed observations, look at the effects. No files, no
threads, no daemon: each test runs in microseconds."""

from __future__ import annotations

import json
from pathlib import Path

from carla_launcher.compose.service import EntryReport, VariantReport, VariantState
from carla_launcher.compose.sync import Result, Target
from carla_launcher.compose.variants import Variant
from carla_launcher.daemon.effects import (
    FOLDER,
    UNREADABLE,
    Events,
    FullSync,
    Log,
    Rediscover,
    Rewatch,
    SaveState,
    Settle,
    Synced,
    SyncEntries,
)
from carla_launcher.daemon.reconciler import Reconciler
from carla_launcher.errors import InputError

F = "/p/build"
A, B = f"{F}/a.yaml", f"{F}/b.yaml"
VA, VB = f"{F}/a.distributed.yaml", f"{F}/b.distributed.yaml"
SHARED = "/p/common/agent.yaml"  # outside the folder: named as the user sees it
TARGET = Target("10.0.0.5")


def report(entry: str, variant: str, state: VariantState | None, inputs: list[str]) -> EntryReport:
    v = Variant(Path(entry), Path(variant), f"content of {variant}\n")
    r = Result(Path(entry), [v], inputs=[Path(p) for p in inputs])
    return EntryReport(r, [VariantReport(v, state)])


def logs(effects: list[object]) -> list[tuple[str, str]]:
    return [(e.level, e.message) for e in effects if isinstance(e, Log)]


def synced(rec: Reconciler) -> Reconciler:
    """Two entries, both reading SHARED; both variants written."""
    for entry, variant in ((A, VA), (B, VB)):
        rec.on_synced(
            Synced(report(entry, variant, VariantState.WRITTEN, [entry, SHARED]), "start")
        )
    return rec


def fresh() -> Reconciler:
    return synced(Reconciler(F, TARGET, None))


def test_a_change_rederives_exactly_the_entries_that_read_it() -> None:
    rec = fresh()
    assert rec.on_batch(Events(frozenset({A}))) == [SyncEntries({A: "a.yaml changed"}), Settle()]
    effects = rec.on_batch(Events(frozenset({SHARED})))
    assert effects == [
        SyncEntries({A: "/p/common/agent.yaml changed", B: "/p/common/agent.yaml changed"}),
        Settle(),
    ]


def test_the_echo_of_our_own_write_costs_nothing() -> None:
    rec = fresh()
    echo = Events(frozenset({VA}), variants={VA: f"content of {VA}\n"})
    assert rec.on_batch(echo) == []


def test_an_edited_or_deleted_variant_replans_its_entry() -> None:
    rec = fresh()
    for text in ("edited\n", None):
        effects = rec.on_batch(Events(frozenset({VA}), variants={VA: text}))
        assert effects == [SyncEntries({A: "the variant was changed or deleted"}), Settle()]


def test_a_hand_edit_is_kept_and_said_once() -> None:
    rec = fresh()
    edited = report(A, VA, VariantState.HAND_EDITED, [A, SHARED])
    first = rec.on_synced(Synced(edited, "a.yaml changed", disk={VA: "mine\n"}))
    assert len(logs(first)) == 1
    level, message = logs(first)[0]
    assert level == "warning" and "edited by hand" in message and "--force" in message
    assert rec.vstate[VA] is VariantState.HAND_EDITED and rec.written[VA] == "mine\n"
    assert logs(rec.on_synced(Synced(edited, "again", disk={VA: "mine\n"}))) == []
    assert rec.summary("watching").startswith(f"watching {F}: 1 of 2 variants current")


def test_a_written_variant_is_logged_and_counted() -> None:
    rec = fresh()
    assert rec.syncs == 2
    effects = rec.on_synced(Synced(report(A, VA, VariantState.WRITTEN, [A]), "a.yaml changed"))
    assert logs(effects) == [("info", f"synced {VA} (a.yaml changed)")]
    assert rec.syncs == 3 and rec.graph[A] == frozenset({A})  # SHARED no longer read by A
    assert rec.on_batch(Events(frozenset({SHARED}))) == [
        SyncEntries({B: "/p/common/agent.yaml changed"}),
        Settle(),
    ]


def test_an_entry_that_fails_keeps_its_variant_and_recovers() -> None:
    rec = fresh()
    bad = EntryReport(Result(Path(A), error=InputError(A, 3, "bad"), inputs=[Path(A)]))
    effects = rec.on_synced(Synced(bad, "a.yaml changed"))
    assert logs(effects) == [("error", f"{A}:3: bad (keeping the last good variant)")]
    assert logs(rec.on_synced(Synced(bad, "a.yaml changed"))) == []  # said once
    ok = report(A, VA, VariantState.CURRENT, [A])
    assert logs(rec.on_synced(Synced(ok, "a.yaml changed"))) == [("info", f"recovered: {A}")]
    new = Reconciler(F, TARGET, None)
    effects = new.on_synced(Synced(bad, "start"))
    assert logs(effects) == [("error", f"{A}:3: bad (no variant until it is fixed)")]


def test_an_unreadable_variant_is_an_error_and_replanned_by_anything_in_its_place() -> None:
    rec = fresh()
    v = Variant(Path(A), Path(VA), "x\n")
    broken = EntryReport(
        Result(Path(A), [v], inputs=[Path(A)]),
        [
            VariantReport(
                v, None, error=InputError(VA, None, "cannot read the variant: Is a directory")
            )
        ],
    )
    effects = rec.on_synced(Synced(broken, "start"))
    assert logs(effects) == [("error", f"{VA}: cannot read the variant: Is a directory")]
    assert rec.written[VA] == UNREADABLE and VA not in rec.vstate
    assert rec.on_batch(Events(frozenset({VA}), variants={VA: None}))[0] == SyncEntries(
        {A: "the variant was changed or deleted"}
    )


def test_a_new_file_is_discovered_and_a_vanished_entry_forgotten() -> None:
    rec = fresh()
    c = f"{F}/c.yaml"
    effects = rec.on_batch(Events(frozenset({c}), structural=True))
    assert effects == [Rediscover(frozenset(), frozenset({c}))]
    effects = rec.on_discovered({A, c}, (), {c})
    assert effects == [
        Log("info", f"no longer a compose entry: {B} (its variant is kept)"),
        SyncEntries({c: "new file"}),
        Settle(),
    ]
    assert B not in rec.graph and VB not in rec.owner
    assert rec.on_discovered(None, {A}, {A}) == [SyncEntries({A: "a.yaml changed"}), Settle()]


def test_lost_events_mean_a_full_resync() -> None:
    rec = fresh()
    effects = rec.on_batch(Events(full="inotify queue overflowed"))
    assert effects == [
        Log("warning", "inotify queue overflowed: full resync"),
        FullSync("inotify queue overflowed"),
        Settle(),
    ]


def test_the_folder_goes_away_and_comes_back() -> None:
    rec = fresh()
    gone = rec.on_batch(Events(frozenset({F}), folder_present=False))
    assert gone[-2:] == [Rewatch(), SaveState()] and logs(gone)[0][0] == "warning"
    assert FOLDER in rec.errors and not rec.folder_present
    assert rec.on_batch(Events(frozenset({A}), folder_present=False)) == []  # waiting
    assert rec.needs_target({F}, True)
    back = rec.on_batch(Events(frozenset({F}), folder_present=True, target=(TARGET, None)))
    assert back == [
        Rewatch(frozenset({F})),
        Log("info", f"folder {F} is back"),
        FullSync("folder is back"),
        Settle(),
    ]
    assert FOLDER not in rec.errors


def test_an_empty_folder_waits_for_its_first_compose_file() -> None:
    rec = Reconciler(F, TARGET, None)
    effects = rec.on_folder_planned([])
    assert logs(effects)[0][0] == "error" and "(waiting for changes)" in logs(effects)[0][1]
    assert rec.on_batch(Events(frozenset({A}), structural=True)) == [
        FullSync("a.yaml changed"),
        Settle(),
    ]


def test_a_new_address_rederives_everything_and_a_bad_profile_keeps_the_old_one() -> None:
    rec = fresh()
    assert rec.on_recheck(True, (TARGET, None), drifted=False) == [Rewatch()]
    effects = rec.on_recheck(True, (Target("10.0.0.9", 2010), None), drifted=False)
    assert effects == [
        Log("info", "target changed: address 10.0.0.5 -> 10.0.0.9, port None -> 2010"),
        FullSync("address now 10.0.0.9"),
        Settle(),
    ]
    bad = InputError("/p/profiles/default.yaml", 2, "bad address")
    effects = rec.on_recheck(True, bad, drifted=False)
    assert logs(effects) == [
        ("error", "/p/profiles/default.yaml:2: bad address (keeping address 10.0.0.9)")
    ]
    assert rec.on_recheck(True, bad, drifted=True)[-2:] == [FullSync("re-check"), Settle()]
    assert rec.on_reload((rec.target, None))[-2:] == [FullSync("reload"), Settle()]


def test_the_state_is_plain_json() -> None:
    rec = fresh()
    state = json.loads(json.dumps(rec.state()))
    assert state["variants"][VA] == {"source": A, "state": "current"}
    assert state["syncs"] == 2 and state["errors"] == [] and state["folder_present"]
