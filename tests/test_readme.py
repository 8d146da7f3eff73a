"""The README shows what the code makes, so the two cannot drift apart unnoticed: the walkthrough
runs exactly the commands the recording script plays (a renamed command or flag fails here; the
script itself needs root and minutes, so it is not played), the table of profile fields is the
generated one, and the set-up commands are the two a new user types."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from carla_launcher.profile import schema
from tests.harness import walkthrough

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")

TABLE_BEGIN = "<!-- profile fields: begin"
TABLE_END = "<!-- profile fields: end -->"


def _section(heading: str) -> str:
    start = README.index(f"\n## {heading}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end >= 0 else len(README)]


def test_the_walkthrough_runs_exactly_the_commands_the_script_plays() -> None:
    recorded = walkthrough.readme_commands(README)
    assert recorded == [step.argv for step in walkthrough.STEPS], (
        "README's walkthrough and tests/harness/walkthrough.py disagree: record it again with "
        "`python -m tests.harness.walkthrough --readme` (as root)"
    )


def test_the_walkthrough_is_a_recording_not_hand_written() -> None:
    """Every command in the block has the output the script captured under it, and the block
    sits in the section a new user reads after setting up."""
    section = _section("From nothing to driving")
    start = section.index(walkthrough.BEGIN)
    block = section[start : section.index(walkthrough.END)]
    assert "made by `python -m tests.harness.walkthrough --readme`" in block
    lines = block.splitlines()
    commands = [i for i, line in enumerate(lines) if line.startswith("$ carla-launch ")]
    for i in commands:
        following = lines[i + 1 : i + 4]
        assert any(line.strip() and not line.startswith("$ ") for line in following), lines[i]


def test_the_readme_parser_reads_commands_with_and_without_comments() -> None:
    text = (
        f"{walkthrough.BEGIN} -->\n```console\n"
        "$ carla-launch up gpu -f 'a b.yaml'   # a comment\nup: output\n"
        "$ carla-launch status gpu\nserver yes\n```\n"
        "$ carla-launch not-in-the-block\n"
        f"{walkthrough.END}\n$ carla-launch after-the-block\n"
    )
    assert walkthrough.readme_commands(text) == [
        ("up", "gpu", "-f", "a b.yaml"),
        ("status", "gpu"),
        ("not-in-the-block",),
    ]


def test_into_readme_replaces_only_the_recorded_block() -> None:
    before = f"intro\n{walkthrough.BEGIN} -->\nold\n{walkthrough.END}\nafter\n"
    new = f"{walkthrough.BEGIN}: x -->\nnew\n{walkthrough.END}\n"
    assert walkthrough.into_readme(before, new) == f"intro\n{new}after\n"
    with pytest.raises(RuntimeError, match="walkthrough"):
        walkthrough.into_readme("no markers here\n", new)


def test_the_profile_fields_table_is_the_generated_one() -> None:
    start = README.index(TABLE_BEGIN)
    table = README[README.index("\n", start) + 1 : README.index(TABLE_END)]
    assert table == schema.markdown(), (
        "README's table of profile fields differs from the fields: paste the output of "
        "`python -m carla_launcher.profile.schema --markdown` between its markers"
    )
    assert start > README.index("\n## Profiles\n")


def test_set_up_is_the_two_commands() -> None:
    section = _section("Set up")
    first = re.search(r"```sh\n(.*?)```", section, re.S)
    assert first is not None
    commands = [
        line
        for line in first.group(1).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands == ["./install", "tests/run"]
    assert (REPO / "install").stat().st_mode & 0o111
    assert (REPO / "tests" / "run").stat().st_mode & 0o111


def test_the_pre_commit_snippet_names_the_released_tag() -> None:
    from carla_launcher import __version__

    assert f"rev: v{__version__}" in _section("Distributed variants: `carla-launch sync`")
