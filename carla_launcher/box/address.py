"""Which address agents should use to reach the box.

The choice is pure (`address_candidates`, `pick_address`): the profile's `remote.address` if
set; else the address our SSH connection reached (server side of `SSH_CONNECTION`); else the
box's own addresses without loopback, link-local and container bridges (the 172.17.0.1 of
docker0 that `hostname -I` often lists first). Each candidate must be reachable from here.
`discover_address` is the shell around it: one SSH round trip and a few TCP connects.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from carla_launcher.box.parsers import Interface
from carla_launcher.box.ssh import RemoteError
from carla_launcher.netaddr import address_problem, describe

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

# Interface names of container and VM bridges: never what an agent on another machine uses.
# (VPN links such as tun0, wg0 or tailscale0 stay: they may be exactly how agents get there.)
BRIDGE_PREFIXES = (
    "docker",
    "br-",
    "veth",
    "cni",
    "virbr",
    "flannel",
    "cali",
    "vxlan.calico",
    "weave",
    "podman",
    "lxcbr",
    "lxdbr",
    "kube-bridge",
)
# Docker's default address pool, for when we know addresses but not their interfaces.
DOCKER_POOL = ipaddress.ip_network("172.17.0.0/16")


def ssh_server_side(ssh_connection: str) -> str | None:
    """`client_ip client_port server_ip server_port` -> server_ip."""
    fields = ssh_connection.split()
    return fields[2] if len(fields) == 4 else None


def is_bridge(name: str) -> bool:
    return name.startswith(BRIDGE_PREFIXES)


def address_candidates(
    ssh_connection: str,
    interfaces: Iterable[Interface],
    hostname_i: Iterable[str],
) -> list[str]:
    """Addresses that may reach the box, best first; no loopback, link-local or bridges, and
    nothing that is not an address (a box's output is data, never code for the variants)."""
    interfaces = list(interfaces)
    ordered: list[str] = []

    def add(addr: str) -> None:
        addr = addr.split("%", 1)[0]
        if addr_ok(addr) and addr not in ordered and not is_loopback_or_link_local(addr):
            ordered.append(addr)

    server = ssh_server_side(ssh_connection)
    bridges = {i.address for i in interfaces if is_bridge(i.name)}
    if server and server not in bridges:
        add(server)
    usable = [i for i in interfaces if not is_bridge(i.name) and i.scope != "host"]
    for family in (4, 6):
        for i in usable:
            if i.family == family and i.scope == "global":
                add(i.address)
    known = {i.address for i in interfaces}
    late = []
    for addr in hostname_i:  # `ip` missing on the box: keep `hostname -I`, bridges last
        if addr in known:
            continue
        if _in_docker_pool(addr):
            late.append(addr)
        else:
            add(addr)
    for addr in late:
        add(addr)
    return ordered


def is_loopback_or_link_local(address: str) -> bool:
    """Never an address another machine reaches the box at (or not an address at all)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast


def addr_ok(addr: str) -> bool:
    return address_problem(addr) is None


def checked(value: str, host: str | None, source: str) -> str:
    """`value` when it is an address; else one line naming the box and where it came from."""
    problem = address_problem(value)
    if problem:
        raise RemoteError(
            f"{host}: {source} is {describe(value, problem)}; set remote.address "
            "in the profile or run `carla-launch address P` again"
        )
    return value


def _in_docker_pool(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr) in DOCKER_POOL
    except ValueError:
        return False


def pick_address(
    configured: str | None,
    candidates: Iterable[str],
    reachable: Callable[[str], bool],
) -> str | None:
    """The configured address wins unchecked; else the first candidate reachable from here."""
    if configured:
        return configured
    for addr in candidates:
        if reachable(addr):
            return addr
    return None


def tcp_reachable(address: str, ports: Iterable[int], timeout: float = 1.5) -> bool:
    """Does the address answer on any port? A refused connection still proves a route."""
    for port in ports:
        try:
            with socket.create_connection((address, port), timeout=timeout):
                return True
        except ConnectionRefusedError:
            return True
        except OSError as e:
            if e.errno == errno.ECONNREFUSED:
                return True
            continue
    return False


def discover_address(
    profile: Profile, host: str | None = None, accept_new_host_key: bool = False
) -> str:
    """The address agents should use for `host` (default: the profile's first host); the first
    contact with a box may accept its new host key (`address --accept-new-host-key`)."""
    from carla_launcher.box import facts as F
    from carla_launcher.box.transport import check

    host = host or profile.remote.host
    if profile.remote.address:
        return profile.remote.address
    script = F.facts_script(
        F.ADDRESS, server_user=profile.server.user, session=profile.server.tmux_session
    )
    out = check(profile, host, script, profile.remote.connect_timeout + 20, accept_new_host_key)
    facts = F.parse_facts(out)
    candidates = address_candidates(facts.ssh_connection, facts.interfaces, facts.hostname_i)
    if profile.remote.connector == "local":
        chosen = candidates[0] if candidates else None
    else:
        ports = (profile.remote.port or 22, profile.server.port)
        chosen = pick_address(None, candidates, lambda a: tcp_reachable(a, ports))
    if not chosen:
        tried = ", ".join(candidates) or "none"
        raise RemoteError(
            f"{host}: no address of the box is reachable from here (candidates: {tried}); "
            f"set remote.address in {profile.path.name}"
        )
    return checked(chosen, host, "the discovered address")


def agent_address(profile: Profile, host: str | None = None) -> str:
    """remote.address, else the one recorded for the box (by a deploy, `up` or `address`),
    else discovered (and recorded); a recorded value that is not an address is refused."""
    from carla_launcher import records

    host = str(host or profile.remote.host)
    if profile.remote.address:
        return profile.remote.address  # validated when the profile was read
    address = records.server(profile, host).address
    if address:
        return address
    address = discover_address(profile, host)
    records.learn(profile, host, address=address)
    return address
