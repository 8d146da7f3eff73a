"""What `up` says of the variants it writes is what `sync` says of them: the simulator removed,
how many references point where, and where the address came from, in the same words.

Each case makes the same project twice: `up`'s variant step writes one, the real `carla-launch
sync` the other, and their lines must agree word for word.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from carla_launcher import records
from carla_launcher.profile import load_profile
from carla_launcher.stack.variants import address_origin, sync_variants
from tests.harness.cli import SIMPLE_COMPOSE, Cli, write_files

LITERAL = "remote:\n  host: gpu-box\n  address: 10.0.0.5\n"
REMEMBERED = "remote:\n  host: gpu-box\n"
ENV = "remote:\n  host: gpu-box\ncompose:\n  address: env\n"


def _project(folder: Path, profile: str) -> None:
    write_files(folder, {"profiles/gpu.yaml": profile, "build/docker-compose.yaml": SIMPLE_COMPOSE})
    if profile == REMEMBERED:  # what a deploy or `address` learnt earlier
        records.learn(load_profile("gpu", folder), "gpu-box", address="10.0.0.7", port=2000)


def _up_lines(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.chdir(folder)  # paths are shown relative to where the user runs it, as sync's
    prof = load_profile("gpu", folder)
    address = prof.remote.address or records.profile_address(prof) or "10.0.0.9"
    said: list[str] = []
    synced = sync_variants(prof, address, 2000, said.append, address_origin(prof))
    assert said == []
    assert [p.name for p in synced.written] == ["docker-compose.distributed.yaml"]
    return synced.lines


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (LITERAL, "now points at 10.0.0.5:2000 (address from profiles/gpu.yaml)"),
        (REMEMBERED, "now points at 10.0.0.7:2000 (address remembered for profile gpu)"),
        (ENV, "now reads $CARLA_LAUNCH_HOST (env address mode: profiles/gpu.yaml)"),
    ],
    ids=["profile-address", "remembered", "env-mode"],
)
def test_up_says_what_sync_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profile: str, expected: str
) -> None:
    up_side, sync_side = tmp_path / "up", tmp_path / "sync"
    for folder in (up_side, sync_side):
        _project(folder, profile)
    lines = _up_lines(up_side, monkeypatch)
    assert lines == [
        "wrote build/docker-compose.distributed.yaml: removed service carla-simulator; "
        f"1 reference {expected}"
    ]
    synced = Cli(sync_side)("sync", "--profile", "gpu")
    assert synced.exit_code == 0, synced.output
    assert synced.stdout.splitlines() == lines


def test_an_address_found_by_up_says_so(tmp_path: Path) -> None:
    write_files(tmp_path, {"profiles/gpu.yaml": REMEMBERED})
    prof = load_profile("gpu", tmp_path)
    assert address_origin(prof, "gpu-box") == "address found over SSH on gpu-box"
    env = tmp_path / "profiles" / "gpu.yaml"
    env.write_text(ENV)  # the env mode: the variants hold no address, wherever it came from
    assert address_origin(load_profile("gpu", tmp_path), "gpu-box").startswith("env address mode")


def test_a_second_up_writes_nothing_and_says_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project(tmp_path, LITERAL)
    assert len(_up_lines(tmp_path, monkeypatch)) == 1
    prof = load_profile("gpu", tmp_path)
    again = sync_variants(prof, "10.0.0.5", 2000, print, address_origin(prof))
    assert again.written == [] and again.lines == []
    assert [p.name for p in again.variants] == ["docker-compose.distributed.yaml"]
