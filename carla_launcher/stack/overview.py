"""The overview behind `carla-launch status`: the facts of every part of the stack in one
place, gathered in parallel, for every server of every host and every agent `up` started.

`gather` collects (I/O, each part and each host guarded so one failure does not hide the
rest); `problems` and `render` (`stack/report.py`) are pure. The servers' address is the one
recorded by whatever learnt it (deploy, `up`, `address`), read from `records` like everyone
else reads it; a server whose agent goes through an SSH tunnel is asked through it, and the
tunnel's local ports are looked at here (`stack/tunnels.py` facts). Each agent is asked about
by its own compose project (`stack/agents.py`), so another profile's containers never show
up here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from functools import partial
from typing import Any

from carla_launcher import parallel, records
from carla_launcher import session as sess
from carla_launcher.errors import InputError, LauncherError
from carla_launcher.profile import Profile
from carla_launcher.records import AgentRecord
from carla_launcher.stack import agents, tunnels
from carla_launcher.stack.report import problems, render

__all__ = ["gather", "problems", "render"]


def known_address(profile: Profile, host: str) -> str | None:
    """The address agents use for `host`, as far as it is known here (no SSH)."""
    return profile.remote.address or records.server(profile, host).address


def _address(profile: Profile, host: str) -> tuple[str | None, str | None]:
    """(the known address of `host`, None) or, for a tampered record, (None, why it is
    refused): the server is still shown."""
    try:
        return known_address(profile, host), None
    except InputError as e:
        return None, str(e)


def _servers(
    profile: Profile, host: str, address: str | None, through: dict[int, tuple[str, int]]
) -> list[dict[str, Any]]:
    """Every server of the profile on `host` (one round trip) and, for each one that runs,
    the CARLA version it answers with (all asked at once): through its agent's SSH tunnel
    (`through`: slot -> the tunnel's end here), else at its address when that is known.
    Without a tunnel of `up`, `remote.tunnel: true` asks nothing (the address is not how
    agents reach it), and `auto` does not count an address that does not answer as a
    problem (`up` would go through a tunnel)."""
    from carla_launcher.server import control
    from carla_launcher.server.probe import NotReady, probe_version

    found = control.host_servers(profile, host)
    setting = profile.remote.tunnel

    def version(st: dict[str, Any]) -> dict[str, Any]:
        st = {k: v for k, v in st.items() if k != "host"}
        st["version"] = None
        slot = int(st.get("slot") or 0)
        port = int(st.get("port") or profile.server.port)
        tunnel = through.get(slot)
        at = tunnel or ((address, port) if address and setting is not True else None)
        if st.get("running") and at is not None:
            try:
                st["version"] = probe_version(at[0], at[1], timeout=3)
            except NotReady as e:
                if tunnel is not None or setting is False:
                    st["probe_error"] = str(e)
        return st

    return parallel.each(found, version)


def _server_gpu(profile: Profile, host: str) -> dict[str, Any]:
    from carla_launcher.gpu.remote import box_report
    from carla_launcher.gpu.vram import server_vram

    if profile.server.mode == "slurm":  # a login node: the GPUs are the compute nodes'
        return {
            "status": "not-asked",
            "message": "the compute nodes' (Slurm gives each job its own): not read from the "
            "login node",
            "server_mib": None,
            "gpus": [],
        }

    report = box_report(profile, host, timeout=15)
    count, mib = server_vram(report)
    return {
        "status": str(getattr(report.status, "value", report.status)),
        "message": report.message,
        "server_mib": mib if count else None,
        "gpus": [
            {"index": g.index, "name": g.name, "used_mib": g.used_mib, "total_mib": g.total_mib}
            for g in report.gpus
        ],
    }


def _session(profile: Profile) -> dict[str, Any]:
    """The local session: its windows and, per window, its panes' states."""
    server = sess.tmux_server()
    name = sess.session_name(profile.key)
    found = sess.find_session(server, name)
    if found is None:
        return {"name": name, "exists": False, "windows": {}}
    return {"name": name, "exists": True, "windows": sess.window_states(found)}


def _daemon(profile: Profile) -> dict[str, Any]:
    from carla_launcher.daemon.status import daemon_status

    return daemon_status(profile.compose_dir)


def _recorded(profile: Profile) -> list[AgentRecord]:
    found = records.session(profile)
    return list(found.pairs) if found is not None else []


Part = Callable[[], Any]
GUARDED = (LauncherError, OSError, subprocess.SubprocessError, ValueError)


def _guarded(fn: Part, host: str = "") -> Any:
    """`fn()`, or `{"error": ...}` when it fails: one part (one host) never hides the rest."""
    try:
        return fn()
    except GUARDED as e:
        return {"error": str(e).removeprefix(f"{host}: ") if host else str(e)}


def gather(profile: Profile) -> dict[str, Any]:
    """Every host's servers and GPUs, every recorded agent's containers, the daemon and the
    session here, all asked at once: {profile, hosts: [{host, address, server, servers, gpu}],
    daemon, agent (all agents' containers together), session, pairs (`report.pairs`)}."""
    hosts = list(profile.remote.hosts) or ["localhost"]
    known = {h: _address(profile, h) for h in hosts}  # the state file only: no SSH
    recorded = _recorded(profile)
    first = hosts[0]
    through: dict[str, dict[int, tuple[str, int]]] = {h: {} for h in hosts}
    for a in recorded:
        if a.tunnel is not None:
            through.setdefault(a.host or first, {})[a.slot] = (a.tunnel.bind, a.tunnel.local_port)
    parts: list[tuple[str, str, Part]] = []
    for h in hosts:
        parts.append(("servers", h, partial(_servers, profile, h, known[h][0], through[h])))
        parts.append(("gpu", h, partial(_server_gpu, profile, h)))
    parts += [(f"agent {n}", "", partial(agents.agent_state, a)) for n, a in enumerate(recorded)]
    parts += [
        ("daemon", "", lambda: _daemon(profile)),
        ("session", "", lambda: _session(profile)),
        ("tunnels", "", lambda: tunnels.facts(recorded)),
    ]
    done = parallel.each(parts, lambda part: _guarded(part[2], part[1]))
    got = {(name, host): facts for (name, host, _), facts in zip(parts, done, strict=True)}
    states = [got[(f"agent {n}", "")] for n in range(len(recorded))]
    found = got[("tunnels", "")]
    tunnel_facts = found if isinstance(found, list) else [None] * len(recorded)
    return {
        "profile": profile.name,
        "hosts": [_host(h, known[h], got[("servers", h)], got[("gpu", h)]) for h in hosts],
        "daemon": got[("daemon", "")],
        "agent": _all_agents(states),
        "session": got[("session", "")],
        "agents": [
            {
                "host": a.host or first,
                "slot": a.slot,
                "window": a.window or sess.WINDOW,
                **st,
                "tunnel": tunnel,
            }
            for a, st, tunnel in zip(recorded, states, tunnel_facts, strict=True)
        ],
    }


def _all_agents(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Every agent's containers together, in the shape of the one agent before pairs."""
    if not states:
        return {"variant": None, "containers": [], "running": False}
    errors = [s["error"] for s in states if s.get("error")]
    out: dict[str, Any] = {
        "variant": states[0].get("variant"),
        "containers": [c for s in states for c in s.get("containers", [])],
        "running": all(s.get("running") for s in states),
    }
    if errors:
        out["error"] = errors[0]
    return out


def _host(
    host: str,
    known: tuple[str | None, str | None],
    servers: list[dict[str, Any]] | dict[str, Any],
    gpu: dict[str, Any],
) -> dict[str, Any]:
    """One host's facts: `servers` every server of it, `server` the first (as before there
    were several); a refused address record is said beside each server."""
    address, refused = known
    found = servers if isinstance(servers, list) else [servers]  # a failed host: its error
    if refused:
        found = [{**s, "address_error": refused} for s in found]
    return {"host": host, "address": address, "server": found[0], "servers": found, "gpu": gpu}
