"""`up`, `status`, `attach` and `down` with SSH tunnels, for real (issue 14, tunnels).

A box whose firewall drops everything but ssh (a network namespace with a real sshd and
iptables), the stand-in CARLA on it, a real dockerd for the agent (an env-mode agent that asks
its server for its version every two seconds and prints where it connected,
tests/harness/parallel.py), a real tmux for the panes. `up` with `remote.tunnel: auto` finds
that the address does not answer, opens a tunnel in a pane beside the server's, waits for CARLA
through it and starts the agent against host.docker.internal and the tunnel's local port.
Killing the tunnel's ssh brings it back; `status --json` shows it; a dead tunnel pane is a
problem that `attach` fixes; `down` leaves nothing listening.

The decisions behind it (route, ports kept, panes, records, the report) are tested pure below.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest

from carla_launcher import records
from carla_launcher.box.ports import triple
from carla_launcher.box.tunnel import AGENT_HOST, Forward, reuse_port, why_tunnel
from carla_launcher.box.tunnel_local import listening_ports
from carla_launcher.commands.up import pair_lines
from carla_launcher.compose.hosts import ENV_HOST, ENV_PORT
from carla_launcher.errors import InputError
from carla_launcher.profile import Profile, read_profile
from carla_launcher.records import SessionRecord, TunnelRecord
from carla_launcher.stack import tunnels
from carla_launcher.stack.pairs import Reached, agent_record, pairs_of
from carla_launcher.stack.panes import pair_panes
from carla_launcher.stack.report import pairs, problems, render
from carla_launcher.stack.up import UpReport, refuse_early
from tests.harness.agent import cli, pane_id, pane_text
from tests.harness.dockerd import DockerDaemon
from tests.harness.netns_box import Box
from tests.harness.parallel import (
    Report,
    agent_reports,
    answered_since,
    status_json,
    version_at,
    write_env_agent,
)
from tests.harness.polling import wait_for

VERSION = "0.9.15"


# -- pure: the route, the ports kept, the panes, the records, the report --------------------------
def _profile(tmp_path: Path, remote: str = "", compose: str = "address: env") -> Profile:
    path = tmp_path / "profiles" / "gpu.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"remote:\n  host: gpu-box\n{remote}compose:\n  {compose}\n")
    return read_profile(path)


def _never(address: str, port: int) -> Any:
    raise AssertionError(f"no TCP check was needed, but {address}:{port} was tried")


RUNNING = {"slot": 0, "port": 2000, "running": True, "ports_busy": [2000, 2001, 2002]}


def test_which_servers_go_through_a_tunnel(tmp_path: Path) -> None:
    off = _profile(tmp_path)
    assert tunnels.decide(off, "gpu-box", RUNNING, "10.0.0.5", None, reach=_never) == (
        tunnels.Routed()
    )
    on = _profile(tmp_path, "  tunnel: true\n")
    assert tunnels.decide(on, "gpu-box", RUNNING, "10.0.0.5", None, reach=_never) == (
        tunnels.Routed(True, "remote.tunnel: true")
    )
    auto = _profile(tmp_path, "  tunnel: auto\n")
    answers = {"open": tunnels.Routed()}
    answers["silent"] = tunnels.Routed(True, "the address does not answer from here")
    # refused while the box says the server listens: something on the way rejects the port
    answers["refused"] = tunnels.Routed(
        True, "the address refuses the port while the server listens"
    )
    for got, routed in answers.items():
        decided = tunnels.decide(
            auto, "gpu-box", RUNNING, "10.0.0.5", None, reach=lambda a, p, got=got: got
        )
        assert decided == routed, got
    # no address known from here: only a tunnel reaches it
    assert tunnels.decide(auto, "gpu-box", RUNNING, None, None, reach=_never) == tunnels.Routed(
        True, "no address of the box is known that answers from here"
    )
    # an earlier `up`'s tunnel for the same server port is kept, with its reason
    kept = TunnelRecord("172.17.0.1", 2000, 2000, "the address does not answer from here")
    assert tunnels.decide(auto, "gpu-box", RUNNING, "10.0.0.5", kept, reach=_never) == (
        tunnels.Routed(True, kept.why)
    )
    moved = {**RUNNING, "port": 2003}  # the server moved: decided again
    opened = tunnels.decide(auto, "gpu-box", moved, "10.0.0.5", kept, reach=lambda a, p: "open")
    assert opened == tunnels.Routed()


def test_a_second_up_keeps_the_local_ports_while_they_are_its_own_or_free() -> None:
    before = Forward("172.17.0.1", 2003, 2000)
    wanted = Forward("172.17.0.1", 0, 2000)
    theirs = {2003, 2004, 2005}  # the old tunnel's ports listen: its own while its pane runs
    assert reuse_port(before, wanted, ours_alive=True, listening=theirs)
    assert not reuse_port(before, wanted, ours_alive=False, listening=theirs)  # taken by another
    assert reuse_port(before, wanted, ours_alive=False, listening={22})
    assert not reuse_port(before, Forward("172.17.0.1", 0, 2003), ours_alive=True, listening=())
    assert not reuse_port(before, Forward("172.30.0.1", 0, 2000), ours_alive=True, listening=())
    assert not reuse_port(None, wanted, ours_alive=True, listening=())


def test_literal_variants_with_a_tunnel_are_refused_before_the_box_is_asked(
    tmp_path: Path,
) -> None:
    literal = _profile(tmp_path, "  tunnel: true\n", "address: literal")
    with pytest.raises(InputError) as e:
        refuse_early(literal)
    assert "compose.address: env" in str(e.value) and "SSH tunnel" in str(e.value)
    refuse_early(_profile(tmp_path, "  tunnel: true\n"))  # env mode: fine
    refuse_early(_profile(tmp_path, "  tunnel: auto\n", "address: literal"))  # decided later


def test_a_tunnelled_pair_gets_the_tunnels_end_its_pane_and_its_record(tmp_path: Path) -> None:
    profile = _profile(tmp_path, "  tunnel: auto\n")
    fwd = Forward("172.17.0.1", 2003, 2000)
    why = why_tunnel("auto", reach="silent")
    reached = Reached("gpu-box", 0, None, "10.0.0.5", 2000, VERSION, fwd, why)
    (pair,) = pairs_of(profile, [reached])
    assert (pair.env[ENV_HOST], pair.env[ENV_PORT]) == (AGENT_HOST, "2003")
    agent = agent_record(pair, tmp_path / "v.yaml")
    assert agent.tunnel == TunnelRecord("172.17.0.1", 2003, 2000, why)
    panes = pair_panes(profile, agent, gpu=False, read_write=False)
    assert [p.role for p in panes] == ["server", "agent", "tunnel"]
    loop = list(panes[2].argv)
    assert loop[:2] == ["sh", "-c"] and "ssh" in loop and loop[-2:] == ["--", "gpu-box"]
    assert "172.17.0.1:2003:127.0.0.1:2000" in loop and "ControlPath=none" in loop
    assert panes[2].title == "tunnel: 172.17.0.1:2003 -> gpu-box:2000"
    (plain,) = pairs_of(profile, [Reached("gpu-box", 0, None, "10.0.0.5", 2000)])
    direct = agent_record(plain, tmp_path / "v.yaml")
    assert [p.role for p in pair_panes(profile, direct, gpu=False, read_write=False)] == [
        "server",
        "agent",
    ]
    report = UpReport([pair], "carla-gpu", tmp_path / "v.yaml")
    lines = pair_lines(report, ())
    assert lines[0] == (
        "gpu-box server 0: through an SSH tunnel, 172.17.0.1:2003 -> gpu-box:2000 "
        "(the address does not answer from here)"
    )
    assert lines[1].startswith(f"server gpu-box at {AGENT_HOST}:2003 (CARLA {VERSION})")

    # recorded, read back; a tampered bind address (it lands in ssh's argv) is not a tunnel
    records.remember_session(profile, SessionRecord.of("carla-gpu", [agent]))
    found = records.session(profile)
    assert found is not None and found.pairs[0].tunnel == agent.tunnel
    bad = replace(agent, tunnel=TunnelRecord("-oProxy=x", 1, 2))
    records.remember_session(profile, SessionRecord.of("carla-gpu", [bad]))
    found = records.session(profile)
    assert found is not None and found.pairs[0].tunnel is None


def _facts(tunnel: dict[str, Any] | None, panes: dict[str, Any], **server: Any) -> dict[str, Any]:
    server = {"slot": 0, "running": True, "port": 2000, "state": "running", "gpu": None, **server}
    agent = {
        "host": "gpu-box",
        "slot": 0,
        "window": "carla",
        "project": "gpu-1a2b3c",
        "variant": "/p/docker-compose.distributed.yaml",
        "containers": [{"service": "agent", "name": "a", "state": "running", "status": "Up"}],
        "running": True,
        "tunnel": tunnel,
    }
    return {
        "profile": "gpu",
        "hosts": [
            {
                "host": "gpu-box",
                "address": "10.0.0.5",
                "server": server,
                "servers": [server],
                "gpu": {"message": "no GPU"},
            }
        ],
        "daemon": {"running": False, "current": None},
        "agent": {},
        "session": {"name": "carla-gpu", "exists": True, "windows": {"carla": panes}},
        "agents": [agent],
    }


def test_status_says_whether_each_tunnel_is_up() -> None:
    tunnel = {
        "bind": "172.17.0.1",
        "local_port": 2000,
        "remote_port": 2000,
        "ports": [2000, 2001, 2002],
        "listening": [2000, 2001, 2002],
        "why": "the address does not answer from here",
    }
    alive = {"server": {"alive": True}, "agent": {"alive": True}, "tunnel": {"alive": True}}
    facts = _facts(tunnel, alive)
    (pair,) = pairs(facts)
    assert pair["tunnel"]["up"] and pair["tunnel"]["pane_alive"] is True
    assert "tunnel" not in pair["agent"]
    assert problems(facts) == []
    rows = dict(line.split(None, 1) for line in render(facts))
    assert rows["tunnel"].startswith("172.17.0.1:2000 -> gpu-box:2000, up (3 of 3 ports listen")

    reconnecting = _facts({**tunnel, "listening": []}, alive)
    (line,) = problems(reconnecting)
    assert line.startswith("tunnel: down: nothing listens on 172.17.0.1:2000-2002")
    # asked through it, the server did not answer: the tunnel says why, once (not as a pane)
    probed = "172.17.0.1:2000: connection refused"
    dead = {**alive, "tunnel": {"alive": False, "exit_status": 0}}
    ended = _facts(tunnel, dead, probe_error=probed)
    (line,) = problems(ended)
    assert line == "tunnel: down: its pane ended; `carla-launch attach gpu` starts it again"
    assert problems(_facts(None, alive)) == [] and pairs(_facts(None, alive))[0]["tunnel"] is None
    assert problems(_facts(tunnel, alive, probe_error=probed)) == [
        f"server: running but not answering ({probed})"  # through a tunnel that is up
    ]


# -- for real ------------------------------------------------------------------------------------
def _ssh_of(forward: Forward) -> list[int]:
    """The ssh processes here that hold this forward."""
    spec = forward.specs()[0]
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        argv = p.info.get("cmdline") or []
        if p.info.get("name") == "ssh" and spec in argv:
            found.append(p.pid)
    return found


@pytest.mark.root
@pytest.mark.docker
@pytest.mark.slow
def test_up_reaches_a_firewalled_box_through_a_tunnel_and_down_closes_it(
    box: Box, dockerd: DockerDaemon, tmux_socket: str, tmp_path: Path, own_projects: None
) -> None:
    build = tmp_path / "proj" / "build"
    write_env_agent(build, dockerd.image())
    box.preinstall()
    box.write_profile(
        remote={"tunnel": "auto"},
        compose={"dir": str(build), "simulator": "carla-simulator", "address": "env"},
    )
    box.deploy()
    box.firewall()  # only ssh gets in: the world port does not answer from here
    env = {**dockerd.environ(), "CARLA_LAUNCH_TMUX_SOCKET": tmux_socket}
    profile = read_profile(box.profile_path)
    session = f"carla-{profile.key}"

    up = cli(box, env, "up", str(box.profile_path), "--no-attach")
    assert up.returncode == 0, up.stderr + up.stdout
    said = re.search(
        rf"^{re.escape(box.alias)} server 0: through an SSH tunnel, "
        rf"{re.escape(dockerd.gateway)}:(\d+) -> {re.escape(box.alias)}:2000 "
        r"\(the address does not answer from here\)$",
        up.stdout,
        re.M,
    )
    assert said, up.stdout
    lp = int(said.group(1))
    fwd = Forward(dockerd.gateway, lp, 2000)
    assert f"server {box.alias} at {AGENT_HOST}:{lp} (CARLA {VERSION})" in up.stdout

    # the agent container reached the server through the tunnel, as host.docker.internal
    _, status = status_json(box, env)
    project = status["pairs"][0]["agent"]["project"]
    got = wait_for(partial(answered_since, dockerd, project, 0), 60, "the agent's answer")
    assert set(got) == {Report(AGENT_HOST, lp, VERSION)}, got
    code, status = status_json(box, env)
    assert code == 0, status["problems"]
    (pair,) = status["pairs"]
    tunnel = pair["tunnel"]
    assert (tunnel["bind"], tunnel["local_port"], tunnel["remote_port"]) == (
        dockerd.gateway,
        lp,
        2000,
    )
    assert tunnel["listening"] == tunnel["ports"] == [lp, lp + 1, lp + 2]
    assert tunnel["up"] and tunnel["pane_alive"]
    assert pair["server"]["version"] == VERSION  # asked through the tunnel
    roles = {p["role"] for p in status["session"]["panes"]}
    assert roles == {"server", "agent", "tunnel"}

    # its ssh killed (a dropped connection): the loop brings the forward back
    (first,) = _ssh_of(fwd)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: _ssh_of(fwd) not in ([], [first]), 30, "a new ssh")
    wait_for(lambda: version_at(dockerd.gateway, lp), 30, "CARLA through the new ssh")
    seen = len(agent_reports(dockerd, project))
    got = wait_for(partial(answered_since, dockerd, project, seen), 60, "the agent's next answer")
    assert got[-1] == Report(AGENT_HOST, lp, VERSION)
    assert "ssh ended (exit" in pane_text(tmux_socket, session, "tunnel")

    # a second `up`: same tunnel, same ports, nothing restarted
    again = cli(box, env, "up", str(box.profile_path), "--no-attach")
    assert again.returncode == 0, again.stderr + again.stdout
    assert "nothing changed" in again.stdout, again.stdout
    assert f"{dockerd.gateway}:{lp} -> {box.alias}:2000" in again.stdout

    # its pane ended (Ctrl-C ends the loop): a problem, until `attach` starts it again
    pane = pane_id(tmux_socket, session, "tunnel")
    assert pane is not None
    subprocess.run(["tmux", "-L", tmux_socket, "send-keys", "-t", pane, "C-c"], check=True)
    wait_for(lambda: not triple(lp) & listening_ports(), 15, "the tunnel's ports to close")
    code, status = status_json(box, env)
    assert code == 1 and status["pairs"][0]["tunnel"]["up"] is False
    assert any(p.startswith("tunnel: down: ") for p in status["problems"]), status["problems"]
    attach = cli(box, env, "attach", str(box.profile_path), "--no-attach")
    assert attach.returncode == 0, attach.stderr
    assert "restarted tunnel" in attach.stderr, attach.stderr
    wait_for(lambda: version_at(dockerd.gateway, lp), 30, "CARLA through the restarted tunnel")
    code, status = status_json(box, env)
    assert code == 0 and status["pairs"][0]["tunnel"]["up"], status["problems"]

    # down: the tunnel goes with the session; nothing listens on its ports, no ssh holds them
    down = cli(box, env, "down", str(box.profile_path))
    assert down.returncode == 0, down.stderr + down.stdout
    assert f"down: SSH tunnel closed: nothing listens on {dockerd.gateway}:{lp}-{lp + 2}" in (
        down.stdout
    )
    assert not triple(lp) & listening_ports()
    assert _ssh_of(fwd) == []
