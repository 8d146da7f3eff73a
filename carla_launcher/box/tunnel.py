"""SSH tunnels to a server's ports, for boxes whose firewall lets only SSH through. Pure.

One OpenSSH process per server forwards its three ports (N world, N+1 streaming, N+2
secondary) from a local triple LP..LP+2 to 127.0.0.1:N..N+2 on the box. It reads the profile's
generated ssh_config (`box/ssh.py`), so ProxyJump, identity and known_hosts apply as for every
other connection, but opens its own connection (`ControlMaster=no`, `ControlPath=none`):
through a shared master, killing it would leave the forward with the master, alive.

It listens on the docker bridge's gateway (172.17.0.1 on most machines): containers reach this
machine there, the LAN does not (0.0.0.0 would hand the server to it), and 127.0.0.1 is not
reachable from a container. Agents find it as `host.docker.internal`, which env-mode variants
map to that gateway (`extra_hosts: host.docker.internal:host-gateway`, compose/derive.py).

A keep-alive loop runs it again a second after it ends (a dropped connection, a killed ssh),
backing off to 30 s while it keeps failing at once (a refused key, a box that is down);
`ServerAliveInterval` makes a dead connection end it within ~10 s. The loop ends its ssh when
it is itself ended (TERM, HUP: a closed tmux pane), so no forward outlives it.

The thin side (the bridge's address, this machine's listening ports, a TCP check) is
`box/tunnel_local.py`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from carla_launcher.box.ports import choose_port, triple

#: The name agents use for this machine (the tunnel's end) from inside a container; variants
#: map it with compose's `host-gateway` (compose/hosts.py HOST_GATEWAY says the same name).
AGENT_HOST = "host.docker.internal"
PORTS = 3  # N (RPC), N+1 (streaming), N+2 (secondary): the server's triple, see box/ports.py
#: Where the forwards end on the box: the server listens on every address, loopback included,
#: and 127.0.0.1 (not `localhost`, which may name ::1 first) needs no name lookup there.
REMOTE_END = "127.0.0.1"
#: How the keep-alive loop names itself: `$0` of its `sh -c`, seen in `ps` and pane titles.
LOOP_NAME = "carla-launch-tunnel"
RESTART_PAUSE_S = 1
#: A tunnel that ends within STEADY_S of its start (a refused key, a box that is down) is
#: started again after 1, 2, 4 ... MAX_PAUSE_S seconds, not every second for ever; one that ran
#: longer (a dropped connection) comes back a second later.
STEADY_S = 10
MAX_PAUSE_S = 30

#: ssh options of every tunnel (on the command line: they win over any ssh_config).
SSH_OPTIONS = (
    "ControlMaster=no",  # its own connection: ending it ends the forward
    "ControlPath=none",
    "ExitOnForwardFailure=yes",  # a port it cannot listen on ends it, loudly, not half-working
    "ServerAliveInterval=5",  # a dead connection ends it within ~10 s, and the loop reconnects
    "ServerAliveCountMax=2",
    "BatchMode=yes",  # never a password prompt in a pane nobody watches
)

# The loop: runs "$@" (the ssh command line, passed as arguments: no value is spliced into
# the script), says when it ended, and waits a second before the next try. It runs ssh in the
# background and waits for it, so that a TERM or HUP reaches the trap at once, which ends ssh.
_LOOP = (
    "trap 'kill \"$pid\" 2>/dev/null; exit 0' TERM HUP INT\n"
    f"pause={RESTART_PAUSE_S}\n"
    "while :; do\n"
    "  began=$(date +%s)\n"
    '  "$@" & pid=$!\n'
    '  wait "$pid"; rc=$?\n'
    f"  [ $(($(date +%s) - began)) -ge {STEADY_S} ] && pause={RESTART_PAUSE_S}\n"
    f'  echo "{LOOP_NAME}: ssh ended (exit $rc); again in $pause s" >&2\n'
    "  sleep $pause & pid=$!; wait $pid\n"
    f"  pause=$((pause * 2)); [ $pause -gt {MAX_PAUSE_S} ] && pause={MAX_PAUSE_S}\n"
    "done\n"
)


# The loop of a server whose place changes (a Slurm job: `server/slurm.py`): each round asks
# the login node where the job runs ($ask waits there until one does, then prints MARK ADDRESS
# PORT: one connection, not one a second, and a login shell's own output is not taken for an
# answer), checks the answer is an address and a port (it comes from the box: data, never
# options), forwards LP..LP+2 there through the login node, and runs $watch there, which
# returns when the job ended or moved: ssh then ends, and the next round goes where the new job
# runs. ssh's own errors show in the pane; a failing login is tried again after 1, 2, 4 ... 30 s.
# Arguments: BIND LP ASK WATCH HOST MARK, then the ssh command line without forwards or host.
_FOLLOW = (
    "trap 'kill \"$pid\" 2>/dev/null; exit 0' TERM HUP INT\n"
    "bind=$1 lp=$2 ask=$3 watch=$4 host=$5 mark=$6; shift 6; pid=; pause=1\n"
    'case $bind in *:*) bind="[$bind]" ;; esac\n'
    "while :; do\n"
    '  out=$("$@" -- "$host" "$ask" </dev/null); rc=$?\n'
    '  target=$(printf \'%s\\n\' "$out" | sed -n "s/^$mark //p" | tail -n 1)\n'
    "  if [ $rc -ne 0 ]; then\n"
    f'    echo "{LOOP_NAME}: asking the login node failed (ssh exit $rc); again in $pause s" >&2\n'
    "    sleep $pause & pid=$!; wait $pid\n"
    "    pause=$((pause * 2)); [ $pause -gt 30 ] && pause=30; continue\n"
    "  fi\n"
    "  pause=1\n"
    "  addr=${target% *}; port=${target##* }\n"
    '  case "$addr/$port" in\n'
    "    /*|*/|*[!A-Za-z0-9./-]*|-*|*/*[!0-9]*)\n"
    f'      echo "{LOOP_NAME}: no job of this server runs yet; asking again" >&2\n'
    "      continue ;;\n"
    "  esac\n"
    f'  echo "{LOOP_NAME}: to $addr:$port" >&2\n'
    '  "$@" -L "$bind:$lp:$addr:$port" -L "$bind:$((lp + 1)):$addr:$((port + 1))" \\\n'
    '    -L "$bind:$((lp + 2)):$addr:$((port + 2))" -- "$host" "$watch $addr $port" & pid=$!\n'
    '  wait "$pid"; rc=$?\n'
    f'  echo "{LOOP_NAME}: ssh ended (exit $rc); again in {RESTART_PAUSE_S} s" >&2\n'
    f"  sleep {RESTART_PAUSE_S} & pid=$!; wait $pid\n"
    "done\n"
)


@dataclass(frozen=True)
class Forward:
    """One server's forward: LP..LP+2 on `bind` here to N..N+2 on the box."""

    bind: str  # the local address it listens on (the docker bridge's gateway)
    local_port: int  # LP: agents connect to AGENT_HOST:LP
    remote_port: int  # N: the server's world port on the box

    def listens(self) -> list[str]:
        """The local ends of the `-L` values, `BIND:LP+i:` (whatever the remote end: a Slurm
        job's changes), by which `down` finds an ssh of ours that still holds them."""
        bind = f"[{self.bind}]" if ":" in self.bind else self.bind
        return [f"{bind}:{self.local_port + i}:" for i in range(PORTS)]

    def specs(self) -> list[str]:
        """The `-L` values: BIND:LP+i:127.0.0.1:N+i for i in 0..2 (an IPv6 bind bracketed)."""
        bind = f"[{self.bind}]" if ":" in self.bind else self.bind
        return [
            f"{bind}:{self.local_port + i}:{REMOTE_END}:{self.remote_port + i}"
            for i in range(PORTS)
        ]


def tunnel_argv(ssh_config: str, host: str, forward: Forward) -> list[str]:
    """The OpenSSH command line of one server's tunnel: no command (`-N`), no terminal, the
    three forwards, through the profile's ssh_config (`ssh.ssh_config_file`)."""
    argv = ["ssh", "-F", ssh_config, "-N", "-T"]
    for option in SSH_OPTIONS:
        argv += ["-o", option]
    for spec in forward.specs():
        argv += ["-L", spec]
    return [*argv, "--", host]


def keepalive_argv(argv: Sequence[str]) -> list[str]:
    """`argv` run again a second after each end, for as long as the loop runs: a command line
    for `session.PaneSpec` (or a plain subprocess). The values stay arguments of `sh -c`."""
    return ["sh", "-c", _LOOP, LOOP_NAME, *argv]


def follow_argv(
    ssh_config: str, host: str, forward: Forward, ask: str, watch: str, mark: str
) -> list[str]:
    """The tunnel of a server whose place changes (a Slurm job on some compute node, reached
    through the login node `host`): a loop that asks where it runs (`ask`: a remote command
    printing "MARK ADDRESS PORT" once one runs), forwards LP..LP+2 there, and follows it when
    it moves (`watch`: a remote command that returns then, given ADDRESS PORT as its last two
    words). A command line for `session.PaneSpec`; every value stays an argument of `sh -c`."""
    base = ["ssh", "-F", ssh_config, "-T"]
    for option in SSH_OPTIONS:
        base += ["-o", option]
    return [
        "sh",
        "-c",
        _FOLLOW,
        LOOP_NAME,
        forward.bind,
        str(forward.local_port),
        ask,
        watch,
        host,
        mark,
        *base,
    ]


def local_port(remote_port: int, listening: Iterable[int], taken: Iterable[int] = ()) -> int:
    """LP for a server whose world port is `remote_port`: the same number when its triple is
    free here, else the next free triple in steps of 3 (box/ports.py; `ports.NoFreePort` when
    none is). `taken`: the LPs of tunnels chosen but not yet listening (this `up`'s others)."""
    busy = set(listening)
    for p in taken:
        busy |= triple(p)
    return choose_port(remote_port, busy)


# -- auto: tunnel or not -----------------------------------------------------------------------
#: What a TCP connect to the address's world port from here got: `open` (connected),
#: `refused` (a reset: the box, or a firewall that rejects, answered), `silent` (no answer in
#: time, no route, host unreachable: a firewall that drops, or a network in between).
Reach = Literal["open", "refused", "silent"]
Route = Literal["direct", "tunnel"]


def route(
    setting: bool | str,
    *,
    local: bool = False,
    reach: Reach | None = None,
    box_listening: bool | None = None,
) -> Route | None:
    """How agents reach a server: `direct` (at the address), `tunnel`, or None: not known yet.

    `setting` is `remote.tunnel`; `local` is `connector: local` (the server runs here). For
    `auto`, `reach` is what a TCP connect to the address's world port from here got (None:
    not tried yet) and `box_listening` whether the box says the server listens on that port
    (the status's `ports_busy`). A refusal while the server listens means something on the
    way rejects the port: a tunnel. A refusal before it listens says nothing yet: None, ask
    again once the box says it listens.
    """
    if local or setting is False:
        return "direct"
    if setting is True:
        return "tunnel"
    if reach is None:
        return None
    if reach == "open":
        return "direct"
    if reach == "silent":
        return "tunnel"
    return "tunnel" if box_listening else None


def why_tunnel(setting: bool | str, *, reach: Reach | None = None, address: bool = True) -> str:
    """Why a server goes through a tunnel, in the words of `up`'s line about it (`route` said
    `tunnel`): the setting, no address known, or what the address got from here."""
    if setting is True:
        return "remote.tunnel: true"
    if not address:
        return "no address of the box is known that answers from here"
    if reach == "refused":
        return "the address refuses the port while the server listens"
    return "the address does not answer from here"


def reuse_port(
    recorded: Forward | None,
    wanted: Forward,
    *,
    ours_alive: bool,
    listening: Iterable[int],
) -> bool:
    """Whether the tunnel keeps the local ports an earlier `up` chose (`recorded`): the same
    server port on the same address here, and those ports still ours (the tunnel's pane runs)
    or free. `wanted` is the forward without a local port chosen (`local_port` 0)."""
    if recorded is None:
        return False
    if (recorded.bind, recorded.remote_port) != (wanted.bind, wanted.remote_port):
        return False
    return ours_alive or not triple(recorded.local_port) & set(listening)


def describe(forward: Forward, host: str) -> str:
    """`172.17.0.1:2000 -> gpu-box:2000`: where the tunnel listens, where it goes (the first
    port of each triple: the world port)."""
    bind = f"[{forward.bind}]" if ":" in forward.bind else forward.bind
    return f"{bind}:{forward.local_port} -> {host}:{forward.remote_port}"


# -- the docker bridge's gateway: where the tunnel listens --------------------------------------
def gateway_of_inspect(text: str) -> tuple[str | None, str | None]:
    """(the IPv4 gateway, the interface name) of docker's default network from `docker network
    inspect bridge` (a JSON list of one network); Nones for what it does not say."""
    try:
        data = json.loads(text)
    except ValueError:
        return None, None
    net = data[0] if isinstance(data, list) and data else data
    if not isinstance(net, dict):
        return None, None
    gateway = None
    ipam = net.get("IPAM")
    configs = ipam.get("Config") if isinstance(ipam, dict) else None
    for c in configs if isinstance(configs, list) else []:
        gw = c.get("Gateway") if isinstance(c, dict) else None
        if isinstance(gw, str) and _ipv4(gw):
            gateway = gw
            break
    options = net.get("Options")
    name = options.get("com.docker.network.bridge.name") if isinstance(options, dict) else None
    return gateway, name if isinstance(name, str) and name else None


def address_of_ip_addr(text: str) -> str | None:
    """The first IPv4 address in `ip -o -4 addr show dev NAME` (`... inet 172.17.0.1/16 ...`)."""
    for m in re.finditer(r"\binet (\d+\.\d+\.\d+\.\d+)/\d+", text):
        if _ipv4(m.group(1)):
            return m.group(1)
    return None


def _ipv4(value: str) -> bool:
    try:
        return ipaddress.ip_address(value).version == 4
    except ValueError:
        return False
