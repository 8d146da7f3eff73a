"""The address is data, never code: hostile values are refused where they enter (the flag, the
profile, discovery), in one line naming where they came from, before any variant is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from carla_launcher.box.address import address_candidates, checked
from carla_launcher.box.ssh import RemoteError
from carla_launcher.netaddr import address_problem
from tests.harness.cli import SIMPLE_COMPOSE as COMPOSE
from tests.harness.cli import Cli, write_files

VARIANT = "docker-compose.distributed.yaml"

HOSTILE = [
    "$(id>/tmp/x)",
    "a;id",
    "${HOME}",
    'a"b',
    "1.2.3.4:2000",
    "--help",
    "*",
    "-oProxyCommand=touch /tmp/x",  # an option to ssh/docker
    "-H",
    "`id`",
    "a b",
    "gpu-box\nid",
    "[fd00::5]",
    "fe80::1%$(id)",
    "a'b",
    "a|b",
    "http://gpu-box",
    "gpu_box",
    "",
]
GOOD = ["10.0.0.5", "fd00::5", "gpu-box.lab.example", "gpu-box", "2001:db8::42"]


def _project(tmp_path: Path) -> None:
    write_files(tmp_path, {"docker-compose.yaml": COMPOSE})


def _yaml_str(value: str) -> str:
    """A double-quoted YAML scalar holding exactly `value` (JSON strings are YAML)."""
    import json

    return json.dumps(value)


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_flag_is_refused_before_anything_is_written(
    tmp_path: Path, run: Cli, value: str
) -> None:
    _project(tmp_path)
    result = run("sync", "--dir", ".", "--address", value)
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert "--address: not an address" in line
    assert line.endswith(repr(value)), line
    assert not (tmp_path / VARIANT).exists()


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_profile_address_names_file_line_and_field(
    tmp_path: Path, run: Cli, value: str
) -> None:
    _project(tmp_path)
    write_files(
        tmp_path,
        {
            "profiles/x.yaml": "remote:\n  host: gpu-box\n"
            f"  address: {_yaml_str(value)}\ncompose:\n  dir: .\n"
        },
    )
    result = run("sync", "--profile", "x")
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert "profiles/x.yaml:3: remote.address: not an address" in line, line
    assert not (tmp_path / VARIANT).exists()


@pytest.mark.parametrize("value", GOOD)
def test_addresses_and_names_are_accepted(tmp_path: Path, run: Cli, value: str) -> None:
    _project(tmp_path)
    result = run("sync", "--dir", ".", "--address", value)
    assert result.exit_code == 0, result.output
    assert value in (tmp_path / VARIANT).read_text()
    write_files(
        tmp_path,
        {"profiles/x.yaml": f"remote:\n  host: gpu-box\n  address: {value}\ncompose:\n  dir: .\n"},
    )
    (tmp_path / VARIANT).unlink()
    result = run("sync", "--profile", "x")
    assert result.exit_code == 0, result.output
    assert value in (tmp_path / VARIANT).read_text()


def test_remembered_address_from_a_tampered_state_file_is_refused(tmp_path: Path, run: Cli) -> None:
    from carla_launcher.profile import load_profile
    from carla_launcher.state import write_json

    _project(tmp_path)
    write_files(tmp_path, {"profiles/x.yaml": "remote:\n  host: gpu-box\ncompose:\n  dir: .\n"})
    # the file of earlier versions, which users still have
    write_json("addresses.json", {load_profile("x", tmp_path).key: "$(id)"})
    result = run("sync", "--profile", "x")
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert "addresses.json" in line and "gpu-box: the remembered address is not an address" in line
    assert not (tmp_path / VARIANT).exists()


def test_discovery_drops_what_a_box_reports_that_is_not_an_address() -> None:
    cands = address_candidates("10.0.0.1 4000 $(id) 22", [], ["$(id)", "-oX", "10.77.0.2", "a;b"])
    assert cands == ["10.77.0.2"]


def test_a_discovered_value_that_is_not_an_address_is_one_line_naming_the_box() -> None:
    with pytest.raises(RemoteError) as e:
        checked("a;id", "gpu-box", "the discovered address")
    assert str(e.value).startswith("gpu-box: the discovered address is not an address")
    assert "\n" not in str(e.value)
    assert checked("fd00::5", "gpu-box", "x") == "fd00::5"


@pytest.mark.parametrize("value", ["0.0.0.0", "::", "1.2.3", "01.2.3.4", "a..b", "x" * 254])
def test_not_addresses(value: str) -> None:
    assert address_problem(value)
