"""One record of each server, written by whatever learns it and read by everything.

Every test has its own XDG_STATE_HOME (tests/harness/cli.py), set here again in tmp_path so
the files the test looks at are plain to see.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from carla_launcher import records
from carla_launcher.deploy.runner import DeployReport, HostResult, record
from carla_launcher.errors import InputError
from carla_launcher.profile import Profile, read_profile
from carla_launcher.records import ServerRecord
from carla_launcher.stack import overview


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "carla-launch"


def _profile(
    tmp_path: Path, remote: str = "remote:\n  host: gpu-box\n", name: str = "gpu"
) -> Profile:
    path = tmp_path / "profiles" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(remote)
    return read_profile(path)


def _status_rows(prof: Profile) -> dict[str, str]:
    """`carla-launch status`'s table for a stopped server: its address is read from the
    records as `status` reads it (no SSH)."""
    host = str(prof.remote.host)
    address, refused = overview._address(prof, host)
    server = {"running": False, "state": "stopped"}
    facts: dict[str, Any] = {
        "profile": prof.name,
        "hosts": [overview._host(host, (address, refused), server, {})],
        "daemon": {},
        "agent": {},
        "session": {"name": "carla-gpu"},
    }
    return dict(line.split(None, 1) for line in overview.render(facts) if line[0] != " ")


# -- the bug: status read one of two files -------------------------------------------------------
def test_what_up_learns_is_what_status_shows(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`up` on a box deployed earlier: the address it discovers, the port and the version it
    reached are recorded, and `status` shows that address (it said "not known yet"); so is
    each server's of several (its own port and version)."""
    from carla_launcher.box import address as box_address
    from carla_launcher.server import control
    from carla_launcher.stack import servers
    from carla_launcher.stack import up as stack_up

    class Reached(Exception):
        pass

    def stop_here(*_: object) -> None:
        raise Reached

    def running(slot: int, port: int) -> dict[str, Any]:
        return {"host": "gpu-box", "slot": slot, "port": port, "deployed": True, "running": True}

    prof = _profile(
        tmp_path, "remote:\n  host: gpu-box\nserver:\n  gpus: [0, 1]\ncompose:\n  address: env\n"
    )
    found = servers.Ensured({"gpu-box": [running(0, 2003), running(1, 2006)]})
    versions = {2003: "0.9.15", 2006: "0.9.16"}
    monkeypatch.setattr(box_address, "discover_address", lambda p, h, *accept: "10.0.0.9")
    monkeypatch.setattr(stack_up, "ensure_servers", lambda *a: found)
    monkeypatch.setattr(control, "wait_started", lambda p, h, a, port, *_, **__: versions[port])
    monkeypatch.setattr(stack_up, "sync_variants", stop_here)  # the next step: the variants
    with pytest.raises(Reached):
        stack_up.up(prof, None, print)
    assert records.server(prof, "gpu-box") == ServerRecord("gpu-box", "10.0.0.9", 2003, "0.9.15")
    assert records.server(prof, "gpu-box", 1) == ServerRecord(
        "gpu-box", "10.0.0.9", 2006, "0.9.16", slot=1
    )
    assert _status_rows(prof)["address"] == "10.0.0.9"
    assert records.profile_address(prof) == "10.0.0.9"  # and `sync` writes variants for it
    assert not (state / "addresses.json").exists() and not (state / "servers.json").exists()


def test_what_a_deploy_records_is_what_status_and_env_show(tmp_path: Path, state: Path) -> None:
    from carla_launcher.stack.env import known_env

    prof = _profile(tmp_path)
    ok = HostResult("gpu-box", True, address="fd00::7", port=2010, version="0.9.16")
    record(prof, DeployReport("gpu", False, [ok]))
    found = records.server(prof, "gpu-box")
    assert (found.address, found.port, found.version) == ("fd00::7", 2010, "0.9.16")
    assert found.deployed_at is not None
    assert _status_rows(prof)["address"] == "fd00::7"
    env = known_env(prof)  # no SSH: the record answers
    assert env["CARLA_LAUNCH_HOST"] == "fd00::7" and env["CARLA_LAUNCH_PORT"] == "2010"


def test_an_address_from_the_old_addresses_file_is_shown_by_status(
    tmp_path: Path, state: Path
) -> None:
    """The exact case of the bug, with the files users have: `address` (or `up`) wrote
    addresses.json only; status read only servers.json."""
    prof = _profile(tmp_path)
    state.mkdir(parents=True)
    (state / "addresses.json").write_text(json.dumps({prof.key: "10.0.0.5"}))
    assert _status_rows(prof)["address"] == "10.0.0.5"


# -- one writer, many readers ---------------------------------------------------------------------
def test_learning_keeps_what_it_was_not_told(tmp_path: Path, state: Path) -> None:
    prof = _profile(tmp_path)
    assert records.server(prof, "gpu-box") == ServerRecord("gpu-box")
    assert records.profile_address(prof) is None
    records.learn(prof, "gpu-box", address="10.0.0.2", port=2003, version="0.9.15")
    records.learn(prof, "gpu-box", address="10.0.0.3")  # `address P` later: a new address only
    assert records.server(prof, "gpu-box") == ServerRecord("gpu-box", "10.0.0.3", 2003, "0.9.15")


def test_the_profile_address_is_the_first_hosts_else_the_first_known(
    tmp_path: Path, state: Path
) -> None:
    prof = _profile(tmp_path, "remote:\n  host: [gpu-1, gpu-2]\n")
    records.learn(prof, "gpu-2", address="10.0.0.2")
    assert records.profile_address(prof) == "10.0.0.2"  # the first failed its deploy
    records.learn(prof, "gpu-1", address="10.0.0.1")
    assert records.profile_address(prof) == "10.0.0.1"


def test_the_old_files_are_read_until_the_new_one_knows_the_profile(
    tmp_path: Path, state: Path
) -> None:
    prof = _profile(tmp_path, "remote:\n  host: [gpu-1, gpu-2]\n")
    other = _profile(tmp_path, "remote:\n  host: other\n", name="other")
    state.mkdir(parents=True)
    old_servers = {
        prof.key: {"gpu-2": {"address": "10.0.0.2", "port": 2003, "deployed": "2026-01-01"}},
        other.key: {"other": {"address": "10.9.0.1", "port": 2000}},
    }
    (state / "servers.json").write_text(json.dumps(old_servers))
    (state / "addresses.json").write_text(json.dumps({prof.key: "10.0.0.1"}))
    # addresses.json held the first host's address; servers.json each deployed host's
    assert records.server(prof, "gpu-1").address == "10.0.0.1"
    assert records.server(prof, "gpu-2") == ServerRecord(
        "gpu-2", "10.0.0.2", 2003, deployed_at="2026-01-01"
    )
    records.learn(prof, "gpu-2", version="0.9.15")
    new = json.loads((state / records.SERVERS_FILE).read_text())
    assert set(new) == {prof.key}  # another profile is migrated when it is written
    assert new[prof.key]["gpu-1"] == {"address": "10.0.0.1"}
    assert new[prof.key]["gpu-2"]["version"] == "0.9.15"
    assert records.server(other, "other").port == 2000  # still read from the old file
    assert json.loads((state / "servers.json").read_text()) == old_servers  # never written


def test_a_recorded_value_that_is_not_an_address_is_refused_naming_the_file(
    tmp_path: Path, state: Path
) -> None:
    prof = _profile(tmp_path)
    records.learn(prof, "gpu-box", address="$(id)", port=2000)
    with pytest.raises(InputError) as e:
        records.server(prof, "gpu-box")
    assert records.SERVERS_FILE in str(e.value)
    assert "gpu-box: the remembered address is not an address" in str(e.value)
    records.learn(prof, "gpu-box", address="10.0.0.4")  # `carla-launch address P` repairs it
    assert records.server(prof, "gpu-box").address == "10.0.0.4"


def test_a_port_or_version_of_the_wrong_kind_counts_as_unknown(tmp_path: Path, state: Path) -> None:
    prof = _profile(tmp_path)
    state.mkdir(parents=True)
    bad = {prof.key: {"gpu-box": {"address": "10.0.0.4", "port": 70000, "version": 3}}}
    (state / records.SERVERS_FILE).write_text(json.dumps(bad))
    assert records.server(prof, "gpu-box") == ServerRecord("gpu-box", "10.0.0.4")


def test_a_session_record_round_trips_and_is_forgotten(tmp_path: Path, state: Path) -> None:
    prof = _profile(tmp_path)
    assert records.session(prof) is None
    rec = records.SessionRecord(tmp_path / "v.yaml", "carla-gpu", {"CARLA_LAUNCH_HOST": "h"})
    records.remember_session(prof, rec)
    assert records.session(prof) == rec
    passed = records.SessionRecord(rec.variant, rec.session, rec.env, ("--build", "agent"))
    records.remember_session(prof, passed)  # `up gpu -- --build agent`
    assert records.session(prof) == passed
    records.forget_session(prof)
    assert records.session(prof) is None


def test_every_agent_is_kept_and_a_tampered_one_is_left_alone(tmp_path: Path, state: Path) -> None:
    """`up` records an agent per server (host, slot, compose project, window); `down` takes
    exactly these down, so one that is not what `up` writes (a project or window that is not
    a name, a slot that is not a number) is dropped, never run."""
    prof = _profile(tmp_path)
    variant = tmp_path / "v.yaml"
    agents = [
        records.AgentRecord("gpu-box", k, f"gpu-abc123-{k}", variant, {"K": str(k)}, (), f"w-{k}")
        for k in (0, 1)
    ]
    rec = records.SessionRecord.of("carla-gpu", agents)
    records.remember_session(prof, rec)
    assert records.session(prof) == rec and records.session(prof).pairs == tuple(agents)  # type: ignore[union-attr]
    assert rec.variant == variant and rec.env == {"K": "0"}  # the first, for older readers

    data = json.loads((state / records.SESSIONS_FILE).read_text())
    stored = data[str(prof.path)]["agents"]
    good = stored[0]
    stored[1:] = [
        {**good, "project": "x; rm -rf ~"},
        {**good, "project": "-p"},
        {**good, "window": "a:b.c"},
        {**good, "slot": True},
        {**good, "slot": -1},
        {**good, "host": ""},
        "not an agent",
    ]
    (state / records.SESSIONS_FILE).write_text(json.dumps(data))
    assert records.session(prof).pairs == (agents[0],)  # type: ignore[union-attr]
    data[str(prof.path)]["agents"] = "nonsense"  # not a list: no agent at all, not the old kind
    (state / records.SESSIONS_FILE).write_text(json.dumps(data))
    assert records.session(prof).pairs == ()  # type: ignore[union-attr]
