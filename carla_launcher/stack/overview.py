"""The overview behind `carla-launch status`: the facts of every part of the stack in one
place, gathered in parallel, for every host of a pool.

`gather` collects (I/O, each part and each host guarded so one failure does not hide the
rest); `problems` and `render` are pure. The server's address is the one recorded by whatever
learnt it (deploy, `up`, `address`), read from `records` like everyone else reads it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from carla_launcher import parallel, proc, records
from carla_launcher import session as sess
from carla_launcher.errors import InputError, LauncherError
from carla_launcher.profile import Profile
from carla_launcher.stack.env import compose_environ


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


def _server(profile: Profile, host: str, address: str | None) -> dict[str, Any]:
    """The server's status on `host` and, when it runs and its address is known, the CARLA
    version it answers with."""
    from carla_launcher.server import control
    from carla_launcher.server.probe import NotReady, probe_version

    st = control.server_status(profile, host)
    st["version"] = None
    if st.get("running") and address:
        try:
            st["version"] = probe_version(
                address, int(st.get("port") or profile.server.port), timeout=3
            )
        except NotReady as e:
            st["probe_error"] = str(e)
    return st


def _server_gpu(profile: Profile, host: str) -> dict[str, Any]:
    from carla_launcher.gpu.remote import box_report
    from carla_launcher.gpu.vram import server_vram

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


def _agent(variant: Path | None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The containers of the variant `up` ran; `env` is what an env-mode variant reads."""
    if variant is None:
        return {"variant": None, "containers": [], "running": False}
    result = proc.run(
        ["docker", "compose", "-f", str(variant), "ps", "-a", "--format", "json"],
        30,
        cwd=str(variant.parent),
        env=env,
    )
    if not result.ok:
        last = (result.stderr.strip().splitlines() or ["docker compose ps failed"])[-1]
        return {"variant": str(variant), "containers": [], "running": False, "error": last}
    containers = []
    for line in result.stdout.splitlines():  # compose prints one JSON object per line
        line = line.strip()
        if not line:
            continue
        data = json.loads(line)
        for c in data if isinstance(data, list) else [data]:
            containers.append(
                {
                    "service": c.get("Service"),
                    "name": c.get("Name"),
                    "state": c.get("State"),
                    "status": c.get("Status"),
                }
            )
    return {
        "variant": str(variant),
        "containers": containers,
        "running": bool(containers) and all(c["state"] == "running" for c in containers),
    }


def _session(profile: Profile) -> dict[str, Any]:
    server = sess.tmux_server()
    name = sess.session_name(profile.key)
    found = sess.find_session(server, name)
    if found is None:
        return {"name": name, "exists": False, "panes": {}}
    return {"name": name, "exists": True, "panes": sess.pane_states(found)}


def _daemon(profile: Profile) -> dict[str, Any]:
    from carla_launcher.daemon.status import daemon_status

    return daemon_status(profile.compose_dir)


def _remembered_variant(profile: Profile) -> Path | None:
    found = records.session(profile)
    return found.variant if found is not None else None


Part = Callable[[], dict[str, Any]]
GUARDED = (LauncherError, OSError, subprocess.SubprocessError, ValueError)


def _guarded(fn: Part, host: str = "") -> dict[str, Any]:
    """`fn()`, or `{"error": ...}` when it fails: one part (one host) never hides the rest."""
    try:
        return fn()
    except GUARDED as e:
        return {"error": str(e).removeprefix(f"{host}: ") if host else str(e)}


def gather(profile: Profile) -> dict[str, Any]:
    """Every host's server and GPUs, and the daemon, the agent and the session here, all asked
    at once: {profile, hosts: [{host, address, server, gpu}], daemon, agent, session}."""
    hosts = list(profile.remote.hosts) or ["localhost"]
    known = {h: _address(profile, h) for h in hosts}  # the state file only: no SSH
    parts: list[tuple[str, str, Part]] = []
    for h in hosts:
        parts.append(("server", h, partial(_server, profile, h, known[h][0])))
        parts.append(("gpu", h, partial(_server_gpu, profile, h)))
    parts += [
        ("daemon", "", lambda: _daemon(profile)),
        ("agent", "", lambda: _agent(_remembered_variant(profile), compose_environ(profile))),
        ("session", "", lambda: _session(profile)),
    ]
    done = parallel.each(parts, lambda part: _guarded(part[2], part[1]))
    got = {(name, host): facts for (name, host, _), facts in zip(parts, done, strict=True)}
    return {
        "profile": profile.name,
        "hosts": [_host(h, known[h], got[("server", h)], got[("gpu", h)]) for h in hosts],
        "daemon": got[("daemon", "")],
        "agent": got[("agent", "")],
        "session": got[("session", "")],
    }


def _host(
    host: str, known: tuple[str | None, str | None], server: dict[str, Any], gpu: dict[str, Any]
) -> dict[str, Any]:
    """One host's facts; a refused address record is said beside its server."""
    address, refused = known
    server = {k: v for k, v in server.items() if k != "host"}
    if refused:
        server["address_error"] = refused
    return {"host": host, "address": address, "server": server, "gpu": gpu}


def _label(word: str, host: dict[str, Any], pool: bool) -> str:
    """`server` for a profile with one host; `server HOST` in a pool, where rows and problems
    must say which host they are about."""
    return f"{word} {host['host']}" if pool else word


def problems(facts: dict[str, Any]) -> list[str]:
    """What should run and does not (exit code 1 when any), per host of a pool. A server
    stopped on purpose (`server stop`, `down --server`) is not a problem; one that died or
    exited is."""
    from carla_launcher.server.state import notes, state_words

    out = []
    hosts = facts["hosts"]
    pool = len(hosts) > 1
    for h in hosts:
        server, name = h["server"], _label("server", h, pool)
        only = f" --host {h['host']}" if pool else ""
        if server.get("error"):
            out.append(f"{name}: {server['error']}")
        elif not server.get("running") and not server.get("stopped"):
            out.append(
                f"{name}: not running: {state_words(server)}; "
                f"start it with `carla-launch server start {facts['profile']}{only}`"
            )
        elif server.get("probe_error"):
            out.append(f"{name}: running but not answering ({server['probe_error']})")
        if not server.get("error"):  # restart loop gone, profile changed, a port held by another
            out += [f"{name}: {note}" for note in notes(server, facts["profile"])]
    if facts["session"].get("exists"):
        agent = facts["agent"]
        if not agent.get("running"):
            out.append(
                "agent: its containers are not all running"
                + (f" ({agent['error']})" if agent.get("error") else "")
            )
        for role, pane in facts["session"]["panes"].items():
            if not pane.get("alive"):
                out.append(
                    f"session: the {role} pane ended (exit status {pane.get('exit_status')})"
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
    from carla_launcher.server.state import state_words

    if s.get("error"):
        return f"unknown: {s['error']}"
    if not s.get("running"):
        where = f"; port {s['port']}" if s.get("port") else ""
        return f"no: {state_words(s)}{where}"
    detail = f"{s.get('state')}" + (f", pid {s['pid']}" if s.get("pid") else "")
    if s.get("uptime_s") is not None:
        detail += f", up {int(s['uptime_s'])} s"
    detail += f", restarts {s.get('restarts') or 0}, port {s.get('port')}"
    if s.get("version"):
        detail += f", CARLA {s['version']}"
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


def render(facts: dict[str, Any]) -> list[str]:
    """The table: server, server GPU and address rows for each host (named in a pool), then
    the daemon, the agent and the session here."""
    d, a, se = facts["daemon"], facts["agent"], facts["session"]
    hosts = facts["hosts"]
    pool = len(hosts) > 1
    rows = []
    for h in hosts:
        rows.append((_label("server", h, pool), _server_words(h["server"])))
        rows.append((_label("server GPU", h, pool), _gpu_words(h["gpu"])))
        rows.append((_label("address", h, pool), _address_words(h, facts["profile"], pool)))
    if d.get("error"):
        rows.append(("daemon", f"unknown: {d['error']}"))
    else:
        cur = {True: "all variants current", False: "variants stale", None: "variants not checked"}[
            d.get("current")
        ]
        run = f"running (pid {d['pid']})" if d.get("running") else "not running"
        rows.append(("daemon", f"{run}; {cur}"))
    if a.get("variant"):
        states = (
            ", ".join(f"{c['service']} {c['state']}" for c in a.get("containers", []))
            or a.get("error")
            or "no containers"
        )
        rows.append(("agent", f"{Path(a['variant']).name}: {states}"))
    else:
        rows.append(("agent", "not started by carla-launch up"))
    if se.get("exists"):
        panes = ", ".join(
            f"{r} {'running' if p['alive'] else 'ended'}" for r, p in se["panes"].items()
        )
        rows.append(("session", f"{se['name']}: {panes}"))
    else:
        rows.append(("session", f"{se.get('name')}: none"))
    width = max(len(k) for k, _ in rows)
    return [f"{k.ljust(width)}  {v}" for k, v in rows]
