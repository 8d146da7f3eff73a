"""Which address agents use: a pure choice over recorded boxes, then a real box over SSH."""

from __future__ import annotations

import pytest

from carla_launcher.box.address import address_candidates, pick_address, ssh_server_side
from carla_launcher.box.parsers import parse_ip_addr
from carla_launcher.profile import read_profile
from carla_launcher.records import profile_address
from tests.harness.netns_box import Box

# `ip -o addr show` of a GPU box with docker, a compose network and a libvirt bridge.
GPU_BOX = """\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
1: lo    inet6 ::1/128 scope host \\       valid_lft forever preferred_lft forever
2: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\       valid_lft forever
3: enp5s0    inet 192.168.1.42/24 brd 192.168.1.255 scope global dynamic enp5s0\\       valid_lft 85000sec
3: enp5s0    inet6 2001:db8::42/64 scope global dynamic \\       valid_lft 86000sec
3: enp5s0    inet6 fe80::1e1b:dff:fe00:42/64 scope link \\       valid_lft forever
4: br-5c0ffee12345    inet 172.18.0.1/16 brd 172.18.255.255 scope global br-5c0ffee12345\\
5: virbr0    inet 192.168.122.1/24 brd 192.168.122.255 scope global virbr0\\
6: veth1a2b3c@if5    inet6 fe80::aa:bbff:fecc:dd/64 scope link \\
7: cni0    inet 10.244.0.1/24 brd 10.244.0.255 scope global cni0\\
"""  # noqa: E501  recorded `ip -o addr` output, as the box printed it
HOSTNAME_I = "172.17.0.1 192.168.1.42 172.18.0.1 192.168.122.1 10.244.0.1 2001:db8::42"

# A cloud VM reached over a VPN (tailscale), SSH through the VPN.
VPN_BOX = """\
1: lo    inet 127.0.0.1/8 scope host lo\\
2: ens4    inet 10.128.0.7/32 scope global dynamic ens4\\
3: tailscale0    inet 100.101.102.103/32 scope global tailscale0\\
4: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\
"""


def test_ssh_server_side() -> None:
    assert ssh_server_side("10.77.10.1 51234 10.77.10.2 22") == "10.77.10.2"
    assert ssh_server_side("") is None


def test_the_ssh_connection_wins_over_hostname_order() -> None:
    ifaces = parse_ip_addr(GPU_BOX.splitlines())
    cands = address_candidates("192.168.1.7 40000 192.168.1.42 22", ifaces, HOSTNAME_I.split())
    assert cands[0] == "192.168.1.42"
    assert pick_address(None, cands, lambda a: True) == "192.168.1.42"


def test_bridges_loopback_and_link_local_are_never_candidates() -> None:
    ifaces = parse_ip_addr(GPU_BOX.splitlines())
    cands = address_candidates("", ifaces, HOSTNAME_I.split())
    assert cands == ["192.168.1.42", "2001:db8::42"]
    for wrong in ("172.17.0.1", "172.18.0.1", "192.168.122.1", "10.244.0.1", "127.0.0.1"):
        assert wrong not in cands


def test_ssh_to_a_bridge_address_is_not_taken() -> None:
    # e.g. ssh from a container on the box itself: the server side is docker0's address
    ifaces = parse_ip_addr(GPU_BOX.splitlines())
    cands = address_candidates("172.17.0.2 5000 172.17.0.1 22", ifaces, [])
    assert cands[0] == "192.168.1.42"


def test_vpn_address_of_the_ssh_connection_comes_first() -> None:
    ifaces = parse_ip_addr(VPN_BOX.splitlines())
    cands = address_candidates("100.64.0.5 41000 100.101.102.103 22", ifaces, [])
    assert cands[:2] == ["100.101.102.103", "10.128.0.7"]


def test_unreachable_candidates_are_skipped() -> None:
    ifaces = parse_ip_addr(GPU_BOX.splitlines())
    cands = address_candidates("", ifaces, [])
    assert pick_address(None, cands, lambda a: a != "192.168.1.42") == "2001:db8::42"
    assert pick_address(None, cands, lambda a: False) is None


def test_configured_address_wins_unchecked() -> None:
    assert pick_address("203.0.113.9", ["192.168.1.42"], lambda a: False) == "203.0.113.9"


def test_without_ip_the_docker_pool_goes_last() -> None:
    # `ip` missing on the box: only `hostname -I`, with docker0's address first
    cands = address_candidates("", [], ["172.17.0.1", "10.0.0.5", "fe80::1"])
    assert cands == ["10.0.0.5", "172.17.0.1"]


def test_loopback_ssh_connection_is_not_an_address_for_agents() -> None:
    ifaces = parse_ip_addr(VPN_BOX.splitlines())
    assert address_candidates("127.0.0.1 5000 127.0.0.1 22", ifaces, [])[0] == "10.128.0.7"


# -- a real box --------------------------------------------------------------------------------
@pytest.mark.root
def test_address_command_picks_the_box_address_not_docker0(box: Box) -> None:
    assert box.run("hostname -I").stdout.split()[0] == "172.17.0.1"  # the classic wrong pick
    done = box.cli("address", str(box.profile_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{box.address}\n"  # only the address: scripts use it
    assert profile_address(read_profile(box.profile_path)) == box.address  # for `carla-launch sync`


@pytest.mark.root
def test_address_from_the_profile_needs_no_ssh(box: Box) -> None:
    box.write_profile(remote={"address": "198.51.100.7", "host": "nowhere.invalid"})
    done = box.cli("address", str(box.profile_path))
    assert (done.returncode, done.stdout) == (0, "198.51.100.7\n")


@pytest.mark.root
def test_address_offers_what_its_hint_says_for_a_new_host_key(box: Box) -> None:
    """The first contact with a box is often `address`: the fix its error names must exist."""
    box.known_hosts.write_text("")
    refused = box.cli("address", str(box.profile_path))
    assert refused.returncode == 1 and refused.stdout == ""
    assert "host key" in refused.stderr and "address --accept-new-host-key" in refused.stderr
    done = box.cli("address", str(box.profile_path), "--accept-new-host-key")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [box.address]
    assert box.host_key in box.known_hosts.read_text()
