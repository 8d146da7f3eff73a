"""Which agents a profile runs: one per server, each paired with its server. Pure.

A *pair* is one server (host, slot K, `server/slots.py`) and the agent that talks to it: its
own compose project (`docker compose -p PROJECT`), so that one profile's `up`, `down` and
`status` never see another's containers; its own environment (that server's address and
port, CARLA_LAUNCH_HOST/PORT); its own window of the local tmux session. The names depend on
the profile's key, the host and K only, so every run gives the same ones.

A profile with one server keeps what it had before pairs: the project is the profile's key and
the window `carla`. A profile that declares several (`server.gpus`, or a pool of hosts) names
every pair, server 0 too, so that a box with fewer free GPUs today renames nothing.

Why a window per pair, not all panes tiled in one window: a pair is a server pane beside its
agent pane, which is how `up` has always shown one server, and stays readable at any count;
eight GPUs on two boxes tiled in one window are 32 panes a few columns wide each. The windows
carry the pair's name (`gpu-box-1`) in tmux's status line; `attach` opens the first, and the
tmux prefix with `n`/`p` (or `w`, the list) goes through the others.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from carla_launcher.box.tunnel import AGENT_HOST, Forward
from carla_launcher.compose.hosts import ENV_SUFFIX
from carla_launcher.records import AgentRecord, TunnelRecord
from carla_launcher.session import WINDOW
from carla_launcher.stack.env import agent_env

if TYPE_CHECKING:
    from carla_launcher.profile import Profile


def several(profile: Profile) -> bool:
    """Whether the profile declares several servers: a pool of hosts, `server.gpus` (even one
    GPU: the names must not change when a box has fewer free GPUs today), or Slurm jobs."""
    from carla_launcher.server.slots import count

    srv = profile.server
    return len(profile.remote.hosts) > 1 or srv.gpus is not None or (count(srv) or 2) > 1


def _slug(text: str) -> str:
    """`text` as a compose project name part: lowercase letters, digits, `_` and `-`; when
    that changed it (other than the case), a short digest keeps two hosts apart.

    >>> _slug("gpu-box"), _slug("GPU-Box"), _slug("gpu.lab")
    ('gpu-box', 'gpu-box', 'gpu-lab-4368')
    """
    low = text.lower()
    slug = re.sub(r"[^a-z0-9_-]+", "-", low).strip("-_") or "x"
    if slug != low:
        slug += "-" + hashlib.sha256(text.encode()).hexdigest()[:4]
    return slug


def project_name(key: str, host: str, slot: int, *, named: bool, pool: bool) -> str:
    """The compose project of the agent of server `slot` on `host`: the profile's key for a
    profile with one server (`named` False), `KEY-K` for each of several, `KEY-HOST-K` in a
    pool. Always `[a-z0-9][a-z0-9_-]*`, what `docker compose -p` accepts.

    >>> project_name("gpu-1a2b3c", "box", 0, named=False, pool=False)
    'gpu-1a2b3c'
    >>> project_name("Gpu-1a2b3c", "box", 2, named=True, pool=False)
    'gpu-1a2b3c-2'
    >>> project_name("_x-1a2b3c", "box-b", 1, named=True, pool=True)
    'x-1a2b3c-box-b-1'
    """
    base = re.sub(r"[^a-z0-9_-]", "_", key.lower()).lstrip("_-") or "carla"
    if not named:
        return base
    return f"{base}-{_slug(host)}-{slot}" if pool else f"{base}-{slot}"


def window_name(host: str, slot: int, *, named: bool) -> str:
    """The pair's window of the local session: `carla` for a profile with one server (as
    before pairs), else `HOST-K` (no `.` or `:`, which tmux reads in a target).

    >>> window_name("box", 0, named=False), window_name("gpu.lab", 1, named=True)
    ('carla', 'gpu-lab-4368-1')
    """
    return f"{_slug(host)}-{slot}" if named else WINDOW


def env_mode_refusal(profile: Profile, servers: int) -> str | None:
    """Why `up` cannot run `servers` agents from literal variants (None: it can). A literal
    variant holds one address and port; several servers need one variant for many of them."""
    if profile.compose.env_mode or servers <= 1:
        return None
    return (
        f"{servers} servers (server.gpus, or a pool of hosts) need one variant for many "
        "addresses: set `compose.address: env` in the profile (each agent then gets its own "
        "server's CARLA_LAUNCH_HOST/PORT)"
    )


def tunnel_refusal(profile: Profile, tunnels: int) -> str | None:
    """Why `up` cannot run agents through `tunnels` SSH tunnels from literal variants (None:
    it can). A literal variant would have to hold this machine's tunnel port, which only means
    something while `up`'s tunnel runs, and `sync` and the daemon write the box's address back
    into it; an env-mode variant reads the tunnel's end from the agent's environment."""
    if profile.compose.env_mode or not tunnels:
        return None
    return (
        "agents reach the server through an SSH tunnel (remote.tunnel), which needs variants "
        "that read where it ends: set `compose.address: env` in the profile"
    )


@dataclass(frozen=True)
class Reached:
    """A server `up` reached: where it runs and what answered. `address` is the box's (None:
    not known, and not needed: its agent goes through `tunnel`); `tunnel` the SSH tunnel its
    agent reaches it through (None: at the address), and `why` it goes through one."""

    host: str
    slot: int
    gpu: int | None
    address: str | None
    port: int
    version: str | None = None
    tunnel: Forward | None = None
    why: str = ""

    @property
    def agent_address(self) -> tuple[str, int]:
        """Where its agent connects: the tunnel's end on this machine, as containers name it
        (`host.docker.internal`, its local port), else the box's address and the port."""
        if self.tunnel is not None:
            return AGENT_HOST, self.tunnel.local_port
        if self.address is None:  # `up` never pairs a server it reaches neither way
            raise ValueError(f"{self.host} server {self.slot}: no address and no tunnel")
        return self.address, self.port


@dataclass(frozen=True)
class Pair:
    """A server and its agent: the server's facts, the agent's project, window and env."""

    server: Reached
    project: str
    window: str
    env: dict[str, str]

    @property
    def label(self) -> str:
        """How a line names the pair: `gpu-box server 1`."""
        return f"{self.server.host} server {self.server.slot}"


def agent_environ(address: str, port: int, project: str) -> dict[str, str]:
    """What the agent of one pair gets: its server's address and port (`env.agent_env`) and
    the suffix that an env-mode variant appends to each `container_name:`, so that one
    variant runs as several projects at once."""
    return {**agent_env(address, port), ENV_SUFFIX: f"-{project}"}


def pairs_of(profile: Profile, servers: Sequence[Reached]) -> list[Pair]:
    """One pair per server, in the order given (host by host, K by K)."""
    named, pool = several(profile), len(profile.remote.hosts) > 1
    out = []
    for s in servers:
        project = project_name(profile.key, s.host, s.slot, named=named, pool=pool)
        env = agent_environ(*s.agent_address, project)
        out.append(Pair(s, project, window_name(s.host, s.slot, named=named), env))
    return out


def agent_record(pair: Pair, variant: Path, compose_args: Sequence[str] = ()) -> AgentRecord:
    """What `down`, `status`, `logs` and `attach` need to know of the pair's agent."""
    s = pair.server
    fwd = s.tunnel
    tunnel = TunnelRecord(fwd.bind, fwd.local_port, fwd.remote_port, s.why) if fwd else None
    return AgentRecord(
        s.host, s.slot, pair.project, variant, pair.env, tuple(compose_args), pair.window, tunnel
    )


def left_over(
    recorded: Sequence[AgentRecord],
    pairs: Sequence[Pair],
    asked: Mapping[str, set[int]],
    hosts: Sequence[str],
) -> tuple[list[AgentRecord], list[AgentRecord]]:
    """The agents an earlier `up` started that are not among `pairs`: (gone, kept). Gone: its
    server is not there any more (its host answered without that server: a GPU went to
    someone else, the profile asks for fewer; or the profile no longer names its host), or it
    is an agent from before pairs, which its pair's agent replaces. Kept: its host or server
    failed this time; it still runs and stays recorded, for `down` and `status`.

    `asked`: each host that answered -> the slots of its servers."""
    ours = {p.project for p in pairs}
    gone: list[AgentRecord] = []
    kept: list[AgentRecord] = []
    for a in recorded:
        if a.project in ours:
            continue
        host = a.host
        if a.project is None or host is None or host not in hosts:
            gone.append(a)  # from before pairs, or of a host the profile no longer names
            continue
        (gone if host in asked and a.slot not in asked[host] else kept).append(a)
    return gone, kept
