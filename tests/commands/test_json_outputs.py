"""Every `--json` output as a script reads it: the real command's output, checked against its
JSON Schema (carla_launcher/schemas/, draft 2020-12) and its `schema_version`.

Each command runs with the harness its own tests use: the recorded nvidia-smi for `gpu` and
`doctor`, a real daemon for `daemon status`, a network-namespace box with a real sshd for
`deploy`, `server status` and `status` (and a real tmux for the panes `status` reports).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from carla_launcher import session as sess
from carla_launcher.jsonout import SCHEMAS, schema_files
from tests.harness.daemon import ADDRESS, daemon_env
from tests.harness.fake_nvidia_smi import install
from tests.harness.netns_box import Box
from tests.harness.polling import wait_for

jsonschema = pytest.importorskip(
    "jsonschema", reason="needs jsonschema (the dev extra: pip install -e '.[dev]')"
)


def validator(name: str) -> Any:
    """A draft 2020-12 validator of output `name`, its `$ref`s to the other files resolved."""
    from referencing import Registry, Resource

    files = schema_files()
    registry = Registry().with_resources(
        (file, Resource.from_contents(body)) for file, body in files.items()
    )
    cls = jsonschema.Draft202012Validator
    return cls(files[f"{name}.schema.json"], registry=registry, format_checker=cls.FORMAT_CHECKER)


def checked(name: str, stdout: str) -> dict[str, Any]:
    """The document a command printed, after its schema and its version said yes."""
    doc = json.loads(stdout)
    errors = sorted(validator(name).iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors[:8]
    )
    assert doc["schema_version"] == 1
    return doc


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carla_launcher", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


# -- the schemas themselves ------------------------------------------------------------------------
def test_every_schema_is_draft_2020_12_and_installed_with_the_package() -> None:
    files = schema_files()
    assert {f"{n}.schema.json" for n in SCHEMAS} | {"common.schema.json"} <= set(files)
    for body in files.values():
        jsonschema.Draft202012Validator.check_schema(body)


OLD_SHAPES = {
    # server status for one host: a bare object, no version, no hosts list
    "server-status": {"host": "gpu", "running": True, "state": "running", "since": None},
    # gpu: `machines`, no version
    "gpu": {"machines": []},
    # deploy: float seconds without the _s suffix
    "deploy": {
        "schema_version": 1,
        "profile": "p",
        "ok": True,
        "dry_run": False,
        "elapsed": 2.9,
        "timings": {"total": 1.7},
        "hosts": [],
    },
    # doctor: no version; a local check without `host`
    "doctor": {
        "verdict": "local",
        "reason": "r",
        "mode": "local",
        "checks": [{"name": "tmux", "status": "ok", "detail": "d", "fix": None, "blocks": []}],
    },
    # daemon: epoch numbers for times, durations without _s
    "daemon-status": {
        "schema_version": 1,
        "folder": "/p",
        "state_file": "/s",
        "running": True,
        "pid": 1,
        "started": 1796040000.5,
        "uptime": 3.2,
        "rss": 1,
        "address": None,
        "last_sync": 1796040000.5,
        "last_sync_age": 1.0,
        "syncs": 0,
        "variants": [],
        "errors": [],
        "current": True,
        "checked": True,
        "systemd": {
            "unit": "u",
            "path": "/u",
            "installed": False,
            "manager": False,
            "active": None,
        },
    },
    # status: one host at the top level, panes by role with their shell scripts
    "status": {
        "schema_version": 1,
        "profile": "p",
        "host": "gpu",
        "server": {"running": True},
        "session": {"name": "s", "exists": True, "panes": {"server": {"command": "sh -c '...'"}}},
        "problems": [],
    },
}


@pytest.mark.parametrize("name", sorted(OLD_SHAPES))
def test_the_old_shapes_fail_their_schemas(name: str) -> None:
    assert not validator(name).is_valid(OLD_SHAPES[name])


# -- this machine: gpu, doctor, daemon status ------------------------------------------------------
@pytest.fixture
def fake_smi(tmp_path: Path) -> dict[str, str]:
    """An environment whose nvidia-smi is the recorded fake (two T4s, one shared)."""
    bin_dir = install(tmp_path / "fakebin", "two-t4-shared").parent
    env = dict(os.environ)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        CARLA_LAUNCH_GPU_BACKEND="smi",
        DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock",  # no daemon: a failing check, always
    )
    env.pop("FAKE_NVIDIA_SMI_CASE", None)
    return env


def test_gpu_json(fake_smi: dict[str, str]) -> None:
    r = run("gpu", "--json", env=fake_smi)
    assert r.returncode == 0, r.stderr
    doc = checked("gpu", r.stdout)
    (here,) = doc["hosts"]
    assert here["host"] is None and here["where"] == "this machine"
    assert [g["free_mib"] for g in here["gpus"]] == [1930, 15032]
    assert here["verdict"]["mode"] == "local"


def test_doctor_json(fake_smi: dict[str, str]) -> None:
    r = run("doctor", "--json", env=fake_smi)
    assert r.returncode in (0, 1), r.stderr
    doc = checked("doctor", r.stdout)
    assert {c["host"] for c in doc["checks"]} == {None}  # this machine only
    assert next(c for c in doc["checks"] if c["name"] == "docker")["status"] == "failing"


def test_daemon_status_json(small: Path, daemons: Any) -> None:
    env = daemon_env(small)
    r = run("daemon", "status", "--dir", "build", "--json", env=env, cwd=small)
    assert r.returncode == 1
    doc = checked("daemon-status", r.stdout)
    assert doc["running"] is False and doc["started"] is None and doc["uptime_s"] is None
    d = daemons(small, "--dir", "build", "--address", ADDRESS).ready()
    r = run("daemon", "status", "--dir", "build", "--json", env=env, cwd=small)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = checked("daemon-status", r.stdout)
    assert doc["pid"] == d.pid and doc["current"] is True
    assert doc["started"].endswith("+00:00") and doc["last_sync"].endswith("+00:00")
    assert doc["uptime_s"] >= 0 and doc["last_sync_age_s"] >= 0 and doc["rss_bytes"] > 0


# -- a box: deploy, server status, status, and a server stopped on purpose or not ----------------
@pytest.fixture
def tmux_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private tmux server for the local window; box.cli() inherits the variable."""
    name = f"cl-json-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CARLA_LAUNCH_TMUX_SOCKET", name)
    yield name
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, check=False)


def status(box: Box, *args: str) -> subprocess.CompletedProcess[str]:
    return box.cli("status", *args, str(box.profile_path))


@pytest.mark.root
def test_box_outputs_follow_their_schemas(box: Box, tmux_socket: str) -> None:
    from carla_launcher.profile import load_profile
    from carla_launcher.stack.panes import session_panes

    box.preinstall()
    first = box.deploy("--json")
    doc = checked("deploy", first.stdout)
    (host,) = doc["hosts"]
    assert doc["ok"] and host["ok"] and host["address"] == box.address
    assert doc["elapsed_s"] > 0 and doc["timings_s"]["total"] >= 0
    assert host["facts"]["ssh_connection"].split()[2] == box.address
    dry = checked("deploy", box.deploy("--dry-run", "--json").stdout)
    assert dry["dry_run"] and not any(s["changes"] for s in dry["hosts"][0]["steps"])

    r = box.cli("server", "status", "--json", str(box.profile_path))
    assert r.returncode == 0, r.stderr
    doc = checked("server-status", r.stdout)
    (st,) = doc["hosts"]  # one host: still a list
    assert st["host"] == box.alias and st["running"] and st["since"].endswith("+00:00")
    assert st["stopped"] is None

    checked("gpu", box.cli("gpu", str(box.profile_path), "--json").stdout)  # no driver there
    checked("doctor", box.cli("doctor", str(box.profile_path), "--json").stdout)

    # the local window (the server's pane over ssh, the GPU watch): roles, no shell scripts
    prof = load_profile(str(box.profile_path))
    sess.ensure_session(
        sess.tmux_server(),
        sess.session_name(prof.key),
        session_panes(prof, box.alias, None, gpu=True, read_write=False),
    )
    r = status(box, "--json")
    doc = checked("status", r.stdout)
    (h,) = doc["hosts"]
    assert h["host"] == box.alias and h["address"] == box.address
    assert h["server"]["running"] and h["server"]["version"] == "0.9.15"
    panes = {p["role"]: p for p in doc["session"]["panes"]}
    assert set(panes) == {"server", "gpu"}
    assert panes["server"]["description"].startswith("the CARLA server's tmux session")
    assert {p["window"] for p in doc["session"]["panes"]} == {"carla"}  # one server: one window
    (pair,) = doc["pairs"]  # every server beside its agent: none started by `up` here
    assert (pair["host"], pair["slot"], pair["port"], pair["agent"]) == (box.alias, 0, 2000, None)
    assert pair["server"]["running"] and pair["address"] == box.address
    assert pair["tunnel"] is None  # remote.tunnel is off (with one: tests/stack/test_tunnel_up.py)
    assert len(r.stdout) < 8000 and "as_server" not in r.stdout  # no remote script in it
    sess.kill_session(sess.tmux_server(), sess.session_name(prof.key))


@pytest.mark.root
def test_status_knows_a_server_stopped_on_purpose_from_one_that_died(box: Box) -> None:
    box.preinstall()
    box.deploy()
    assert status(box).returncode == 0

    stop = box.cli("server", "stop", str(box.profile_path))
    assert stop.returncode == 0, stop.stderr
    r = status(box)
    assert r.returncode == 0, r.stderr
    assert "stopped on purpose (by carla-launch server stop at " in r.stdout
    doc = checked("status", status(box, "--json").stdout)
    server = doc["hosts"][0]["server"]
    assert server["state"] == "stopped" and server["stopped"]["by"] == "carla-launch server stop"
    assert doc["problems"] == []
    r = box.cli("server", "status", "--json", str(box.profile_path))
    assert checked("server-status", r.stdout)["hosts"][0]["stopped"]["at"]

    # started again, the stop is forgotten; a server killed by hand (restart: no) is a problem
    box.write_profile(server={"restart": "no"})
    box.deploy()
    assert status(box).returncode == 0
    for pid in box.server_processes():  # the loop, CARLA, tmux: as a reboot would
        with contextlib.suppress(ProcessLookupError):  # gone with its parent meanwhile
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not box.server_processes(), 20, "the server's processes to go")
    r = status(box)
    assert r.returncode == 1
    assert "problem: server: " in r.stderr and "on purpose" not in r.stdout + r.stderr
    doc = checked("status", status(box, "--json").stdout)
    assert doc["hosts"][0]["server"]["stopped"] is None and doc["problems"]
