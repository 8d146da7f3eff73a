"""`--host H` on a pool touches H only: a server the user stopped on purpose on another host of
the pool stays stopped through `deploy --host` and through `server start --host` after a
profile edit (which redeploys the launch script). Two network-namespace boxes, real sshd."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.netns_box import Box, pool_profile

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _cli(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carla_launcher", *args, str(profile)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _running(profile: Path) -> dict[str, bool]:
    done = _cli(profile, "server", "status", "--json")
    return {h["host"]: h["running"] for h in json.loads(done.stdout)["hosts"]}


def test_host_option_leaves_the_other_hosts_of_a_pool_alone(box_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a: Box = box_factory(login="user")  # own users: boxes share this machine's /home
    b: Box = box_factory(login="user")
    profile = pool_profile([a, b], tmp_path)
    first = _cli(profile, "deploy")
    assert first.returncode == 0, first.stderr
    stopped = _cli(profile, "server", "stop", "--host", b.alias)
    assert stopped.returncode == 0, stopped.stderr
    assert _running(profile) == {a.alias: True, b.alias: False}

    again = _cli(profile, "deploy", "--host", a.alias)
    assert again.returncode == 0, again.stderr
    assert b.alias not in again.stdout + again.stderr  # not even connected to
    assert _running(profile) == {a.alias: True, b.alias: False}

    doc = json.loads(profile.read_text())
    doc["server"]["args"] = ["-RenderOffScreen", "-nosound", "-quality-level=Low"]
    profile.write_text(json.dumps(doc))  # JSON is YAML
    started = _cli(profile, "server", "start", "--host", a.alias)
    assert started.returncode == 0, started.stderr
    assert "redeploying" in started.stderr and b.alias not in started.stderr
    assert _running(profile) == {a.alias: True, b.alias: False}
    launch = a.server_home / ".carla-launch" / "carla" / "launch.sh"
    assert "-quality-level=Low" in launch.read_text()  # the edit reached a


def test_a_host_the_profile_does_not_name_is_refused(tmp_path: Path) -> None:
    profile = tmp_path / "profiles" / "pool.yaml"
    profile.parent.mkdir()
    profile.write_text("remote:\n  host: [a.invalid, b.invalid]\n")
    for args in (("deploy", "--host", "c"), ("server", "stop", "--host", "c")):
        done = _cli(profile, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "error: Invalid value for --host: 'c' is not a host of pool" in done.stderr
