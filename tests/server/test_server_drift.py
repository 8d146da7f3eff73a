"""A profile changed since the deploy is noticed: `server status` says what changed and what to
run, `server restart` (and `start`, `up`) redeploys the launch script, and a launch script older
than the config line is "unknown", not drift. The port the deploy chose because the asked one
was taken is not drift either."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from typing import Any

import pytest

from carla_launcher.server.drift import changed_since_deploy, drift
from carla_launcher.server.launch import (
    ORIGIN_PREFIX,
    LaunchConfig,
    LaunchOrigin,
    parse_origin,
    render_launch_script,
)
from tests.harness.netns_box import Box
from tests.harness.polling import wait_for
from tests.harness.standin_carla import standin_python

NO_CONFIG_LINE = "no config line in launch.sh: deploy/plan.py must pass LaunchConfig(origin=...)"
BASE = LaunchOrigin(("-RenderOffScreen", "-nosound"), None, 2000, "on-failure", None)


def origin(**changes: Any) -> LaunchOrigin:
    return dataclasses.replace(BASE, **changes)


# -- pure ----------------------------------------------------------------------------------------
def test_what_changed_is_said_in_words() -> None:
    assert drift(BASE, BASE) == []
    assert drift(origin(args=("-RenderOffScreen",)), BASE) == ["server.args: -nosound removed"]
    low = origin(args=(*BASE.args, "-quality-level=Low"))
    epic = origin(args=(*BASE.args, "-quality-level=Epic"))
    assert drift(low, epic) == ["server.args: -quality-level: Epic -> Low"]
    assert drift(origin(args=tuple(reversed(BASE.args))), BASE) == [
        "server.args: their order changed"
    ]
    assert drift(origin(gpu=1, port=2003), BASE) == [
        "server.gpu: none -> 1",
        "server.port: 2000 -> 2003",
    ]
    assert drift(origin(restart="always"), BASE) == ["server.restart: on-failure -> always"]
    assert drift(origin(settings_sha256="a" * 64), BASE) == [
        "server.settings: the settings file added"
    ]
    assert drift(origin(settings_sha256="b" * 64), origin(settings_sha256="a" * 64)) == [
        "server.settings: the settings file its text changed"
    ]
    assert changed_since_deploy(drift(low, BASE)) == (
        "server.args changed since the last deploy (-quality-level=Low added)"
    )


def test_a_launch_script_without_the_config_line_is_unknown_not_drift() -> None:
    assert drift(origin(gpu=3), None) == []
    cfg = LaunchConfig("/r", "/s", ("-carla-rpc-port=2000",), 2000, "no", "pkg")
    assert ORIGIN_PREFIX not in render_launch_script(cfg)
    with_origin = render_launch_script(dataclasses.replace(cfg, origin=BASE))
    line = next(ln for ln in with_origin.splitlines() if ln.startswith(ORIGIN_PREFIX))
    assert parse_origin(line) == BASE


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '{"args": "-nosound", "gpu": null, "port": 2000, "restart": "no"}',
        '{"args": [1], "gpu": null, "port": 2000, "restart": "no"}',
        '{"args": [], "gpu": true, "port": 2000, "restart": "no"}',
        '{"args": [], "gpu": null, "port": "2000", "restart": "no"}',
        '{"args": [], "gpu": null, "port": 2000, "restart": "no", "settings_sha256": 5}',
    ],
)
def test_a_config_line_that_is_not_ours_is_unknown(text: str) -> None:
    assert parse_origin(text) is None


def test_args_with_newlines_and_quotes_stay_on_one_comment_line() -> None:
    odd = origin(args=("-a=1\n; rm -rf /", "it's"))
    script = render_launch_script(LaunchConfig("/r", "/s", ("-x",), 2000, "no", "pkg", origin=odd))
    lines = [ln for ln in script.splitlines() if ln.startswith(ORIGIN_PREFIX)]
    assert len(lines) == 1 and parse_origin(lines[0]) == odd
    assert "rm -rf" not in script.replace(lines[0], "")


# -- on a box ------------------------------------------------------------------------------------
def status(b: Box) -> dict:
    done = b.cli("server", "status", "--json", str(b.profile_path))
    assert done.returncode in (0, 1), done.stderr
    (only,) = json.loads(done.stdout)["hosts"]  # one host: a list all the same
    return only


def server_argv(b: Box) -> list[str]:
    """The args the (stand-in) CARLA got last, from its `argv=` log line."""
    lines = [ln for ln in (b.session_dir / "server.log").read_text().splitlines() if "argv=" in ln]
    return json.loads(lines[-1].split("argv=", 1)[1])


@pytest.mark.root
def test_an_edited_profile_is_noticed_and_applied_by_restart(box: Box) -> None:
    box.preinstall()
    box.deploy()
    assert status(box)["drift"] == [], NO_CONFIG_LINE
    name = box.profile_path.stem
    args = ["-RenderOffScreen", "-nosound", "-quality-level=Low"]
    box.write_profile(server={"args": args})

    st = status(box)
    assert st["running"] and st["drift"] == ["server.args: -quality-level=Low added"]
    done = box.cli("server", "status", str(box.profile_path))
    assert done.returncode == 0
    assert (
        "server.args changed since the last deploy (-quality-level=Low added): "
        f"run `carla-launch server restart {name}`"
    ) in done.stderr
    overview = box.cli("status", str(box.profile_path))
    assert "problem: server: server.args changed since the last deploy" in overview.stderr

    restart = box.cli("server", "restart", str(box.profile_path))
    assert restart.returncode == 0, restart.stderr
    assert (
        f"{box.alias}: server.args changed since the last deploy (-quality-level=Low added): "
        "redeploying the launch script"
    ) in restart.stderr
    assert "ready at" in restart.stdout
    assert "-quality-level=Low" in server_argv(box)
    st = status(box)
    assert st["running"] and st["drift"] == []

    # start applies it too, on a stopped server
    box.write_profile(server={"gpu": 0})
    assert box.cli("server", "stop", str(box.profile_path)).returncode == 0
    start = box.cli("server", "start", str(box.profile_path))
    assert start.returncode == 0, start.stderr
    assert "server.gpu changed since the last deploy (none -> 0)" in start.stderr
    assert "-graphicsadapter=0" in server_argv(box)
    assert status(box)["drift"] == []


@pytest.mark.root
def test_a_launch_script_from_before_the_config_line_is_unknown(box: Box) -> None:
    box.preinstall()
    box.deploy()
    launch = box.session_dir / "launch.sh"
    text = launch.read_text()
    launch.write_text("".join(ln for ln in text.splitlines(True) if ORIGIN_PREFIX not in ln))
    box.write_profile(server={"args": ["-quality-level=Low"]})
    st = status(box)
    assert st["running"] and st["drift"] is None and st["origin"] is None
    done = box.cli("server", "status", str(box.profile_path))
    assert "changed since the last deploy" not in done.stderr


@pytest.mark.root
def test_a_port_chosen_because_the_asked_one_was_taken_is_not_drift(box: Box) -> None:
    python = standin_python()
    assert python is not None
    listen = (
        "import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 2001)); s.listen(); "
        "time.sleep(600)"
    )
    other = subprocess.Popen(["ip", "netns", "exec", box.netns, python, "-c", listen])
    try:
        wait_for(lambda: 2001 in box.listening(), 10, "a listener on 2001")
        box.preinstall()
        box.deploy()
        st = status(box)
        assert st["running"] and st["port"] == 2003
        assert st["drift"] == [], NO_CONFIG_LINE
    finally:
        other.kill()
        other.wait()


@pytest.mark.root
def test_up_applies_an_edited_profile(box: Box) -> None:
    from carla_launcher.profile import read_profile
    from carla_launcher.stack.up import ensure_server

    box.preinstall()
    box.deploy()
    box.write_profile(server={"args": ["-RenderOffScreen", "-quality-level=Low"]})
    said: list[str] = []
    done: list[str] = []
    st = ensure_server(read_profile(box.profile_path), box.alias, said.append, done)
    assert done == ["redeployed the launch script (the profile changed)"]
    assert said[0] == (
        f"{box.alias}: server.args changed since the last deploy (-quality-level=Low added, "
        "-nosound removed): redeploying the launch script"
    )
    assert st["drift"] == [] and st["deployed"]
    wait_for(lambda: "-quality-level=Low" in server_argv(box), 30, "the new command line")
    assert "-nosound" not in server_argv(box)
