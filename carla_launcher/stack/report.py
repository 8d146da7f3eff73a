"""What `carla-launch status` says of the facts `overview.gather` collected. Pure.

`pairs` puts each server beside the agent `up` started for it and the SSH tunnel that agent
goes through (one shape however many); `problems` lists what should run and does not (exit 1
when any), naming the host and the server they are about; `render` is the table. A profile
with one server keeps the table it always had; with several, each server and each agent gets
its own row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _slot(server: dict[str, Any]) -> int | None:
    slot = server.get("slot")
    return slot if isinstance(slot, int) else None


def pairs(facts: dict[str, Any]) -> list[dict[str, Any]]:
    """Every server of every host with its agent (None: none started), then the agents whose
    server is not there (its host could not be asked, or the server is gone): {host, slot,
    gpu, port, address, server, agent, tunnel}. The agent's project and window are in
    `agent`; `tunnel` is the SSH tunnel its agent goes through (None: none), with its pane's
    state and whether it is up (its pane runs and all three of its ports listen)."""
    agents = {(a["host"], a["slot"]): a for a in facts.get("agents", [])}
    windows = (facts.get("session") or {}).get("windows") or {}
    out = []
    for h in facts["hosts"]:
        for st in h.get("servers") or [h["server"]]:
            slot = _slot(st)
            if slot is None:  # the host could not be asked: its agents come below
                continue
            out.append(_pair(h, slot, st, agents.pop((h["host"], slot), None), windows))
    by_host = {h["host"]: h for h in facts["hosts"]}
    for (host, slot), agent in agents.items():
        h = by_host.get(host, {"host": host, "address": None, "server": {}})
        failed = h["server"] if h["server"].get("error") else None
        out.append(_pair(h, slot, failed, agent, windows))
    return out


def _pair(
    h: dict[str, Any],
    slot: int,
    server: dict[str, Any] | None,
    agent: dict[str, Any] | None,
    windows: dict[str, Any],
) -> dict[str, Any]:
    tunnel = agent.get("tunnel") if agent else None
    if tunnel is not None and agent is not None:
        pane = (windows.get(str(agent.get("window"))) or {}).get("tunnel")
        alive = pane.get("alive") if pane else None
        listens = len(tunnel.get("listening") or []) == len(tunnel.get("ports") or [0])
        tunnel = {**tunnel, "pane_alive": alive, "up": bool(alive) and listens}
    return {
        "host": h["host"],
        "slot": slot,
        "gpu": server.get("gpu") if server else None,
        "port": server.get("port") if server else None,
        "address": h.get("address"),
        "server": server,
        "agent": {k: v for k, v in agent.items() if k not in ("host", "slot", "tunnel")}
        if agent
        else None,
        "tunnel": tunnel,
    }


def tunnel_problem(tunnel: dict[str, Any]) -> str | None:
    """Why a pair's tunnel is down, in a few words (None: it is up)."""
    if tunnel.get("up"):
        return None
    if tunnel.get("pane_alive") is None:
        return "its pane is gone"
    if not tunnel.get("pane_alive"):
        return "its pane ended"
    ports = tunnel.get("ports") or []
    return (
        f"nothing listens on {tunnel.get('bind')}:{ports[0]}-{ports[-1]} yet (its ssh is "
        "reconnecting, or cannot log in: its pane says why)"
        if ports
        else "no ports"
    )


def _many_on(h: dict[str, Any]) -> bool:
    return len(h.get("servers") or []) > 1


def _server_label(h: dict[str, Any], slot: int | None, pool: bool) -> str:
    """`server` for a profile with one server; the host in a pool; K where a host has
    several: rows and problems must say which server they are about."""
    parts = ["server"]
    if pool:
        parts.append(h["host"])
    if _many_on(h) and slot is not None:
        parts.append(str(slot))
    return " ".join(parts)


def _agent_label(p: dict[str, Any], many: bool, pool: bool, what: str = "agent") -> str:
    if not many:
        return what
    return f"{what} {p['host']} {p['slot']}" if pool else f"{what} {p['slot']}"


def _tunnel_label(p: dict[str, Any], many: bool, pool: bool) -> str:
    return _agent_label(p, many, pool, "tunnel")


def problems(facts: dict[str, Any]) -> list[str]:
    """What should run and does not (exit code 1 when any), per server of each host. A server
    stopped on purpose (`server stop`, `down --server`) is not a problem; one that died or
    exited is. A server asked through its agent's tunnel while that tunnel is down is not
    said not to answer: the tunnel's line says why."""
    from carla_launcher.server.state import notes, state_words

    out = []
    hosts = facts["hosts"]
    pool = len(hosts) > 1
    found = pairs(facts)
    cut = {(p["host"], p["slot"]) for p in found if p["tunnel"] and not p["tunnel"]["up"]}
    for h in hosts:
        only = f" --host {h['host']}" if pool else ""
        for server in h.get("servers") or [h["server"]]:
            slot = _slot(server)
            name = _server_label(h, slot, pool)
            one = f" --only {slot}" if _many_on(h) else ""
            if server.get("error"):
                out.append(f"{name}: {server['error']}")
            elif not server.get("running") and not server.get("stopped"):
                out.append(
                    f"{name}: not running: {state_words(server)}; "
                    f"start it with `carla-launch server start {facts['profile']}{only}{one}`"
                )
            elif server.get("probe_error") and (h["host"], slot) not in cut:
                out.append(f"{name}: running but not answering ({server['probe_error']})")
            if not server.get("error"):  # restart loop gone, profile changed, a foreign port
                out += [f"{name}: {note}" for note in notes(server, facts["profile"])]
    session = facts["session"]
    windows = session.get("windows") or {}
    many = len([p for p in found if p["agent"]]) > 1
    for p in found:
        agent = p["agent"]
        if agent is None or agent.get("window") not in windows:
            continue  # no agent, or its window closed: nothing that should run
        if not agent.get("running"):
            out.append(
                f"{_agent_label(p, many, pool)}: its containers are not all running"
                + (f" ({agent['error']})" if agent.get("error") else "")
            )
        why = tunnel_problem(p["tunnel"]) if p["tunnel"] else None
        if why:
            out.append(
                f"{_tunnel_label(p, many, pool)}: down: {why}; `carla-launch attach "
                f"{facts['profile']}` starts it again"
            )
    for window, panes in windows.items():
        where = f" of window {window}" if len(windows) > 1 else ""
        for role, pane in panes.items():
            if role == "tunnel":  # said with its pair, above
                continue
            if not pane.get("alive"):
                out.append(
                    f"session: the {role} pane{where} ended (exit status {pane.get('exit_status')})"
                )
    daemon = facts["daemon"]
    if daemon.get("current") is False:
        out.append(
            "variants: some are stale"
            + (" (the daemon is not running)" if not daemon.get("running") else "")
        )
    return out


def _yes(flag: Any) -> str:
    return "yes" if flag else "no"


def _server_words(s: dict[str, Any]) -> str:
    from carla_launcher.server.slurm import job_words
    from carla_launcher.server.state import state_words

    if s.get("error"):
        return f"unknown: {s['error']}"
    gpu = f"GPU {s['gpu']}, " if s.get("gpu") is not None else ""
    if not s.get("running"):
        where = f"; port {s['port']}" if s.get("port") else ""
        return f"no: {state_words(s)}{where}"
    detail = f"{gpu}{s.get('state')}" + (f", pid {s['pid']}" if s.get("pid") else "")
    if s.get("uptime_s") is not None:
        detail += f", up {int(s['uptime_s'])} s"
    detail += f", restarts {s.get('restarts') or 0}, port {s.get('port')}"
    if s.get("version"):
        detail += f", CARLA {s['version']}"
    if s.get("job"):  # server.mode: slurm
        detail += f"; {job_words(s['job'])}"
    if s.get("last_crash_line"):
        detail += f"; last crash: {s['last_crash_line']}"
    return f"{_yes(s.get('running'))} ({detail})"


def _gpu_words(g: dict[str, Any]) -> str:
    if g.get("error"):
        return f"unknown: {g['error']}"
    if g.get("gpus"):
        used = ", ".join(f"GPU{x['index']} {x['used_mib']}/{x['total_mib']} MiB" for x in g["gpus"])
        carla = f"CARLA {g['server_mib']} MiB; " if g.get("server_mib") is not None else ""
        return carla + used
    return str(g.get("message") or "no NVIDIA GPU seen")


def _address_words(h: dict[str, Any], profile: str, pool: bool) -> str:
    if h.get("address"):
        return str(h["address"])
    if h["server"].get("address_error"):
        return f"unknown: {h['server']['address_error']}"
    only = f" --host {h['host']}" if pool else ""
    return f"not known yet (carla-launch address {profile}{only})"


def _agent_words(a: dict[str, Any], many: bool) -> str:
    states = (
        ", ".join(f"{c['service']} {c['state']}" for c in a.get("containers", []))
        or a.get("error")
        or "no containers"
    )
    project = f" (project {a['project']})" if many and a.get("project") else ""
    variant = Path(a["variant"]).name if a.get("variant") else "?"
    return f"{variant}{project}: {states}"


def _tunnel_words(p: dict[str, Any]) -> str:
    """`172.17.0.1:2000 -> gpu-box:2000, up (3 of 3 ports listen, pane running; why)`."""
    t = p["tunnel"]
    bind = f"[{t['bind']}]" if ":" in str(t["bind"]) else t["bind"]
    where = f"{bind}:{t['local_port']} -> {p['host']}:{t['remote_port']}"
    pane = {None: "no pane", True: "pane running", False: "pane ended"}[t.get("pane_alive")]
    listening = f"{len(t.get('listening') or [])} of {len(t.get('ports') or [])} ports listen"
    why = f"; {t['why']}" if t.get("why") else ""
    return f"{where}, {'up' if t.get('up') else 'down'} ({listening}, {pane}{why})"


def _session_words(se: dict[str, Any]) -> str:
    if not se.get("exists"):
        return f"{se.get('name')}: none"
    windows = se.get("windows") or {}

    def panes(found: dict[str, Any]) -> str:
        return ", ".join(f"{r} {'running' if p['alive'] else 'ended'}" for r, p in found.items())

    if len(windows) == 1:
        return f"{se['name']}: {panes(next(iter(windows.values())))}"
    return f"{se['name']}: " + "; ".join(f"{w} ({panes(p)})" for w, p in windows.items())


def render(facts: dict[str, Any]) -> list[str]:
    """The table: per host its servers, GPUs and address (named in a pool), then the daemon,
    every agent and the session here."""
    d, se = facts["daemon"], facts["session"]
    hosts = facts["hosts"]
    pool = len(hosts) > 1
    rows = []
    for h in hosts:
        for server in h.get("servers") or [h["server"]]:
            rows.append((_server_label(h, _slot(server), pool), _server_words(server)))
        label = f" {h['host']}" if pool else ""
        rows.append((f"server GPU{label}", _gpu_words(h["gpu"])))
        rows.append((f"address{label}", _address_words(h, facts["profile"], pool)))
    if d.get("error"):
        rows.append(("daemon", f"unknown: {d['error']}"))
    else:
        cur = {True: "all variants current", False: "variants stale", None: "variants not checked"}[
            d.get("current")
        ]
        run = f"running (pid {d['pid']})" if d.get("running") else "not running"
        rows.append(("daemon", f"{run}; {cur}"))
    started = [p for p in pairs(facts) if p["agent"]]
    for p in started:
        rows.append((_agent_label(p, len(started) > 1, pool), _agent_words(p["agent"], True)))
        if p["tunnel"]:
            rows.append((_tunnel_label(p, len(started) > 1, pool), _tunnel_words(p)))
    if not started:
        rows.append(("agent", "not started by carla-launch up"))
    rows.append(("session", _session_words(se)))
    width = max(len(k) for k, _ in rows)
    return [f"{k.ljust(width)}  {v}" for k, v in rows]
