"""Which events cost the daemon work: a save re-derives the entries that read the saved file and
nothing else, only a change of the set of files makes it look at the folder again, its own
writes and anyone's reads cost nothing. Counted, never timed: the daemon's state file says what
its loop did (`work`), and an in-process observer shows which events reach the handler."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent
from watchdog.observers import Observer

from carla_launcher.compose.discover import find_entries
from carla_launcher.compose.service import VariantState
from carla_launcher.daemon.effects import Events, Rediscover, Settle, Synced, SyncEntries
from carla_launcher.daemon.reconciler import Reconciler
from carla_launcher.daemon.watch import EVENT_FILTER, Handler, Inbox, Interest, norm
from tests.daemon.test_daemon_reconciler import SHARED, TARGET, VA, A, B, F, report, synced
from tests.harness.daemon import ADDRESS, read, wait_current
from tests.harness.polling import wait_for


# -- pure: the reconciler ------------------------------------------------------------------------
def test_a_save_of_a_known_file_rederives_its_readers_without_rediscovery() -> None:
    rec = synced(Reconciler(F, TARGET, None))
    # an atomic save arrives as a rename onto the known name: the loop saw no new name
    assert rec.on_batch(Events(frozenset({SHARED}))) == [
        SyncEntries({A: "/p/common/agent.yaml changed", B: "/p/common/agent.yaml changed"}),
        Settle(),
    ]
    assert rec.on_batch(Events(frozenset({A}))) == [SyncEntries({A: "a.yaml changed"}), Settle()]
    # a new name in the folder: look for entries again
    new = f"{F}/c.yaml"
    effects = rec.on_batch(Events(frozenset({new}), structural=True))
    assert effects == [Rediscover(frozenset(), frozenset({new}))]


def test_the_inverse_index_follows_each_entrys_inputs() -> None:
    rec = synced(Reconciler(F, TARGET, None))
    assert rec.readers == {A: {A}, B: {B}, SHARED: {A, B}}
    other = "/p/common/other.yaml"
    rec.on_synced(Synced(report(A, VA, VariantState.CURRENT, [A, other]), "a.yaml changed"))
    assert rec.readers == {A: {A}, B: {B}, SHARED: {B}, other: {A}}
    assert rec.inputs() == {A, B, SHARED, other}
    rec.forget(B)
    assert rec.readers == {A: {A}, other: {A}}
    assert rec.readers_of({SHARED, other}) == {A}


def test_discovery_tells_a_hand_made_variant_from_an_entry(tmp_path: Path) -> None:
    entry = "services:\n  sim:\n    image: carlasim/carla:0.9.15\n"
    for name in ("route.yaml", "route-distributed.yaml", "compose.yaml", "b.yaml"):
        (tmp_path / name).write_text(entry)
    (tmp_path / "b-distributed.yml").write_text(entry)  # another suffix: not b.yaml's variant
    assert [p.name for p in find_entries(tmp_path)] == [
        "b-distributed.yml",
        "b.yaml",
        "compose.yaml",
        "route.yaml",
    ]


# -- the watcher: which events reach Python at all ----------------------------------------------
class Recording(Handler):
    def __init__(self, inbox: Inbox, interest: Interest) -> None:
        super().__init__(inbox, interest)
        self.seen: list[tuple[str, str]] = []
        self.changed = threading.Event()

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.seen.append((event.event_type, os.fsdecode(event.src_path)))
        self.changed.set()
        super().on_any_event(event)


def test_reading_a_watched_file_gives_the_handler_no_event(tmp_path: Path) -> None:
    folder = norm(tmp_path)
    watched = tmp_path / "compose.yaml"
    watched.write_text("services: {}\n")
    inbox = Inbox(delay=0.0, max_wait=0.0)
    handler = Recording(inbox, Interest(folder))
    observer = Observer()
    observer.schedule(handler, folder, event_filter=EVENT_FILTER)
    observer.start()
    try:
        for _ in range(200):  # what an editor, a test or docker compose does
            watched.read_text()
            os.stat(watched)  # noqa: PTH116
        marker = tmp_path / "marker.yaml"
        marker.write_text("x: 1\n")  # events come in order: once this one is seen, so were reads
        wait_for(lambda: any(p == str(marker) for _, p in handler.seen), 10, "the marker's event")
        assert all(p == str(marker) for _, p in handler.seen), handler.seen
        assert {kind for kind, _ in handler.seen} <= {"created", "modified", "closed"}
        batch = inbox.take()
        assert batch is not None and batch.paths == {str(marker)}
    finally:
        observer.stop()
        observer.join(5)
        inbox.close()


# -- a real daemon: what its loop did, from its state file ---------------------------------------
def work(root: Path) -> dict[str, int]:
    state = next((root / "home/.local/state/carla-launch").glob("daemon-build-*.json"))
    return dict(json.loads(state.read_text())["work"])


def atomic_save(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def test_saves_rederive_only_the_readers_and_our_own_writes_cost_nothing(
    project: Path, daemons: Any
) -> None:
    build = project / "build"
    d = daemons(project, "--dir", "build", "--address", ADDRESS).ready()
    wait_current(build, d)
    start = work(project)
    assert start["full_syncs"] == 1 and start["rediscoveries"] == 0
    readers = {
        "docker-compose.devroute-distributed.yaml",
        "docker-compose.leaderboard-distributed.yaml",
    }
    before = {name: read(build / name) for name in readers}
    synced_before = d.count(r"synced build/")

    # an atomic save of the shared fragment: it (an entry with no simulator, so no variant of
    # its own) and its two readers are derived again, nothing else
    fragment = build / "agent_service.yaml"
    atomic_save(fragment, fragment.read_text().replace("init: true", "init: false"))
    wait_for(lambda: work(project)["derived"] >= start["derived"] + 3, 10, "the re-derive", d.log)
    wait_current(build, d)
    assert all(read(build / name) != text for name, text in before.items())
    assert d.count(r"synced build/") == synced_before + 2
    assert d.count(r"synced build/docker-compose\.distributed\.yaml") == 1  # at start only

    # an atomic save of an entry: that entry only; by the time it is handled, the echo of the
    # daemon's own writes above has been seen (events come in order) and cost no rediscovery
    entry = build / "docker-compose.yaml"
    atomic_save(entry, entry.read_text().replace("TM_PORT: 8000", "TM_PORT: 8001"))
    wait_current(build, d, contains={"docker-compose.distributed.yaml": "TM_PORT: 8001"})
    wait_for(lambda: work(project)["derived"] >= start["derived"] + 4, 10, "the re-derive", d.log)
    now = work(project)
    assert now["derived"] == start["derived"] + 4
    assert now["rediscoveries"] == 0 and now["full_syncs"] == 1
    assert d.count(r"synced build/") == synced_before + 3
    assert "error" not in d.log()


def test_a_new_compose_file_is_discovered_and_a_deleted_one_forgotten(
    project: Path, daemons: Any
) -> None:
    build = project / "build"
    d = daemons(project, "--dir", "build", "--address", ADDRESS).ready()
    wait_current(build, d)
    # renamed onto a new name: the set of files changed
    atomic_save(build / "docker-compose.nightly.yaml", (build / "docker-compose.yaml").read_text())
    wait_for(
        lambda: (build / "docker-compose.nightly-distributed.yaml").exists(), 10, "a variant", d.log
    )
    wait_current(build, d)
    assert work(project)["rediscoveries"] >= 1
    (build / "docker-compose.nightly.yaml").unlink()
    d.wait_log(r"no longer a compose entry: build/docker-compose\.nightly\.yaml")
    assert d.alive()
