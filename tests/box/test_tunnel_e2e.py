"""SSH tunnels for real: a box whose firewall lets only SSH through, the stand-in CARLA on it,
the keep-alive loop as a plain process here (in `up` it runs in a pane), and an agent
container that reaches the server as host.docker.internal through it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from carla_launcher.box.ports import triple
from carla_launcher.box.tunnel import AGENT_HOST, Forward, keepalive_argv, local_port, route
from carla_launcher.box.tunnel_local import (
    bridge_address,
    forward_for,
    listening_ports,
    reach,
    tunnel_command,
)
from carla_launcher.profile import read_profile
from carla_launcher.records import TunnelRecord
from carla_launcher.server.probe import NotReady, probe_version
from carla_launcher.stack.env import agent_env
from carla_launcher.stack.tunnels import close_leftovers
from tests.harness.agent import VERSION_CALL
from tests.harness.cli import Cli, write_files
from tests.harness.dockerd import DockerDaemon
from tests.harness.netns_box import Box
from tests.harness.polling import wait_for

pytestmark = pytest.mark.root


class Loop:
    """The keep-alive loop as a plain process in its own group, with its output kept."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def ssh(self) -> int | None:
        """The pid of the loop's ssh, while one runs."""
        try:
            kids = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return None
        return next((k.pid for k in kids if k.name() == "ssh"), None)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@contextlib.contextmanager
def running(argv: list[str], log: Path) -> Iterator[Loop]:
    loop = Loop(argv, log)
    try:
        yield loop
    finally:
        loop.close()


def gone(pid: int) -> bool:
    """Ended (a zombie counts: whoever adopted it may not have reaped it yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def version_at(host: str, port: int) -> str | None:
    try:
        return probe_version(host, port, timeout=2)
    except NotReady:
        return None


def serving_behind_a_firewall(box: Box, via: str) -> None:
    """The stand-in deployed and answering, then the firewall on: only ssh gets in."""
    if via == "jump host":  # the box's second sshd, on its loopback: only the jump reaches it
        box.write_profile(remote={"host": box.add_inner_sshd(), "jump": box.alias})
    box.preinstall()
    box.deploy()
    assert reach(box.address, 2000) == "open"
    assert route("auto", reach="open") == "direct"
    box.firewall()
    assert reach(box.address, 2000, timeout=1) == "silent"  # dropped, as the LAN sees it
    assert route("auto", reach="silent") == "tunnel"


@pytest.mark.parametrize("via", ["ssh", "jump host"])
def test_the_tunnel_forwards_past_the_firewall_and_comes_back_when_killed(
    box: Box, tmp_path: Path, via: str
) -> None:
    serving_behind_a_firewall(box, via)
    profile = read_profile(box.profile_path)
    assert profile.remote.host is not None
    fwd = Forward("127.0.0.1", local_port(2000, listening_ports()), 2000)
    argv = keepalive_argv(tunnel_command(profile, profile.remote.host, fwd))
    with running(argv, tmp_path / "tunnel.log") as loop:
        lp = fwd.local_port
        said = wait_for(
            lambda: version_at("127.0.0.1", lp), 30, "CARLA through the tunnel", loop.output
        )
        assert said == "0.9.15"
        assert triple(lp) <= listening_ports()  # N+1 and N+2 are forwarded too
        first = loop.ssh()
        assert first is not None
        os.kill(first, signal.SIGKILL)  # as a dropped connection ends it
        wait_for(lambda: loop.ssh() not in (None, first), 30, "a new ssh", loop.output)
        wait_for(lambda: version_at("127.0.0.1", lp), 30, "CARLA through the new ssh", loop.output)
        assert "ssh ended (exit" in loop.output()
        second = loop.ssh()
        loop.proc.terminate()  # as `down` (or a closed pane) ends it
        loop.proc.wait(10)
        wait_for(lambda: not triple(lp) & listening_ports(), 10, f"nothing on {lp}..{lp + 2}")
        assert second is not None and gone(second)  # the loop ended its ssh on the way out


@pytest.mark.docker
def test_an_agent_container_reaches_the_server_as_host_docker_internal(
    box: Box,
    tmp_path: Path,
    run: Cli,
    dockerd_env: DockerDaemon,
    busybox_image: str,
    compose_loader: str,
) -> None:
    """An env-mode variant, the tunnel on the docker bridge's gateway (asked of this dockerd,
    whose bridge is not docker0), the agent's env pointing at host.docker.internal."""
    serving_behind_a_firewall(box, "ssh")
    compose = f"""\
name: tunnel
services:
  carla-simulator:
    image: carlasim/carla:0.9.15
  agent:
    image: {busybox_image}
    environment:
      - CARLA_SIM_HOST=carla-simulator
      - CARLA_SIM_PORT=2000
    command:
      - sh
      - -c
      - printf '{VERSION_CALL}' | nc -w 3 $$CARLA_SIM_HOST $$CARLA_SIM_PORT | grep -o '0\\.9\\.15'
"""
    write_files(tmp_path, {"docker-compose.yaml": compose})
    synced = run("sync", "--dir", ".", "--address-env")
    assert synced.exit_code == 0, synced.output
    variant = tmp_path / "docker-compose.distributed.yaml"
    assert '"host.docker.internal:host-gateway"' in variant.read_text()

    bind = bridge_address()
    assert bind == dockerd_env.gateway  # this dockerd's own bridge, found by asking it
    fwd = forward_for(2000)
    assert fwd.bind == bind
    profile = read_profile(box.profile_path)
    assert profile.remote.host is not None
    argv = keepalive_argv(tunnel_command(profile, profile.remote.host, fwd))
    with running(argv, tmp_path / "tunnel.log") as loop:
        wait_for(lambda: version_at(bind, fwd.local_port), 30, "the tunnel", loop.output)
        env = {**dockerd_env.environ(), **agent_env(AGENT_HOST, fwd.local_port)}
        up = ["docker", "compose", "-p", "h25-tunnel", "-f", str(variant)]
        try:
            agent = subprocess.run(
                [*up, "run", "--rm", "agent"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            subprocess.run([*up, "down"], env=env, capture_output=True, timeout=120, check=False)
        assert agent.returncode == 0, agent.stderr + loop.output()
        assert agent.stdout.strip() == "0.9.15"


def test_a_tunnel_whose_loop_was_killed_outright_is_ended_by_down(box: Box, tmp_path: Path) -> None:
    """A loop killed with SIGKILL cannot end its ssh, which goes on forwarding: what `down`
    does after the session closed (`stack/tunnels.py` close_leftovers) ends it, and only it."""
    serving_behind_a_firewall(box, "ssh")
    profile = read_profile(box.profile_path)
    assert profile.remote.host is not None
    fwd = Forward("127.0.0.1", local_port(2000, listening_ports()), 2000)
    argv = keepalive_argv(tunnel_command(profile, profile.remote.host, fwd))
    with running(argv, tmp_path / "tunnel.log") as loop:
        lp = fwd.local_port
        wait_for(lambda: version_at("127.0.0.1", lp), 30, "the tunnel", loop.output)
        orphan = loop.ssh()
        assert orphan is not None
        os.kill(loop.proc.pid, signal.SIGKILL)  # the loop only: its ssh runs on
        loop.proc.wait(10)
        assert not gone(orphan) and version_at("127.0.0.1", lp) == "0.9.15"
        record = TunnelRecord(fwd.bind, lp, 2000)
        assert close_leftovers([record]) == []
        assert gone(orphan)
        assert not triple(lp) & listening_ports()
