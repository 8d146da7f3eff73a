"""The tunnel's side on this machine: where it listens, which ports are free, and whether an
address answers from here. Thin: the decisions and command lines are `box/tunnel.py`.

    fwd = forward_for(2000, taken=[...])      # Forward(bridge address, LP, 2000)
    argv = tunnel_command(profile, host, fwd)  # ssh -F CONF -N -o ... -L ... -- host
    pane = tunnel.keepalive_argv(argv)         # the loop around it, for a pane
    # the agent's env: CARLA_LAUNCH_HOST=tunnel.AGENT_HOST, CARLA_LAUNCH_PORT=fwd.local_port
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from carla_launcher import proc
from carla_launcher.box.ssh import ssh_config_file
from carla_launcher.box.tunnel import (
    Forward,
    Reach,
    address_of_ip_addr,
    gateway_of_inspect,
    local_port,
    tunnel_argv,
)
from carla_launcher.errors import LauncherError

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

#: How long `reach` waits for an answer: a box on the same network answers in milliseconds,
#: one across the world in about 300 ms, and a firewall that drops answers never. A lost first
#: SYN is sent again only after 1 s, so a longer wait gains little; and a wrong "silent" costs
#: only a tunnel, which works too. `up` asks early, while it talks to the boxes, but a status
#: round trip takes ~0.3 s: the rest of this wait is what a firewalled box costs `up` (1 s
#: made `up` through a tunnel 1.6x a direct one in bench/tunnel.py; twice the farthest RTT
#: is enough).
REACH_TIMEOUT_S = 0.6


class NoBridge(LauncherError):
    """No docker bridge to listen on: docker is not running here, or has no default bridge."""

    exit_code = 1


def bridge_address(env: Mapping[str, str] | None = None) -> str:
    """The IPv4 address of docker's default bridge on this machine: what `host-gateway` means
    to the agents' containers, so the tunnel listens there. Asks the docker that `docker
    compose` uses (`DOCKER_HOST` in `env` or ours): its bridge need not be docker0."""
    done = proc.run(["docker", "network", "inspect", "bridge"], 20, env=env)
    if not done.ok:
        why = (done.stderr.strip().splitlines() or [f"exit {done.rc}"])[-1]
        raise NoBridge(
            f"cannot ask docker for its bridge ({why}); a tunnel listens there: start docker, "
            "or set remote.tunnel: false"
        )
    gateway, name = gateway_of_inspect(done.stdout)
    if gateway is not None:
        return gateway
    if name is not None:  # no gateway in IPAM (an old docker): read the interface itself
        shown = proc.run(["ip", "-o", "-4", "addr", "show", "dev", name], 10)
        found = address_of_ip_addr(shown.stdout) if shown.ok else None
        if found is not None:
            return found
    raise NoBridge(
        f"docker's default bridge ({name or 'unnamed'}) has no IPv4 address here; a tunnel "
        "listens there: check `docker network inspect bridge`"
    )


def listening_ports() -> set[int]:
    """TCP ports something listens on here, on any address (a listener on 0.0.0.0 takes the
    port on the bridge's address too)."""
    import psutil  # lazily: most commands never need it

    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return set()
    return {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN and c.laddr}


def forward_for(
    remote_port: int,
    taken: Iterable[int] = (),
    env: Mapping[str, str] | None = None,
    bind: str | None = None,
) -> Forward:
    """A forward for a server whose world port is `remote_port`: on the docker bridge (or
    `bind`), from a free local triple (`tunnel.local_port`; `taken`: LPs already chosen)."""
    where = bind if bind is not None else bridge_address(env)
    return Forward(where, local_port(remote_port, listening_ports(), taken), remote_port)


def tunnel_command(profile: Profile, host: str, forward: Forward) -> list[str]:
    """The tunnel's ssh command line for the profile's box `host` (its ssh_config written)."""
    return tunnel_argv(str(ssh_config_file(profile)), host, forward)


def reach(address: str, port: int, timeout: float = REACH_TIMEOUT_S) -> Reach:
    """What a TCP connect to address:port from here gets (for `tunnel.route`)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return "refused" if e.errno == errno.ECONNREFUSED else "silent"
