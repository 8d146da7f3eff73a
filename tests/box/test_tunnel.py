"""SSH tunnels, the pure parts: the ssh command line, the keep-alive loop, auto's decision, the
docker bridge's address, the local ports. The real tunnel is in test_tunnel_e2e.py."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from carla_launcher.box.ports import NoFreePort
from carla_launcher.box.tunnel import (
    AGENT_HOST,
    Forward,
    address_of_ip_addr,
    gateway_of_inspect,
    keepalive_argv,
    local_port,
    route,
    tunnel_argv,
)
from carla_launcher.compose.hosts import DOCKER_HOST_NAME, HOST_GATEWAY
from carla_launcher.session import PaneSpec


def _options(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-o")


def test_one_ssh_per_server_forwards_its_three_ports_on_its_own_connection() -> None:
    argv = tunnel_argv("/state/ssh/gpu.conf", "gpu-box", Forward("172.17.0.1", 2003, 2000))
    assert argv[:5] == ["ssh", "-F", "/state/ssh/gpu.conf", "-N", "-T"]
    assert argv[-2:] == ["--", "gpu-box"]  # the host can never be read as an option
    forwards = [argv[i + 1] for i, a in enumerate(argv) if a == "-L"]
    assert forwards == [
        "172.17.0.1:2003:127.0.0.1:2000",
        "172.17.0.1:2004:127.0.0.1:2001",
        "172.17.0.1:2005:127.0.0.1:2002",
    ]
    opts = _options(argv)
    # its own connection: a mux client would hand the forward to the shared master
    assert opts["ControlMaster"] == "no" and opts["ControlPath"] == "none"
    assert opts["ExitOnForwardFailure"] == "yes" and opts["BatchMode"] == "yes"
    assert (opts["ServerAliveInterval"], opts["ServerAliveCountMax"]) == ("5", "2")


def test_an_ipv6_bind_address_is_bracketed() -> None:
    assert Forward("fd00::1", 2000, 2000).specs()[0] == "[fd00::1]:2000:127.0.0.1:2000"


def test_the_keepalive_loop_carries_values_as_arguments(tmp_path: Path) -> None:
    """No value is spliced into the loop's script: a host full of shell syntax stays one
    argument of the program the loop runs, through the pane's own quoting too."""
    canary = tmp_path / "pwned"
    hostile = f"x; touch {canary} $(touch {canary}) `touch {canary}` 'q' \"d\""
    record = tmp_path / "args"
    # a stand-in for ssh that records its arguments, then makes the loop stop
    stub = ["sh", "-c", 'printf "%s\\n" "$@" > "$0"; kill -TERM "$PPID"', str(record), hostile]
    loop = keepalive_argv(stub)
    assert loop[:2] == ["sh", "-c"] and hostile not in loop[2]
    pane = PaneSpec("tunnel", "tunnel", tuple(loop), tmp_path)
    done = subprocess.run(shlex.split(pane.shell), capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert record.read_text() == hostile + "\n" and not canary.exists()


def test_the_loop_runs_its_command_again_backing_off_and_says_so(tmp_path: Path) -> None:
    count = tmp_path / "count"
    # ends at once the first two times; the third time it stops the loop
    stub = [
        "sh",
        "-c",
        'echo x >> "$0"; [ "$(wc -l < "$0")" -ge 3 ] && kill -TERM "$PPID"; exit 7',
        str(count),
    ]
    done = subprocess.run(keepalive_argv(stub), capture_output=True, text=True, timeout=30)
    assert count.read_text().count("x") == 3
    # it failed at once each time: the pause doubles (a refused key must not hammer the box)
    assert "ssh ended (exit 7); again in 1 s" in done.stderr, done.stderr
    assert "ssh ended (exit 7); again in 2 s" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("setting", "local", "reach", "listening", "expected"),
    [
        (False, False, "silent", True, "direct"),  # off: never a tunnel
        (True, False, "open", True, "tunnel"),  # on: always, even where the address answers
        ("auto", True, "silent", True, "direct"),  # connector: local: the server runs here
        ("auto", False, None, None, None),  # not checked yet
        ("auto", False, "open", None, "direct"),
        ("auto", False, "silent", None, "tunnel"),  # a firewall that drops
        ("auto", False, "refused", True, "tunnel"),  # the server listens: something rejects
        ("auto", False, "refused", False, None),  # it does not listen yet: ask again
        ("auto", False, "refused", None, None),
    ],
)
def test_auto_uses_a_tunnel_when_the_address_does_not_answer(
    setting: bool | str, local: bool, reach: str | None, listening: bool | None, expected: str
) -> None:
    got = route(setting, local=local, reach=reach, box_listening=listening)  # type: ignore[arg-type]
    assert got == expected


# -- where it listens -------------------------------------------------------------------------
INSPECT = [
    {
        "Name": "bridge",
        "IPAM": {
            "Driver": "default",
            "Config": [{"Subnet": "172.30.0.0/24", "Gateway": "172.30.0.1"}],
        },
        "Options": {"com.docker.network.bridge.name": "cl-docker0"},
    }
]


def test_the_bridge_gateway_is_read_from_docker_not_assumed() -> None:
    assert gateway_of_inspect(json.dumps(INSPECT)) == ("172.30.0.1", "cl-docker0")
    v6_first = [
        {
            "IPAM": {
                "Config": [{"Subnet": "fd00::/64", "Gateway": "fd00::1"}, {"Gateway": "172.17.0.1"}]
            },
            "Options": {},
        }
    ]
    assert gateway_of_inspect(json.dumps(v6_first)) == ("172.17.0.1", None)
    no_gateway = [
        {
            "IPAM": {"Config": [{"Subnet": "172.17.0.0/16"}]},
            "Options": {"com.docker.network.bridge.name": "docker0"},
        }
    ]
    assert gateway_of_inspect(json.dumps(no_gateway)) == (None, "docker0")
    for broken in ("", "[]", "{", '[{"IPAM": null, "Options": 3}]', '"x"'):
        assert gateway_of_inspect(broken) == (None, None)


def test_the_bridge_interface_address_is_read_from_ip() -> None:
    shown = (
        "4: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\"
        "       valid_lft forever preferred_lft forever\n"
    )
    assert address_of_ip_addr(shown) == "172.17.0.1"
    assert address_of_ip_addr("") is None
    assert address_of_ip_addr("inet 999.1.1.1/8") is None


def test_the_local_ports_keep_the_servers_number_when_free() -> None:
    assert local_port(2000, set()) == 2000
    assert local_port(2000, {2001}) == 2003  # any of the triple busy: the next triple
    assert local_port(2003, {22, 80}, taken=[2003]) == 2006  # another tunnel chose it already
    with pytest.raises(NoFreePort):
        local_port(2000, set(range(2000, 2200)))


def test_agents_and_variants_agree_on_the_name() -> None:
    """box/ may not import compose/: the name is written twice, and must be the same."""
    assert AGENT_HOST == DOCKER_HOST_NAME and f"{AGENT_HOST}:host-gateway" == HOST_GATEWAY
