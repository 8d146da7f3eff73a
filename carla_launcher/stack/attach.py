"""`carla-launch attach`: the windows of `up` again, without deploying or syncing anything.

It starts nothing that `down` does not know: it refuses before building anything when no
server of the profile runs (`commands/attach.py` refuses first when there is no terminal to
attach to), and every agent it starts is recorded as `up` records its own. Panes that still
run are kept, so attaching twice never restarts an agent; a dead agent pane is started again
as `up` started it: its project, its variant, its environment and what followed `up P --`;
so is a dead tunnel pane, on the local ports `up` chose for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carla_launcher import records
from carla_launcher import session as sess
from carla_launcher.errors import InputError, LauncherError
from carla_launcher.profile import Profile
from carla_launcher.records import AgentRecord
from carla_launcher.stack.env import known_env_or_none
from carla_launcher.stack.pairs import (
    Reached,
    agent_record,
    env_mode_refusal,
    pairs_of,
    several,
    window_name,
)
from carla_launcher.stack.panes import pair_panes, session_panes
from carla_launcher.stack.variants import choose_variant, existing_variants


class NotRunning(LauncherError):
    """No server of the profile runs: a fact about the box, not bad input (exit 1)."""

    exit_code = 1


@dataclass
class Attached:
    """The session and, per window, what `ensure_session` did there."""

    session: str
    windows: dict[str, sess.EnsureResult] = field(default_factory=dict)


def running_servers(profile: Profile) -> list[dict[str, Any]]:
    """Every running server of the profile (every host asked at once); NotRunning, naming why
    each host has none, when there is none at all."""
    from carla_launcher.server import control
    from carla_launcher.server.state import state_words

    statuses = control.servers(profile)
    running = [st for st in statuses if st.get("running")]
    if not running:
        why = "; ".join(
            f"{st['host']}: {st.get('error') or state_words(st)}"
            for st in statuses
            if st.get("slot") in (0, None)
        )
        raise NotRunning(
            f"no server of profile {profile.name} is running ({why}): "
            f"start it with `carla-launch up {profile.name}`"
        )
    return running


def _recorded(profile: Profile) -> dict[tuple[str, int], AgentRecord]:
    """The recorded agents by (host, slot); one from before pairs is the first host's server."""
    found = records.session(profile)
    first = profile.remote.hosts[0] if profile.remote.hosts else ""
    return {(a.host or first, a.slot): a for a in (found.pairs if found else ())}


def _variant(profile: Profile, recorded: AgentRecord | None, compose: str | None) -> Path | None:
    """The variant `up` ran, else the one COMPOSE names (or the folder's only one)."""
    if recorded is not None and not compose:
        return recorded.variant
    variants = existing_variants(profile.compose_dir)
    return choose_variant(profile.compose_dir, variants, compose) if variants else None


def _new_agent(
    profile: Profile, st: dict[str, Any], variant: Path, taken: list[int]
) -> AgentRecord | None:
    """The agent `up` would start for this server (its project, window and env, its SSH
    tunnel when `remote.tunnel` says so), for a server without a recorded agent; None when
    it can be reached neither way (its window then shows the server alone: an agent without
    its server's address would talk to no one). `taken`: the tunnels' local ports so far."""
    from carla_launcher.stack.tunnels import forward_for_attach

    host, slot = st["host"], int(st.get("slot") or 0)
    env = known_env_or_none(profile, host, slot)
    port = int(st.get("port") or env.get("CARLA_LAUNCH_PORT") or profile.server.port)
    address = env.get("CARLA_LAUNCH_HOST")
    try:
        tunnel = forward_for_attach(profile, st, address, taken)
    except LauncherError:  # no docker bridge: the agent could not run either
        tunnel = None
    if tunnel is None and address is None:
        return None
    fwd, why = tunnel if tunnel is not None else (None, "")
    if fwd is not None:
        taken.append(fwd.local_port)
    reached = Reached(host, slot, st.get("gpu"), address, port, tunnel=fwd, why=why)
    (pair,) = pairs_of(profile, [reached])
    return agent_record(pair, variant)


def attach_session(
    profile: Profile, compose: str | None, *, gpu: bool, read_write: bool
) -> Attached:
    """Build (or complete) the session: a window per running server, its agent as `up` ran it
    (another compose file named with COMPOSE: without `up`'s arguments, which may name a
    service that file lacks). Raises NotRunning before building anything."""
    running = running_servers(profile)
    refusal = env_mode_refusal(profile, len(running))
    if refusal:
        raise InputError(profile.path, None, refusal, "compose.address")
    recorded = _recorded(profile)
    out = Attached(sess.session_name(profile.key))
    server = sess.tmux_server()
    agents: list[AgentRecord] = []
    taken = [a.tunnel.local_port for a in recorded.values() if a.tunnel is not None]
    for n, st in enumerate(running):
        host, slot = st["host"], int(st.get("slot") or 0)
        old = recorded.pop((host, slot), None)
        agent = _agent(profile, st, old, _variant(profile, old, compose), taken)
        first = gpu and n == 0  # the GPU watch: in the first window
        if agent is None:  # no variant yet, or no address: the server's pane only
            panes = session_panes(profile, host, None, gpu=first, read_write=read_write, slot=slot)
        else:
            panes = pair_panes(profile, agent, gpu=first, read_write=read_write)
        named = agent or old
        window = named.window if named is not None else ""
        window = window or window_name(host, slot, named=several(profile))
        result = sess.ensure_session(server, out.session, panes, window=window)
        out.windows[window] = result
        started = {"agent"} & {*result.created, *result.respawned}
        if agent is not None and (started or old is None):
            agents.append(agent)
        elif old is not None:
            agents.append(old)  # still running as it was started
    agents += recorded.values()  # of servers not running now: `down` still removes them
    if agents:
        records.remember_session(profile, records.SessionRecord.of(out.session, agents))
    return out


def _agent(
    profile: Profile,
    st: dict[str, Any],
    old: AgentRecord | None,
    variant: Path | None,
    taken: list[int],
) -> AgentRecord | None:
    """The agent of this server's window: the recorded one; with another variant (COMPOSE),
    the same project without `up`'s arguments; for a server without one, what `up` would
    start (None: no variant yet, or no address)."""
    if variant is None:
        return old
    if old is None:
        return _new_agent(profile, st, variant, taken)
    if variant.resolve() == old.variant.resolve():
        return old
    return AgentRecord(
        old.host, old.slot, old.project, variant, old.env, (), old.window, old.tunnel
    )
