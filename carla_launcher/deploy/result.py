"""The deploy child's request and result (pure): which hosts it covers, and the JSON of each
host (`deploy --json`, `schemas/deploy.schema.json`).

`deploy.py` runs pyinfra and fills these in as it goes (connect, plan, steps, probe); the
shapes are kept apart so that they are read in one place, without pyinfra or gevent.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from carla_launcher.box.facts import BoxFacts
from carla_launcher.deploy.plan import HostPlan, PlannedServer
from carla_launcher.profile import Profile


def only_hosts(profile: Profile, hosts: list[str] | None) -> Profile:
    """The profile narrowed to some of its hosts (`server start --host H` redeploys H only: the
    others, perhaps stopped on purpose, are left as they are); None: all of them."""
    if not hosts:
        return profile
    kept = tuple(h for h in profile.remote.hosts if h in hosts)
    return replace(profile, remote=replace(profile.remote, hosts=kept))


def blank_host(name: str) -> dict[str, Any]:
    """A host's result before anything ran: not ok, nothing changed."""
    return {
        "host": name,
        "ok": False,
        "error": None,
        "changed": [],
        "steps": [],
        "warnings": [],
    }


def planned(facts: BoxFacts, address: str | None, plan: HostPlan) -> dict[str, Any]:
    """What the plan adds to a host's result: its facts, address, steps and servers."""
    return {
        "facts": facts.to_json(),
        "address": address,
        "port": plan.port,
        "warnings": plan.warnings,
        "root": plan.root,
        "session_dir": plan.session_dir,
        "log": plan.log_path,
        "steps": [{"name": s.name, "changes": s.changes, "why": s.why} for s in plan.steps],
        "servers": [server_json(s) for s in plan.servers],
    }


def server_json(s: PlannedServer) -> dict[str, Any]:
    """One server of a host's result (`deploy --json`: hosts[].servers[])."""
    return {
        "slot": s.slot,
        "gpu": s.gpu,
        "port": s.port,
        "version": None,
        "tmux_session": s.session,
        "log": s.log_path,
        "error": None,
    }


def gpu_line(facts: BoxFacts) -> str:
    """What the deploy says of the box's GPUs, first, on every host."""
    if not facts.gpus:
        return "no NVIDIA GPU found (nvidia-smi missing or failing)"
    gpus = "; ".join(
        f"{g.index}: {g.name}, {g.used_mib}/{g.total_mib} MiB used" for g in facts.gpus
    )
    return f"{len(facts.gpus)} GPU(s), driver {facts.gpus[0].driver}: {gpus}"
