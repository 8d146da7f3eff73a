"""Hostile input to `sync` and the daemon: hand edits are never lost, and one bad file never
stops the rest. Every case: one `error: FILE[:LINE]: ...` line per bad file, no traceback, exit
2 (1 for a kept hand edit), and the good entry beside it gets its correct variant."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from carla_launcher.compose import discover, yamlio
from carla_launcher.compose.project import Project
from carla_launcher.compose.sync import Target, plan_entry
from carla_launcher.compose.variants import hand_edited, render
from carla_launcher.errors import InputError
from carla_launcher.fsutil import STALE_TEMP_S, atomic_write, stale_temps
from tests.harness.cli import REPO, child
from tests.harness.daemon import ADDRESS, daemon_env, wait_current
from tests.harness.polling import wait_for

GOOD = """\
services:
  carla-simulator: {image: carlasim/carla:0.9.15}
  agent:
    image: agent
    environment:
      - CARLA_HOST=carla-simulator
"""
OTHER = GOOD.replace("image: agent", "image: other-agent")
ADDR = "10.0.0.5"


def sync(run, *args: str):
    return run("sync", "--dir", ".", "--address", ADDR, *args)


def sync_child(folder: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    """`sync` of folder as its own process (for limits a process sets on itself)."""
    return child(
        "sync", "--dir", ".", "--address", ADDR, cwd=folder, env=daemon_env(folder.parent), **kw
    )


def planned(entry: Path, address: str = ADDR) -> str:
    """The variant the sync core plans for one good entry (what must be on disk)."""
    r = plan_entry(Project(), entry, Target(address))
    assert r.error is None and len(r.variants) == 1, r.error
    return r.variants[0].content


def errors(r) -> list[str]:
    """The error lines, after checking that nothing printed a traceback."""
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return [line for line in r.stderr.splitlines() if line.startswith("error:")]


def good_is_synced(folder: Path) -> None:
    variant = folder / "docker-compose.distributed.yaml"
    assert variant.read_text() == planned(folder / "docker-compose.yaml")


@pytest.fixture(name="folder")
def folder_fixture(tmp_path: Path) -> Path:
    """A good entry (docker-compose.yaml); its variant is missing, so every run must write it."""
    (tmp_path / "docker-compose.yaml").write_text(GOOD)
    return tmp_path


# -- 1. the header is part of what must not be edited --------------------------------------------
HEADER_EDITS = {
    "text-above": lambda t: "# my notes\n" + t,
    "blank-line-above": lambda t: "\n" + t,
    "first-line-edited": lambda t: t.replace("do not edit, edit", "edit freely, or edit", 1),
    "source-name-edited-once": lambda t: t.replace("from docker-compose.b.yaml", "from x.yaml", 1),
    "second-line-deleted": lambda t: re.sub(r"(?m)^# Regenerate with.*\n", "", t, count=1),
    "hash-line-edited": lambda t: t.replace("source-hash=", "source-hash=0", 1),
    "content-hash-edited": lambda t: re.sub(r"content-hash=\w+", "content-hash=" + "0" * 16, t),
    "header-moved-below": lambda t: "\n".join(
        t.split("\n")[3:4] + t.split("\n")[:3] + t.split("\n")[4:]
    ),
}


@pytest.mark.parametrize("edit", list(HEADER_EDITS), ids=list(HEADER_EDITS))
def test_an_edited_header_is_a_hand_edit_kept_unless_forced(folder: Path, run, edit: str) -> None:
    (folder / "docker-compose.b.yaml").write_text(OTHER)
    assert sync(run).exit_code == 0
    variant = folder / "docker-compose.b-distributed.yaml"
    edited = HEADER_EDITS[edit](variant.read_text())
    variant.write_text(edited)
    (folder / "docker-compose.distributed.yaml").unlink()
    r = sync(run, "--address", "10.0.0.6")  # a new address: both variants would change
    assert r.exit_code == 1, (r.stdout, r.stderr)
    assert errors(r) == []
    kept = [line for line in r.stderr.splitlines() if "edited by hand" in line]
    assert (
        len(kept) == 1
        and kept[0].startswith("docker-compose.b-distributed.yaml: ")
        and "--force" in kept[0]
    )
    assert variant.read_text() == edited
    assert (folder / "docker-compose.distributed.yaml").read_text() == planned(
        folder / "docker-compose.yaml", "10.0.0.6"
    )
    r = sync(run, "--address", "10.0.0.6", "--check")
    assert r.exit_code == 1 and "docker-compose.b-distributed.yaml: edited by hand" in r.stderr
    r = sync(run, "--address", "10.0.0.6", "--force")
    assert r.exit_code == 0, r.stderr
    assert variant.read_text() == planned(folder / "docker-compose.b.yaml", "10.0.0.6")


def test_hand_edited_is_strict_about_the_header_and_any_source_name() -> None:
    text = render(Path("/x/my compose: v2.yaml"), "services: {}\n", "0123456789abcdef")
    assert not hand_edited(text)
    for edit in HEADER_EDITS.values():
        assert hand_edited(edit(text.replace("my compose: v2.yaml", "docker-compose.b.yaml")))
    assert hand_edited(text.replace("services: {}", "services: {a: {}}"))


# -- 2. a source that cannot be read ------------------------------------------------------------
def test_a_dangling_symlink_source_is_an_error_not_a_stale_variant(folder: Path, run) -> None:
    (folder / "docker-compose.b.yaml").write_text(OTHER)
    assert sync(run).exit_code == 0
    stale = (folder / "docker-compose.b-distributed.yaml").read_text()
    (folder / "docker-compose.b.yaml").unlink()
    (folder / "docker-compose.b.yaml").symlink_to("moved-away.yaml")  # the target is gone
    (folder / "docker-compose.distributed.yaml").unlink()
    r = sync(run)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = errors(r)
    assert len(lines) == 1 and re.match(r"error: docker-compose\.b\.yaml: .*not found", lines[0]), (
        lines
    )
    assert (folder / "docker-compose.b-distributed.yaml").read_text() == stale  # kept, and said
    good_is_synced(folder)


def test_a_source_without_read_permission_is_an_error(folder: Path) -> None:
    """chmod 000 stops anyone but root: as root, the sync runs without the capabilities that
    let root read it anyway (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)."""
    (folder / "docker-compose.b.yaml").write_text(OTHER)
    (folder / "docker-compose.b.yaml").chmod(0o000)
    prefix: list[str] = []
    if os.getuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root reads any file; util-linux's setpriv is needed to drop that")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    r = sync_child(folder, prefix=prefix)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = errors(r)
    assert len(lines) == 1, r.stderr
    assert re.match(r"error: docker-compose\.b\.yaml: cannot read .*Permission denied", lines[0]), (
        lines
    )
    good_is_synced(folder)


def test_unreadable_files_are_entries_only_when_they_may_be_compose(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yaml").symlink_to("gone.yaml")
    (tmp_path / "notes.yaml").symlink_to("gone.yaml")  # could be anything: not our business
    (tmp_path / "route.yaml").symlink_to("gone.yaml")
    (tmp_path / "route-distributed.yaml").write_text("# made from route.yaml once\n")
    os.mkfifo(tmp_path / "compose.yaml")  # never read (it would block), never an entry
    (tmp_path / "folder.yaml").mkdir()
    assert [p.name for p in discover.find_entries(tmp_path)] == [
        "docker-compose.yaml",
        "route.yaml",
    ]


# -- 3. a variant that cannot be read -------------------------------------------------------------
@pytest.mark.parametrize("kind", ["folder", "fifo"])
@pytest.mark.parametrize("check", [False, True], ids=["sync", "check"])
def test_a_variant_that_cannot_be_read_is_one_line_and_the_rest_is_synced(
    folder: Path,
    run,
    kind: str,
    check: bool,
) -> None:
    (folder / "docker-compose.b.yaml").write_text(OTHER)
    variant = folder / "docker-compose.b-distributed.yaml"
    if kind == "folder":
        variant.mkdir()
    else:
        os.mkfifo(variant)  # root cannot read it either: reading it would block forever
    if check:
        assert sync(run).exit_code == 2
    r = sync(run, *(["--check"] if check else []))
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = errors(r)
    assert len(lines) == 1 and lines[0].startswith(
        "error: docker-compose.b-distributed.yaml: cannot read the variant: "
    ), lines
    good_is_synced(folder)
    if check:
        assert "1 of 2 variants current, 1 unreadable" in r.stderr


# -- 4. nesting too deep to parse -----------------------------------------------------------------
DEEP = {
    "flow-brackets": ("services:\n  x: " + "[" * 10_000 + "]" * 10_000 + "\n", 2),
    "flow-maps": ("services:\n  x: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n", 2),
    "indented-maps": ("services:\n" + "".join(" " * i + "k:\n" for i in range(1, 1_400)), 101),
    "nested-dashes": ("services:\n  x:\n    command:\n      " + "- " * 5_000 + "x\n", 4),
}


@pytest.mark.parametrize("case", list(DEEP), ids=list(DEEP))
def test_deep_nesting_is_one_line_with_its_line(folder: Path, run, case: str) -> None:
    text, line = DEEP[case]
    (folder / "docker-compose.b.yaml").write_text(text)
    r = sync(run)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = errors(r)
    assert lines == [
        f"error: docker-compose.b.yaml:{line}: nested deeper than {yamlio.MAX_DEPTH} "
        "levels; refused unparsed"
    ], lines
    good_is_synced(folder)


def test_the_recursion_error_backstop_is_one_line(
    folder: Path,
    run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(yamlio, "MAX_DEPTH", 10**9)  # as if the pre-scan missed it
    (folder / "docker-compose.b.yaml").write_text(DEEP["flow-brackets"][0])
    r = sync(run)
    assert r.exit_code == 2
    assert errors(r) == ["error: docker-compose.b.yaml: nested too deeply to parse"]
    good_is_synced(folder)


def test_nesting_and_brackets_that_are_not_deep_are_fine() -> None:
    ok = "services:\n  x: " + "[" * 80 + "]" * 80 + "\n"
    ok += '  y:\n    command: "' + "[" * 500 + "\"\n    z: '" + "{" * 300 + "'\n"
    ok += "    labels: |\n      " + "[" * 300 + "\n    plain: echo " + "[" * 300 + "\n"
    ok += "    # " + "{" * 300 + "\n"
    assert yamlio.too_deep(ok) is None
    yamlio.load(ok)
    for f in [*REPO.glob("build/*.yaml"), *REPO.glob("profiles/*.yaml")]:
        assert yamlio._scan_depth(f.read_text()) is None, f


# -- 5. an alias bomb ------------------------------------------------------------------------------
def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Billion laughs: each level lists the one before `width` times; 9 x 9 is 9**9 strings."""
    lines = ["x-l0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"x-l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + (
        f"\nservices:\n  carla-simulator: {{image: carlasim/carla:0.9.15}}\n"
        f"  agent:\n    image: agent\n    environment: *l{levels - 1}\n"
    )


def map_bomb(levels: int = 9, width: int = 9) -> str:
    """The same with mappings: every key of a level holds the level before."""
    lines = ["x-l0: &l0 {" + ", ".join(f"k{j}: lol" for j in range(width)) + "}"]
    for i in range(1, levels):
        lines.append(
            f"x-l{i}: &l{i} {{" + ", ".join(f"k{j}: *l{i - 1}" for j in range(width)) + "}"
        )
    return "\n".join(lines) + f"\nservices:\n  agent:\n    image: a\n    labels: *l{levels - 1}\n"


# the first node that alone expands past the limit: x-l5's list (9**6 strings), x-l4's map
@pytest.mark.parametrize(("bomb", "line"), [(alias_bomb, 6), (map_bomb, 5)], ids=["lists", "maps"])
def test_an_alias_bomb_is_refused_from_the_parse_alone(bomb: Any, line: int) -> None:
    with pytest.raises(InputError) as e:
        yamlio.load(bomb(), "bomb.yaml")
    assert str(e.value) == (
        f"bomb.yaml:{line}: aliases expand to more than {yamlio.MAX_NODES} "
        "nodes (an alias bomb?); refused"
    )
    yamlio.load(alias_bomb(levels=5, width=8))  # twice 8**5 = 32,768 strings: large, no bomb


def test_an_alias_bomb_is_one_line_and_the_rest_is_synced(folder: Path) -> None:
    """In a child with a memory cap: were the bomb walked, it would fail, not eat the machine."""
    (folder / "docker-compose.b.yaml").write_text(alias_bomb())

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    r = sync_child(folder, preexec_fn=cap)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert errors(r) == [
        f"error: docker-compose.b.yaml:6: aliases expand to more than "
        f"{yamlio.MAX_NODES} nodes (an alias bomb?); refused"
    ]
    good_is_synced(folder)


def test_the_daemon_logs_an_alias_bomb_once_keeps_syncing_and_stops_on_sigterm(
    tmp_path: Path, daemons: Any
) -> None:
    build = tmp_path / "proj" / "build"
    build.mkdir(parents=True)
    (build / "docker-compose.yaml").write_text(GOOD)
    (build / "docker-compose.b.yaml").write_text(alias_bomb())
    (build / "docker-compose.c.yaml").write_text(OTHER)
    (build / "docker-compose.c-distributed.yaml").mkdir()  # a folder where a variant should be
    d = daemons(build.parent, "--dir", "build", "--address", ADDRESS).ready()
    bomb = r"error: build/docker-compose\.b\.yaml:6: aliases expand to more than"
    folder_in_the_way = r"error: build/docker-compose\.c-distributed\.yaml: cannot read the variant"
    d.wait_log(bomb)
    d.wait_log(folder_in_the_way)
    good = build / "docker-compose.distributed.yaml"
    assert good.read_text() == planned(build / "docker-compose.yaml", ADDRESS)
    (build / "docker-compose.yaml").write_text(GOOD.replace("image: agent", "image: agent:v2"))
    d.wait_log(r"synced build/docker-compose\.distributed\.yaml \(docker-compose\.yaml changed\)")
    wait_for(lambda: good.read_text() == planned(build / "docker-compose.yaml", ADDRESS), log=d.log)
    assert "image: agent:v2" in good.read_text()
    assert d.count(bomb) == 1 and d.count(folder_in_the_way) == 1  # said once, not per change
    assert d.count("internal") == 0 and d.count("Traceback") == 0
    (build / "docker-compose.c-distributed.yaml").rmdir()  # out of the way: the variant comes
    d.wait_log(r"recovered: build/docker-compose\.c\.yaml")
    c = build / "docker-compose.c-distributed.yaml"
    wait_for(
        lambda: c.is_file() and c.read_text() == planned(build / "docker-compose.c.yaml", ADDRESS),
        log=d.log,
    )
    assert d.stop(signal.SIGTERM, timeout=10) == 0  # stop() fails if it is not gone within 10 s


# -- 6. a source over the size limit ---------------------------------------------------------------
def test_an_oversized_source_is_one_line_and_the_rest_is_synced(folder: Path, run) -> None:
    big = folder / "docker-compose.b.yaml"
    with big.open("w") as f:
        f.write(OTHER)
        f.truncate(8 << 30)  # sparse: 8 GiB that nothing may read whole
    (folder / "data.yaml").write_text("# a data set, not compose\nrows:\n" + "- 1\n" * 600_000)
    r = sync(run)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert errors(r) == [
        f"error: docker-compose.b.yaml: {8 << 30} bytes: larger than "
        f"{yamlio.MAX_SOURCE_BYTES} (a compose file is a few KB; is this the right file?)"
    ]
    good_is_synced(folder)


def test_discovery_reads_only_the_head_of_an_oversized_file(tmp_path: Path) -> None:
    with (tmp_path / "docker-compose.yaml").open("w") as f:
        f.write(GOOD)
        f.truncate(256 << 20)
    tracemalloc.start()
    try:
        found = discover.find_entries(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [p.name for p in found] == ["docker-compose.yaml"]
    assert peak < 4 * discover.HEAD_BYTES, peak


# -- 7. temp files of a killed sync --------------------------------------------------------------
def killed_write(path: Path) -> Path:
    """atomic_write in a child that dies between writing its temp file and renaming it."""
    code = (
        "import os, sys; from carla_launcher import fsutil\n"
        "os.replace = lambda *a: os._exit(9)\n"
        "fsutil.atomic_write(sys.argv[1], 'half')\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, check=False)
    assert r.returncode == 9
    (tmp,) = [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]
    assert re.fullmatch(rf"\.{re.escape(path.name)}\.\d+\.[a-z0-9_]{{8}}\.tmp", tmp.name), tmp.name
    return tmp


def test_temp_files_of_a_killed_sync_are_removed_by_the_next(folder: Path, run) -> None:
    variant = folder / "docker-compose.distributed.yaml"
    dead = killed_write(variant)  # its writer is gone: removed at once
    old = folder / f".{variant.name}.abcdefgh.tmp"  # older releases wrote no pid: removed by age
    old.write_text("half")
    os.utime(old, (time.time() - STALE_TEMP_S - 5,) * 2)
    live = folder / f".{variant.name}.{os.getpid()}.abcdefgh.tmp"  # a writer at work: kept
    live.write_text("half")
    others = [folder / ".docker-compose.yaml.1.abcdefgh.tmp", folder / f".{variant.name}.swp"]
    for p in others:
        p.write_text("not ours")
        os.utime(p, (0, 0))
    assert sync(run, "--check").exit_code == 1 and dead.exists()  # --check changes nothing
    r = sync(run)
    assert r.exit_code == 0, r.stderr
    assert not dead.exists() and not old.exists()
    assert live.exists() and all(p.exists() for p in others)
    good_is_synced(folder)


def test_stale_temps_by_age_and_by_pid(tmp_path: Path) -> None:
    target = tmp_path / "v.yaml"
    atomic_write(target, "x")
    assert list(tmp_path.iterdir()) == [target]  # a finished write leaves nothing
    mine = tmp_path / f".v.yaml.{os.getpid()}.abcdefgh.tmp"
    mine.write_text("")
    assert stale_temps(target) == []
    assert stale_temps(target, now=time.time() + STALE_TEMP_S + 1) == [mine]


def test_the_daemon_removes_temp_files_left_beside_its_variants(
    tmp_path: Path, daemons: Any
) -> None:
    build = tmp_path / "proj" / "build"
    build.mkdir(parents=True)
    (build / "docker-compose.yaml").write_text(GOOD)
    dead = killed_write(build / "docker-compose.distributed.yaml")
    d = daemons(build.parent, "--dir", "build", "--address", ADDRESS).ready()
    wait_current(build, d)
    assert not dead.exists()
    assert d.count(r"removed build/\.docker-compose\.distributed\.yaml\.\d+\.\w+\.tmp") == 1


# -- env files that are not files: no hang, one line, the other entries go on -------------------
@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_an_env_file_that_is_not_a_file_is_one_line_and_no_hang(
    folder: Path, run, kind: str
) -> None:
    (folder / "docker-compose.b.yaml").write_text(
        GOOD.replace("image: agent", "image: agent\n    env_file: [agent.env]")
    )
    if kind == "fifo":
        os.mkfifo(folder / "agent.env")
    else:
        (folder / "agent.env").mkdir()
    r = sync(run)  # a blocking read of the FIFO would hang here
    assert r.exit_code == 2
    lines = errors(r)
    assert len(lines) == 1 and "agent.env" in lines[0], r.stderr
    good_is_synced(folder)
