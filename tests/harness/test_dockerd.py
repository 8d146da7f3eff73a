"""The real-dockerd harness (tests/harness/dockerd.py): what the end-to-end tests rely on.

Everything talks only to addresses of this machine: the daemon's bridge gateway and a network
namespace the test makes itself.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from tests.harness.dockerd import NEEDED_APPLETS, DockerDaemon, host_snapshot
from tests.harness.polling import wait_for

pytestmark = pytest.mark.docker


class OneShotServer:
    """A TCP server on `host` that answers one connection: reads a line, replies, closes."""

    def __init__(self, host: str, reply: bytes) -> None:
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(60)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.received = b""
        self.peer: tuple[str, int] | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, self.peer = self.sock.accept()
            with conn:
                conn.settimeout(10)
                while not self.received.endswith(b"\n"):
                    chunk = conn.recv(1024)
                    if not chunk:
                        break
                    self.received += chunk
                conn.sendall(self.reply)
        except OSError:
            pass
        finally:
            self.done.set()

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def compose_ps(out: str) -> list[dict]:
    """`compose ps --format json`: one object per line (v2.21+) or one array (older)."""
    out = out.strip()
    if not out:
        return []
    if out.startswith("["):
        return json.loads(out)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_compose_up_agent_reaches_a_server_on_the_host_then_down_leaves_nothing(
    dockerd_env: DockerDaemon, busybox_image: str, tmp_path: Path
) -> None:
    d = dockerd_env
    server = OneShotServer(d.gateway, b"hello agent, this is the host\n")
    project = f"harness-{uuid.uuid4().hex[:8]}"
    (tmp_path / "compose.yaml").write_text(
        f"""\
services:
  agent:
    image: {busybox_image}
    init: true
    environment:
      SERVER_HOST: "{d.gateway}"
      SERVER_PORT: "{server.port}"
    command:
      - sh
      - -c
      - |
        reply=$$(echo "hello from $$(hostname)" | nc -w 5 "$$SERVER_HOST" "$$SERVER_PORT")
        echo "agent got: $$reply"
        exec sleep 300
"""
    )

    def compose(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        # a plain child with os.environ: dockerd_env put DOCKER_HOST/DOCKER_CONFIG there
        proc = subprocess.run(
            ["docker", "compose", "-p", project, "-f", "compose.yaml", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        assert proc.returncode == 0, (
            f"compose {args} failed:\n{proc.stdout}\n{proc.stderr}\n{d.log_tail(15)}"
        )
        return proc

    try:
        compose("up", "-d")

        def agent_logs() -> str:
            out = compose("logs", "--no-color", "agent").stdout
            return out if "agent got:" in out else ""

        logs = wait_for(agent_logs, 30, "the agent to print the server's reply")
        assert "agent got: hello agent, this is the host" in logs
        assert server.done.wait(10)
        assert server.received.startswith(b"hello from "), server.received
        assert server.peer and ipaddress.ip_address(server.peer[0]) in ipaddress.ip_network(
            d.subnet
        )

        rows = compose_ps(compose("ps", "--format", "json").stdout)
        assert [(r["Service"], r["State"]) for r in rows] == [("agent", "running")], rows
        assert rows[0]["Project"] == project
    finally:
        compose("down", "--timeout", "5")
        server.close()

    label = f"label=com.docker.compose.project={project}"
    assert d.docker("ps", "-aq", "--filter", label).stdout.strip() == ""
    assert d.docker("network", "ls", "-q", "--filter", label).stdout.strip() == ""
    assert compose_ps(compose("ps", "-a", "--format", "json").stdout) == []


def sh_in(dockerd: DockerDaemon, image: str, script: str, timeout: float = 120) -> str:
    """What `sh -c script` prints in a throw-away container of image."""
    return dockerd.docker("run", "--rm", image, "sh", "-c", script, timeout=timeout).stdout


def test_image_has_the_tools_an_agent_script_uses(
    dockerd: DockerDaemon, busybox_image: str
) -> None:
    check = " && ".join(f"command -v {a} >/dev/null" for a in NEEDED_APPLETS)
    out = sh_in(dockerd, busybox_image, f"{check} && echo $PATH && touch /tmp/x && echo ok").split()
    assert out == ["/bin", "ok"]
    assert dockerd.image() == busybox_image  # cached: same name, no second import
    assert dockerd.image("carla-agent:test") == "carla-agent:test"
    ids = {
        dockerd.docker("image", "inspect", "-f", "{{.Id}}", n).stdout
        for n in (busybox_image, "carla-agent:test")
    }
    assert len(ids) == 1


@pytest.fixture
def netns_box(tmp_path: Path):
    """A 'remote box' at 10.77.X.2 in a network namespace, serving one TCP connection on :2000."""
    taken = subprocess.run(
        ["ip", "-4", "route"], capture_output=True, text=True, check=False
    ).stdout
    start = os.getpid() % 50  # parallel runs start at different places
    x = next(
        (
            200 + (start + i) % 50
            for i in range(50)
            if f"10.77.{200 + (start + i) % 50}." not in taken
        ),
        None,
    )
    if x is None:
        pytest.skip("no free 10.77.X.0/24 for a namespace")
    tag = f"{os.getpid() % 100000}"
    ns, host_if, box_if = f"cl-dkbox-{tag}", f"cldkh{tag}", f"cldkb{tag}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    server = None
    try:
        for cmd in (
            ["ip", "link", "add", host_if, "type", "veth", "peer", "name", box_if],
            ["ip", "link", "set", box_if, "netns", ns],
            ["ip", "addr", "add", f"10.77.{x}.1/24", "dev", host_if],
            ["ip", "link", "set", host_if, "up"],
            ["ip", "-n", ns, "addr", "add", f"10.77.{x}.2/24", "dev", box_if],
            ["ip", "-n", ns, "link", "set", box_if, "up"],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "-n", ns, "route", "add", "default", "via", f"10.77.{x}.1"],
        ):
            subprocess.run(cmd, check=True, capture_output=True)
        script = (
            "import json, socket\n"
            f"s = socket.create_server(('10.77.{x}.2', 2000))\n"
            "print('ready', flush=True)\n"
            "s.settimeout(60)\n"
            "c, peer = s.accept()\n"
            "data = c.recv(1024)\n"
            "c.sendall(b'box says hi\\n')\n"
            "c.close()\n"
            "print(json.dumps({'peer': peer[0], 'data': data.decode()}), flush=True)\n"
        )
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert server.stdout.readline().strip() == "ready", server.stderr.read()
        yield f"10.77.{x}.2", f"10.77.{x}.1", server
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait(5)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.mark.root
def test_container_reaches_a_box_in_a_network_namespace_through_the_host(
    dockerd: DockerDaemon, busybox_image: str, netns_box
) -> None:
    box, host_side, server = netns_box
    out = sh_in(dockerd, busybox_image, f"echo agent-hello | nc -w 5 {box} 2000", timeout=60)
    assert out.strip() == "box says hi"
    seen = json.loads(server.communicate(timeout=10)[0].strip())
    assert seen["data"] == "agent-hello\n"
    if dockerd.nat:  # masqueraded: the box sees the host's side of its link, as with a real docker
        assert seen["peer"] == host_side
    else:
        assert ipaddress.ip_address(seen["peer"]) in ipaddress.ip_network(dockerd.subnet)


def test_a_second_daemon_runs_alongside_and_its_teardown_leaves_no_trace(
    dockerd: DockerDaemon, busybox_image: str, tmp_path: Path
) -> None:
    before = host_snapshot()
    with DockerDaemon(tmp_path / "second") as second:
        assert second.bridge != dockerd.bridge and second.subnet != dockerd.subnet
        assert second.host != dockerd.host
        image = second.image()
        assert (
            second.docker("run", "--rm", image, "echo", "second ok").stdout.strip() == "second ok"
        )
        assert second.docker("ps", "-aq").stdout.strip() == ""
        second.docker(
            "run", "-d", "--init", image, "sleep", "300"
        )  # left running: teardown stops it
        net = second.docker("network", "create", "left-behind").stdout.strip()
        traces = [second.bridge, str(second.folder), second.subnet, "br-" + net[:12]]
    after = host_snapshot()
    left = [
        (k, item)
        for k, v in after.items()
        if isinstance(v, list)
        for item in v
        if any(t in item for t in traces)
    ]
    assert left == []
    if before["folders"] == after["folders"] == [str(dockerd.folder)]:  # no other run around
        assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    # the session daemon was not disturbed
    assert (
        dockerd.docker("run", "--rm", busybox_image, "echo", "first ok").stdout.strip()
        == "first ok"
    )
