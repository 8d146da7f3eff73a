"""What the tool has learnt about each box's server, and what `up` left running here.

One record of each server (address, port, version, where it runs), written by whatever
learns it (a deploy, `up`, `address`, a discovery) and read by everything (`status`, `sync`,
`env`, `up`, the daemon's watch). It replaces two files that each held half of it
(`addresses.json` and `servers.json`): `status` read only one of them, and said "address not
known yet" while `up`'s agent was connected to the box. Users still have those files, so
they are read for a profile that the new file does not know yet; only the new one is written.

A record lies outside the profile but ends up in variants and commands, so what is not an
address is refused when it is read, naming the file and the box. Writers never validate
what is there already: `carla-launch address P` must be able to overwrite a bad value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from carla_launcher.errors import InputError
from carla_launcher.netaddr import address_problem, describe
from carla_launcher.state import read_json, state_dir, write_json

#: {profile key: {host: {address, port, version, deployed_at, slots: {K: {port, version}}}}}:
#: the address is the box's; port and version are server 0's, and server K's under `slots`
SERVERS_FILE = "known-servers.json"
#: {profile path: {variant, session, env, compose_args, agents: [{host, slot, project, variant,
#: env, compose_args, window, tunnel}]}}: the top-level variant, env and args are the first
#: agent's; `tunnel` {bind, local_port, remote_port, why} or null (`TunnelRecord`)
SESSIONS_FILE = "sessions.json"
LEGACY_SERVERS = "servers.json"  # {profile key: {host: {address, port, version, deployed}}}
LEGACY_ADDRESSES = "addresses.json"  # {profile key: address of its first host}


class _Remote(Protocol):
    @property
    def hosts(self) -> Sequence[str]: ...


class Owner(Protocol):
    """What a record needs of a profile (this layer sits below `profile`)."""

    @property
    def key(self) -> str: ...

    @property
    def path(self) -> Path: ...

    @property
    def remote(self) -> _Remote: ...


def servers_file() -> Path:
    """Where the server records live (the daemon watches it: an address may be learnt)."""
    return state_dir() / SERVERS_FILE


# -- servers ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerRecord:
    """What is known of the server on `host`; None where nothing has been learnt yet."""

    host: str
    address: str | None = None  # what agents use to reach the box (every server on it)
    port: int | None = None  # the RPC port; it moves on a busy box
    version: str | None = None  # CARLA's answer to `version`
    deployed_at: str | None = None  # local time of the last deploy, ISO 8601
    slot: int = 0  # K: which of the box's servers (`server.gpus`)


@dataclass(frozen=True)
class _Raw:
    """A record as stored, with the file it came from (named when it is refused)."""

    data: dict[str, Any] = field(default_factory=dict)
    source: str = SERVERS_FILE


def _legacy(profile: Owner) -> dict[str, _Raw]:
    """A profile's records from the files before this one: servers.json per host, and
    addresses.json's one address, which belonged to the first host."""
    found: dict[str, _Raw] = {}
    mine = read_json(LEGACY_SERVERS).get(profile.key)
    for host, entry in (mine if isinstance(mine, dict) else {}).items():
        if isinstance(entry, dict):
            data = {k: v for k, v in entry.items() if k != "deployed"}
            data["deployed_at"] = entry.get("deployed")
            found[str(host)] = _Raw(data, LEGACY_SERVERS)
    hosts = list(profile.remote.hosts)
    address = read_json(LEGACY_ADDRESSES).get(profile.key)
    if hosts and isinstance(address, str) and address:
        first = found.get(hosts[0], _Raw(source=LEGACY_ADDRESSES))
        if not first.data.get("address"):
            found[hosts[0]] = _Raw({**first.data, "address": address}, LEGACY_ADDRESSES)
    return found


def _raw(profile: Owner) -> dict[str, _Raw]:
    mine = read_json(SERVERS_FILE).get(profile.key)
    if not isinstance(mine, dict):
        return _legacy(profile)
    return {str(h): _Raw(e) for h, e in mine.items() if isinstance(e, dict)}


def _slot_data(data: dict[str, Any], slot: int) -> dict[str, Any]:
    """What is stored of server `slot` on a box: its port and version (server 0's are the
    host's own fields, as before there were several)."""
    if slot == 0:
        return data
    slots = data.get("slots")
    found = slots.get(str(slot)) if isinstance(slots, dict) else None
    return found if isinstance(found, dict) else {}


def _record(host: str, raw: _Raw, slot: int = 0) -> ServerRecord:
    """The stored fields as a record: an address that is not one is refused, naming the file;
    a port or version of the wrong kind counts as not known."""
    d = raw.data
    if slot:  # the box's address and deploy time, this server's port and version
        own = _slot_data(d, slot)
        d = {"address": d.get("address"), "deployed_at": d.get("deployed_at"), **own}
    address = d.get("address")
    if not isinstance(address, str) or not address:
        address = None
    elif problem := address_problem(address):
        raise InputError(
            state_dir() / raw.source,
            None,
            f"{host}: the remembered address is {describe(address, problem)}; "
            "run `carla-launch address P` again",
        )
    port = d.get("port")
    version, deployed_at = d.get("version"), d.get("deployed_at")
    return ServerRecord(
        host,
        address,
        port
        if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535
        else None,
        version if isinstance(version, str) and version else None,
        deployed_at if isinstance(deployed_at, str) and deployed_at else None,
        slot,
    )


def server(profile: Owner, host: str, slot: int = 0) -> ServerRecord:
    """The record of server `slot` on `host` (all None when nothing is known)."""
    raw = _raw(profile).get(host)
    return _record(host, raw, slot) if raw is not None else ServerRecord(host, slot=slot)


def profile_address(profile: Owner) -> str | None:
    """The address variants are written for: the first host's, else the first host in the
    profile's order whose address is known (a deploy where the first host failed)."""
    raws = _raw(profile)
    for host in profile.remote.hosts:
        if host in raws and (found := _record(host, raws[host]).address):
            return found
    return None


def learn(
    profile: Owner,
    host: str,
    *,
    address: str | None = None,
    port: int | None = None,
    version: str | None = None,
    deployed_at: str | None = None,
    slot: int = 0,
) -> None:
    """Remember what was just learnt about server `slot` on `host` (the address and the
    deploy's time are the box's); what is not given is kept."""
    box = {"address": address, "deployed_at": deployed_at}
    own = {"port": port, "version": version}
    mine = {h: {k: v for k, v in r.data.items() if v is not None} for h, r in _raw(profile).items()}
    entry = {**mine.get(host, {}), **{k: v for k, v in box.items() if v is not None}}
    if slot == 0:
        entry.update({k: v for k, v in own.items() if v is not None})
    else:
        found = entry.get("slots")
        slots: dict[str, Any] = found if isinstance(found, dict) else {}
        old = _slot_data(entry, slot)
        mine_now = {**old, **{k: v for k, v in own.items() if v is not None}}
        entry["slots"] = {**slots, str(slot): mine_now}
    mine[host] = entry
    data = read_json(SERVERS_FILE)
    data[profile.key] = mine
    write_json(SERVERS_FILE, data)


# -- what `up` left running here (read by down, attach, status, logs) ---------------------------
#: A compose project name as `docker compose -p` accepts it; a window name tmux targets safely.
PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
WINDOW_RE = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class TunnelRecord:
    """The SSH tunnel an agent reaches its server through (`box/tunnel.py` Forward): local
    ports LP..LP+2 on `bind` here to N..N+2 on the box, chosen once by `up` so that a second
    `up` and `attach` reuse them; `why` it goes through one, in `up`'s words."""

    bind: str
    local_port: int
    remote_port: int
    why: str = ""


@dataclass(frozen=True)
class AgentRecord:
    """One agent `up` (or `attach`) started: the server it talks to (host, slot K), its compose
    project, the variant it runs with its environment and what followed `up P --`, and its
    window of the local tmux session. `down` removes exactly these projects.

    `host` None and `project` None: a record from before pairs, one agent of the profile's
    first host, started without `-p` (compose's own project name finds its containers).
    `tunnel`: the SSH tunnel its server is reached through (None: at its address)."""

    host: str | None
    slot: int
    project: str | None
    variant: Path
    env: dict[str, str]
    compose_args: tuple[str, ...] = ()
    window: str = ""
    tunnel: TunnelRecord | None = None


@dataclass(frozen=True)
class SessionRecord:
    """What `up` left for a profile: its tmux session and its agents (`agents`; one per
    server). `variant`, `env` and `compose_args` are the first agent's, as records before
    pairs held them; such a record (no `agents`) reads as that one agent (`pairs`)."""

    variant: Path
    session: str
    env: dict[str, str]
    compose_args: tuple[str, ...] = ()
    agents: tuple[AgentRecord, ...] | None = None  # None: a record from before pairs

    @property
    def pairs(self) -> tuple[AgentRecord, ...]:
        """Every agent: the recorded ones, or the one agent of a record from before pairs."""
        if self.agents is not None:
            return self.agents
        return (AgentRecord(None, 0, None, self.variant, self.env, self.compose_args),)

    @classmethod
    def of(cls, session: str, agents: Sequence[AgentRecord]) -> SessionRecord:
        """The record of these agents (at least one); the first one's fields on top, for
        readers of records from before pairs."""
        first = agents[0]
        return cls(first.variant, session, first.env, first.compose_args, tuple(agents))


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: str(v) for k, v in value.items() if isinstance(k, str)}


def _args(value: Any) -> tuple[str, ...]:
    """Each argument is one argv word of `docker compose up`, never a shell line; anything
    else than a list of strings counts as none."""
    ok = isinstance(value, list) and all(isinstance(a, str) for a in value)
    return tuple(value) if ok else ()


def _port(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65533
    return value if ok else None


def _tunnel(value: Any) -> TunnelRecord | None:
    """A stored tunnel, or None when it is not what `up` writes: its bind address lands in
    an ssh command line, so it must be an IP address (the docker bridge's), its ports a
    triple that fits below 65536."""
    if not isinstance(value, dict):
        return None
    bind = value.get("bind")
    lp, rp = _port(value.get("local_port")), _port(value.get("remote_port"))
    if not isinstance(bind, str) or lp is None or rp is None:
        return None
    try:
        ipaddress.ip_address(bind)
    except ValueError:
        return None
    why = value.get("why")
    return TunnelRecord(bind, lp, rp, why if isinstance(why, str) else "")


def _agent(entry: Any) -> AgentRecord | None:
    """One stored agent, or None when it is not what `up` writes (a project or window name
    that is not one, a slot that is not a number): such an agent is left alone, not run."""
    if not isinstance(entry, dict) or not entry.get("variant"):
        return None
    host, slot = entry.get("host"), entry.get("slot")
    project, window = entry.get("project"), entry.get("window") or ""
    if not isinstance(host, str) or not host:
        return None
    if not isinstance(slot, int) or isinstance(slot, bool) or slot < 0:
        return None
    if not isinstance(project, str) or not PROJECT_RE.fullmatch(project):
        return None
    if not isinstance(window, str) or (window and not WINDOW_RE.fullmatch(window)):
        return None
    return AgentRecord(
        host,
        slot,
        project,
        Path(str(entry["variant"])),
        _strings(entry.get("env")),
        _args(entry.get("compose_args")),
        window,
        _tunnel(entry.get("tunnel")),
    )


def session(profile: Owner) -> SessionRecord | None:
    """What the last `up` of this profile left (None: nothing). `env` holds only strings;
    a record from before pairs reads as its one agent (`SessionRecord.pairs`)."""
    entry = read_json(SESSIONS_FILE).get(str(profile.path))
    if not isinstance(entry, dict) or not entry.get("variant"):
        return None
    stored = entry.get("agents")
    agents = None
    if stored is not None:  # a list of what `up` writes; anything else: no agent to touch
        found = [_agent(a) for a in stored] if isinstance(stored, list) else []
        agents = tuple(a for a in found if a is not None)
    return SessionRecord(
        Path(str(entry["variant"])),
        str(entry.get("session") or ""),
        _strings(entry.get("env")),
        _args(entry.get("compose_args")),
        agents,
    )


def remember_session(profile: Owner, record: SessionRecord) -> None:
    """Keep what `up` (or `attach`) left; a record without agents is kept as one from before
    pairs (its one agent found by compose's own project name)."""
    entry: dict[str, Any] = {
        "variant": str(record.variant),
        "session": record.session,
        "env": record.env,
        "compose_args": list(record.compose_args),
    }
    if record.agents is not None:
        entry["agents"] = [
            {
                "host": a.host,
                "slot": a.slot,
                "project": a.project,
                "variant": str(a.variant),
                "env": a.env,
                "compose_args": list(a.compose_args),
                "window": a.window,
                "tunnel": asdict(a.tunnel) if a.tunnel is not None else None,
            }
            for a in record.agents
        ]
    data = read_json(SESSIONS_FILE)
    data[str(profile.path)] = entry
    write_json(SESSIONS_FILE, data)


def forget_session(profile: Owner) -> None:
    data = read_json(SESSIONS_FILE)
    if data.pop(str(profile.path), None) is not None:
        write_json(SESSIONS_FILE, data)
