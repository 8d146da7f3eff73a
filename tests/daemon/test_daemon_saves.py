"""What editors and people do to files, done for real to a running daemon's folder.

Each test asserts the variant's final content (equal to the sync core's plan, and holding
the last edit) and that the daemon is still alive.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.daemon import ADDRESS, SMALL, read, wait_current
from tests.harness.polling import wait_for


# -- save styles (what the editors do, as seen in notes/libraries.md section 3) --------------------
def in_place(path: Path, text: str) -> None:
    """VS Code's default, nano, open('w')."""
    with path.open("w") as f:
        f.write(text)


def temp_and_replace(path: Path, text: str) -> None:
    """VS Code with atomic saves, most libraries: a temp file renamed over the file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def jetbrains(path: Path, text: str) -> None:
    """JetBrains safe write: write tmp, rename the original away, rename tmp in, delete old."""
    tmp = path.with_name(path.name + "___jb_tmp___")
    old = path.with_name(path.name + "___jb_old___")
    tmp.write_text(text)
    path.rename(old)
    tmp.rename(path)
    old.unlink()


def vim(path: Path, text: str) -> None:
    """vim backupcopy=auto: probe file 4913, rename f -> f~, create f, write, delete f~."""
    swp = path.with_name(f".{path.name}.swp")
    swp.write_text("swap")
    probe = path.with_name("4913")
    probe.write_text("")
    probe.unlink()
    backup = path.with_name(path.name + "~")
    path.rename(backup)  # for a moment the file does not exist
    with path.open("w") as f:
        f.write(text)
    backup.unlink()
    swp.unlink()


def sed_i(path: Path, text: str) -> None:
    """`sed -i`: a temp file sedXXXXXX renamed over the file (the new text replaces the old)."""
    old = path.read_text()
    m_old = re.search(r'MARK: "([^"]*)"', old)
    m_new = re.search(r'MARK: "([^"]*)"', text)
    assert m_old and m_new
    subprocess.run(
        ["sed", "-i", f's/MARK: "{m_old.group(1)}"/MARK: "{m_new.group(1)}"/', str(path)],
        check=True,
    )
    assert path.read_text() == text


STYLES: dict[str, Callable[[Path, str], None]] = {
    "in-place": in_place,
    "temp+replace": temp_and_replace,
    "jetbrains": jetbrains,
    "vim": vim,
    "sed-i": sed_i,
}


@pytest.mark.parametrize("style", list(STYLES))
def test_save_style(style: str, small: Path, daemons: Any) -> None:
    build = small / "build"
    d = daemons(small, "--dir", "build", "--address", ADDRESS).ready()
    wait_current(build, d, contains={"compose.distributed.yaml": 'MARK: "v0"'})
    save = STYLES[style]
    for i in (1, 2, 3):  # several saves, some apart, so that each one is followed
        save(build / "compose.yaml", SMALL.format(mark=f"{style}-{i}"))
        wait_current(build, d, contains={"compose.distributed.yaml": f'MARK: "{style}-{i}"'})
    variant = read(build / "compose.distributed.yaml") or ""
    assert f"CARLA_HOST: {ADDRESS}" in variant and "carlasim/carla" not in variant
    assert d.alive()
    assert "error" not in d.log()
    # no variant was made of an editor's temp or backup file
    assert sorted(p.name for p in build.iterdir()) == ["compose.distributed.yaml", "compose.yaml"]


def test_a_burst_of_saves_gives_bounded_work_and_the_final_content(
    small: Path, daemons: Any
) -> None:
    build = small / "build"
    d = daemons(small, "--dir", "build", "--address", ADDRESS).ready()
    wait_current(build, d)
    before = d.count("synced build/compose.distributed.yaml")
    n = 2000
    stamps = []
    for i in range(n):
        (temp_and_replace if i % 2 else in_place)(
            build / "compose.yaml", SMALL.format(mark=f"burst-{i}")
        )
        stamps.append(time.monotonic())
    burst = stamps[-1] - stamps[0]
    wait_current(build, d, contains={"compose.distributed.yaml": f'MARK: "burst-{n - 1}"'})
    # the daemon logs a sync after its write: on a busy machine the file can be read first
    wait_for(
        lambda: d.count("synced build/compose.distributed.yaml") > before, 10, "the sync's log line"
    )
    syncs = d.count("synced build/compose.distributed.yaml") - before
    # trailing debounce (50 ms), capped at one batch per second while events keep coming: at
    # most one sync per pause longer than the debounce (this process may be descheduled on a
    # busy machine), one per second of burst, and the last one
    pauses = sum(1 for a, b in itertools.pairwise(stamps) if b - a > 0.05)
    assert syncs >= 1 and syncs <= pauses + int(burst / 1.0) + 2, (syncs, pauses, burst)
    assert syncs < n / 50
    assert d.alive()


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def test_git_checkout_of_another_branch(project: Path, daemons: Any) -> None:
    build = project / "build"
    for v in build.glob("*distributed.yaml"):
        v.unlink()
    (project / ".gitignore").write_text("*-distributed.yaml\n*.distributed.yaml\n*.log\n")
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "main")
    _git(project, "checkout", "-q", "-b", "other")
    # another branch: many files change at once, one entry is new, one is gone
    for name in ("agent_service.yaml", "docker-compose.yaml", "docker-compose.devroute.yaml"):
        p = build / name
        p.write_text(p.read_text().replace("2000", "2010"))
    shutil.copy(build / "docker-compose.leaderboard.yaml", build / "docker-compose.nightly.yaml")
    (build / "docker-compose.leaderboard.yaml").unlink()
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "other")
    _git(project, "checkout", "-q", "main")

    d = daemons(project, "--dir", "build", "--address", ADDRESS).ready()
    wait_current(build, d)
    _git(project, "checkout", "-q", "other")
    want = wait_current(
        build, d, contains={"docker-compose.nightly-distributed.yaml": "leaderboard_evaluator"}
    )
    assert {p.name for p in want} == {
        "docker-compose.distributed.yaml",
        "docker-compose.devroute-distributed.yaml",
        "docker-compose.nightly-distributed.yaml",
    }
    assert "2010" in (read(build / "docker-compose.devroute-distributed.yaml") or "")
    d.wait_log(r"no longer a compose entry: build/docker-compose\.leaderboard\.yaml")
    _git(project, "checkout", "-q", "main")
    wait_current(
        build, d, contains={"docker-compose.leaderboard-distributed.yaml": "leaderboard_evaluator"}
    )
    assert "2010" not in (read(build / "docker-compose.devroute-distributed.yaml") or "")
    assert d.alive()


def test_deleted_and_recreated(small: Path, daemons: Any) -> None:
    build = small / "build"
    d = daemons(small, "--dir", "build", "--address", ADDRESS).ready()
    wait_current(build, d)
    (build / "compose.yaml").unlink()
    d.wait_log(r"no longer a compose entry: build/compose\.yaml \(its variant is kept\)")
    assert (build / "compose.distributed.yaml").exists()
    (build / "compose.yaml").write_text(SMALL.format(mark="reborn"))
    wait_current(build, d, contains={"compose.distributed.yaml": 'MARK: "reborn"'})
    # a deleted variant comes back
    (build / "compose.distributed.yaml").unlink()
    wait_current(build, d, contains={"compose.distributed.yaml": 'MARK: "reborn"'})
    assert d.alive()


def test_half_saved_invalid_yaml_keeps_the_last_good_variant(small: Path, daemons: Any) -> None:
    build = small / "build"
    d = daemons(small, "--dir", "build", "--address", ADDRESS).ready()
    good = wait_current(build, d)[build / "compose.distributed.yaml"]
    full = SMALL.format(mark="next")
    half = full[: full.index("MARK")] + 'MARK: "nex\n  other: [\n'  # a save cut short
    in_place(build / "compose.yaml", half)
    log = d.wait_log(
        r"^\S+ \S+ error: build/compose\.yaml:\d+: invalid YAML: "
        r".*\(keeping the last good variant\)$"
    )
    assert len([line for line in log.splitlines() if "error:" in line]) == 1  # one line
    assert read(build / "compose.distributed.yaml") == good
    in_place(build / "compose.yaml", full)
    d.wait_log(r"recovered: build/compose\.yaml")
    wait_current(build, d, contains={"compose.distributed.yaml": 'MARK: "next"'})
    assert d.alive()


def test_a_file_included_from_outside_the_folder(small: Path, daemons: Any) -> None:
    shared = small.parent / "shared"
    shared.mkdir()
    (shared / "base.yaml").write_text(
        "services:\n  agent:\n    image: example/agent:latest\n"
        "    environment:\n      CARLA_HOST: sim\n"
    )
    build = small / "build"
    (build / "compose.yaml").write_text(
        "services:\n"
        "  sim:\n    image: carlasim/carla:0.9.15\n"
        "  agent:\n    extends:\n      file: ../../shared/base.yaml\n      service: agent\n"
        "    environment:\n      MARK: own\n"
    )
    d = daemons(small, "--dir", "build", "--address", ADDRESS).ready()
    wait_current(build, d, contains={"compose.distributed.yaml": f"CARLA_HOST: {ADDRESS}"})
    (shared / "base.yaml").write_text(
        "services:\n  agent:\n    image: example/agent:latest\n"
        "    environment:\n      CARLA_SERVER_HOST: sim\n"
    )
    d.wait_log(r"synced build/compose\.distributed\.yaml \(\S*shared/base\.yaml changed\)")
    wait_current(build, d, contains={"compose.distributed.yaml": f"CARLA_SERVER_HOST: {ADDRESS}"})
    assert d.alive()


def test_the_folder_renamed_away_and_back(small: Path, daemons: Any) -> None:
    build = small / "build"
    d = daemons(small, "--dir", "build", "--address", ADDRESS).ready()
    wait_current(build, d)
    moved = small / "build.moved"
    build.rename(moved)
    d.wait_log(r"warning: folder build is gone \(renamed or deleted\); variants are kept")
    # edits in the renamed folder are not the watched folder's business
    in_place(moved / "compose.yaml", SMALL.format(mark="while-away"))
    assert d.alive()
    moved.rename(build)
    d.wait_log(r"folder build is back")
    wait_current(build, d, contains={"compose.distributed.yaml": 'MARK: "while-away"'})
    in_place(build / "compose.yaml", SMALL.format(mark="after"))
    wait_current(build, d, contains={"compose.distributed.yaml": 'MARK: "after"'})
    # deleted, then made again (a new inode: the old watch is dead)
    shutil.rmtree(build)
    d.wait_log(r"folder build is gone", count=2)
    build.mkdir()
    (build / "compose.yaml").write_text(SMALL.format(mark="new-inode"))
    wait_current(build, d, contains={"compose.distributed.yaml": 'MARK: "new-inode"'})
    in_place(build / "compose.yaml", SMALL.format(mark="new-inode-2"))
    wait_current(build, d, contains={"compose.distributed.yaml": 'MARK: "new-inode-2"'})
    assert d.alive()
    assert d.stop() == 0
