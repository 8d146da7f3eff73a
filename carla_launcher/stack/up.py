"""`carla-launch up`: every server running, variants synced, one agent per server, each pair
in its window of the local session.

The imperative shell that strings the parts together: the servers (`stack/servers.py`), the
variants (`stack/variants.py`), the pairs (`stack/pairs.py`, pure) and their agents. Each step
reports what it did, so that a second `up` can say "nothing to do". What it learns of each
server (address, port, version) is recorded, and so is every agent it starts, so that
`status`, `env`, `down` and `logs` see what `up` reached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from carla_launcher import records
from carla_launcher import session as sess
from carla_launcher.box.ssh import RemoteError
from carla_launcher.errors import InputError
from carla_launcher.profile import Profile
from carla_launcher.stack import agents
from carla_launcher.stack.pairs import (
    Pair,
    agent_record,
    env_mode_refusal,
    left_over,
    pairs_of,
    tunnel_refusal,
)
from carla_launcher.stack.panes import pair_panes
from carla_launcher.stack.servers import Live, answering, ensure_servers
from carla_launcher.stack.servers import ensure_server as ensure_server  # for one server's callers
from carla_launcher.stack.servers import redeploy_drifted as redeploy_drifted  # `server start`
from carla_launcher.stack.tunnels import EarlyReach, early_targets
from carla_launcher.stack.variants import (
    Say,
    address_origin,
    choose_variant,
    refuse_shared_folder,
    sync_variants,
)


@dataclass
class UpReport:
    """What `up` reached: every pair, the variant their agents run, the tmux session, what
    this run changed and what it left out (a host or server that failed, in one line each)."""

    pairs: list[Pair]
    session: str
    variant: Path | None = None
    done: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.done)


def refuse_early(profile: Profile) -> None:
    """What `up` refuses before it touches a box (exit 2): several servers declared with
    literal variants, tunnels (`remote.tunnel: true`) with literal variants, and another
    profile's variants in the same folder."""
    from carla_launcher.server.slots import count

    declared = len(profile.remote.hosts) * (count(profile.server) or 1)
    line = env_mode_refusal(profile, declared) or tunnel_refusal(
        profile, declared if profile.remote.tunnel is True else 0
    )
    if line:
        raise InputError(profile.path, None, line, "compose.address")
    refuse_shared_folder(profile)


def up(
    profile: Profile,
    compose: str | None,
    say: Say,
    *,
    gpu: bool = False,
    read_write: bool = False,
    progress: Callable[[float, str], None] | None = None,
    compose_args: Sequence[str] = (),
    live: Live = None,
) -> UpReport:
    """`compose_args` go to `docker compose up` (and restart the agents' panes); `live` opens
    the deploy's progress board when `up` has to deploy."""
    refuse_early(profile)
    hosts = list(profile.remote.hosts)
    known = {h: profile.remote.address or records.server(profile, h).address for h in hosts}
    found = records.session(profile)
    before = list(found.pairs) if found is not None else []
    recorded = {(a.host, a.slot): a for a in before if a.host is not None}
    reopened = any(a.tunnel for a in before)  # a second `up` keeps its tunnels: nothing to ask
    early = EarlyReach([] if reopened else early_targets(profile, known))
    try:
        ensured = ensure_servers(profile, hosts, say, live)
        left = [f"{h}: {why}" for h, why in ensured.failed.items()] + ensured.lines
        answered = answering(
            profile,
            ensured.statuses,
            progress,
            ensured.said,
            recorded,
            read_write=read_write,
            reach=early.reach,
        )
    finally:
        early.close()
    reached = answered.reached
    left += answered.lines
    for line in left:
        say(f"warning: {line}; its agent is not started")
    if not reached:
        raise RemoteError(left[0] if left else "no server of the profile is running")
    refusal = env_mode_refusal(profile, len(reached))  # `gpus: all` found several
    if refusal:
        raise InputError(profile.path, None, refusal, "compose.address")
    pairs = pairs_of(profile, reached)
    first = reached[0]
    origin = address_origin(profile, None if known.get(first.host) else first.host)
    synced = sync_variants(profile, *first.agent_address, say, origin)
    done = [*ensured.done, *answered.done, *synced.lines]
    variant = choose_variant(profile.compose_dir, synced.variants, compose)
    name = sess.session_name(profile.key)
    asked = {h: {int(st.get("slot") or 0) for st in sts} for h, sts in ensured.statuses.items()}
    gone, kept = left_over(before, pairs, asked, hosts)
    done += _take_down(gone, {p.window for p in pairs}, name, say)
    started = _start_agents(
        profile,
        pairs,
        variant,
        {a.project: a for a in before},
        rerun=variant in synced.written,
        compose_args=tuple(compose_args),
        gpu=gpu,
        read_write=read_write,
    )
    done += started.lines
    records.remember_session(profile, records.SessionRecord.of(name, [*started.agents, *kept]))
    return UpReport(pairs, name, variant, done, left)


def _take_down(
    gone: Sequence[records.AgentRecord], windows: set[str], name: str, say: Say
) -> list[str]:
    """Remove the agents whose server is gone, and their windows (not one a pair now uses)."""
    done = []
    for agent, err in zip(gone, agents.down_all(gone), strict=True):
        where = f"{agent.host} server {agent.slot}" if agent.host else "the profile's server"
        if err is not None:
            say(f"warning: docker compose down of the agent of {where}: {err}")
            continue
        done.append(f"removed the agent of {where} (that server is not there any more)")
        window = agent.window or sess.WINDOW
        if window not in windows:
            sess.kill_window(sess.tmux_server(), name, window)
    return done


@dataclass
class Started:
    agents: list[records.AgentRecord]
    lines: list[str]


def _start_agents(
    profile: Profile,
    pairs: Sequence[Pair],
    variant: Path,
    before: dict[str | None, records.AgentRecord],
    *,
    rerun: bool,
    compose_args: tuple[str, ...],
    gpu: bool,
    read_write: bool,
) -> Started:
    """Each pair's window: its server's pane beside its agent's. A running agent is kept
    unless its variant was written now, its server moved, or `up P --` passed arguments;
    kept, it keeps the arguments it was started with."""
    server = sess.tmux_server()
    name = sess.session_name(profile.key)
    out = Started([], [])
    opened: list[str] = []
    created: list[str] = []
    respawned: list[str] = []
    closed: list[str] = []
    for n, pair in enumerate(pairs):
        old = before.get(pair.project)
        again = (
            rerun
            or bool(compose_args)
            or old is None
            or old.env != pair.env
            or old.variant.resolve() != variant.resolve()
        )
        args = compose_args if again or old is None else old.compose_args
        agent = agent_record(pair, variant, args)
        panes = pair_panes(profile, agent, gpu=gpu and n == 0, read_write=read_write)
        restart = {"agent"} if again else set()
        # a tunnel of an earlier `up` closes: its agent reaches the address now
        close = {"tunnel"} if pair.server.tunnel is None else set()
        result = sess.ensure_session(server, name, panes, restart, pair.window, close)
        where = f" ({pair.window})" if len(pairs) > 1 else ""
        if len(pairs) > 1 and len(result.created) == len(panes):
            opened.append(pair.window)  # a new window: said once, not pane by pane
        else:
            created += [r + where for r in result.created]
        respawned += [r + where for r in result.respawned]
        if result.closed:
            closed.append(pair.label)
        out.agents.append(agent)
    if opened:
        out.lines.append("opened windows (a server beside its agent): " + ", ".join(opened))
    if created:
        out.lines.append("opened panes: " + ", ".join(created))
    if respawned:
        out.lines.append("restarted panes: " + ", ".join(respawned))
    if closed:
        out.lines.append(
            "closed the SSH tunnel (its agent reaches the address): " + ", ".join(closed)
        )
    return out
