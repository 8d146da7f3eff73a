"""The overview behind `carla-launch status`: the facts of every part of the stack in one
place, gathered in parallel.

`gather` collects (I/O, each part guarded so one failure does not hide the rest);
`problems` and `render` are pure. The server's address is the one recorded by whatever
learnt it (deploy, `up`, `address`), read from `records` like everyone else reads it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
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


def _server(profile: Profile, host: str) -> dict[str, Any]:
    from carla_launcher.server import control
    from carla_launcher.server.probe import NotReady, probe_version

    st = control.server_status(profile, host)
    try:
        address = known_address(profile, host)
    except InputError as e:  # a tampered record: say so, and still show the server
        address, st["address_error"] = None, str(e)
    st["address"] = address
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


def gather(profile: Profile) -> dict[str, Any]:
    host = profile.remote.host or "localhost"
    parts: dict[str, Part] = {
        "server": lambda: _server(profile, host),
        "gpu": lambda: _server_gpu(profile, host),
        "daemon": lambda: _daemon(profile),
        "agent": lambda: _agent(_remembered_variant(profile), compose_environ(profile)),
        "session": lambda: _session(profile),
    }

    def run(item: tuple[str, Part]) -> tuple[str, dict[str, Any]]:
        key, fn = item
        try:
            return key, fn()
        except (LauncherError, OSError, subprocess.SubprocessError, ValueError) as e:
            return key, {"error": str(e)}

    facts = dict(parallel.each(parts.items(), run))
    return {
        "profile": profile.name,
        "host": host,
        **facts,
        "address": facts["server"].get("address") or profile.remote.address,
    }


def problems(facts: dict[str, Any]) -> list[str]:
    """What should run and does not (exit code 1 when any). A server stopped on purpose
    (`server stop`, `down --server`) is not a problem; one that died or exited is."""
    from carla_launcher.server.control import notes, state_words

    out = []
    server = facts["server"]
    if server.get("error"):
        out.append(f"server: {server['error']}")
    elif not server.get("running") and not server.get("stopped"):
        out.append(
            f"server: not running: {state_words(server)}; "
            f"start it with `carla-launch server start {facts['profile']}`"
        )
    elif server.get("probe_error"):
        out.append(f"server: running but not answering ({server['probe_error']})")
    if not server.get("error"):  # restart loop gone, profile changed, a port held by another
        out += [f"server: {note}" for note in notes(server, facts["profile"])]
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


def render(facts: dict[str, Any]) -> list[str]:
    from carla_launcher.server.control import state_words

    s, d, a, se, g = (
        facts["server"],
        facts["daemon"],
        facts["agent"],
        facts["session"],
        facts["gpu"],
    )
    rows = []
    if s.get("error"):
        rows.append(("server", f"unknown: {s['error']}"))
    elif not s.get("running"):
        where = f"; port {s['port']}" if s.get("port") else ""
        rows.append(("server", f"no: {state_words(s)}{where}"))
    else:
        detail = f"{s.get('state')}" + (f", pid {s['pid']}" if s.get("pid") else "")
        if s.get("uptime_s") is not None:
            detail += f", up {int(s['uptime_s'])} s"
        detail += f", restarts {s.get('restarts') or 0}, port {s.get('port')}"
        if s.get("version"):
            detail += f", CARLA {s['version']}"
        if s.get("last_crash_line"):
            detail += f"; last crash: {s['last_crash_line']}"
        rows.append(("server", f"{_yes(s.get('running'))} ({detail})"))
    if g.get("error"):
        rows.append(("server GPU", f"unknown: {g['error']}"))
    elif g.get("gpus"):
        used = ", ".join(f"GPU{x['index']} {x['used_mib']}/{x['total_mib']} MiB" for x in g["gpus"])
        carla = f"CARLA {g['server_mib']} MiB; " if g.get("server_mib") is not None else ""
        rows.append(("server GPU", carla + used))
    else:
        rows.append(("server GPU", g.get("message") or "no NVIDIA GPU seen"))
    if facts.get("address"):
        rows.append(("address", str(facts["address"])))
    elif s.get("address_error"):
        rows.append(("address", f"unknown: {s['address_error']}"))
    else:
        rows.append(("address", "not known yet (carla-launch address P)"))
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
