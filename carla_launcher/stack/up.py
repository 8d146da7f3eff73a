"""`carla-launch up`: server running, variants synced, agent started, panes side by side.

The imperative shell that strings the parts together; each step reports what it did, so that
a second `up` can say "nothing to do". What it learns of the server (address, port, version)
is recorded, so that `status`, `env` and `sync` see the box `up` reached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carla_launcher import records
from carla_launcher import session as sess
from carla_launcher.box.ssh import RemoteError
from carla_launcher.profile import Profile
from carla_launcher.stack.env import agent_env, first_host, remembered_env
from carla_launcher.stack.panes import session_panes
from carla_launcher.stack.variants import (
    Say,
    address_origin,
    choose_variant,
    sync_variants,
    warn_shared_folder,
)
from carla_launcher.term import Board

Live = Callable[[], Board | None] | None  # opens the deploy's live rows (None: plain lines)


@dataclass
class UpReport:
    host: str
    address: str
    port: int
    version: str | None = None
    variant: Path | None = None
    done: list[str] = field(default_factory=list)  # what this run changed

    @property
    def changed(self) -> bool:
        return bool(self.done)


def ensure_server(
    profile: Profile, host: str, say: Say, report_done: list[str], live: Live = None
) -> dict[str, Any]:
    """Deploy when the box has nothing or the profile changed since, start when stopped; the
    server's status after it."""
    from carla_launcher.server import control

    st = control.server_status(profile, host)
    if not st.get("deployed"):
        say(f"{host}: not deployed yet: deploying (this downloads the CARLA package once)")
        _deploy(profile, say, live=live, hosts=[host])
        report_done.append("deployed the server")
        st = control.server_status(profile, host)
    elif redeploy_drifted(profile, [st], say, live):
        report_done.append("redeployed the launch script (the profile changed)")
        st = control.server_status(profile, host)
    elif not st.get("running"):
        control.start(profile, host)
        report_done.append("started the server")
        st = control.server_status(profile, host)
    return st


def redeploy_drifted(
    profile: Profile, statuses: list[dict[str, Any]], say: Say, live: Live = None
) -> set[str]:
    """Redeploy when the profile changed since a box's launch script was written (the deploy
    rewrites it and starts or restarts the server); the hosts that had drifted. Only those are
    deployed: another host's server, perhaps stopped on purpose, is left as it is."""
    from carla_launcher.server.drift import changed_since_deploy

    drifted = [st for st in statuses if st.get("drift")]
    for st in drifted:
        say(f"{st['host']}: {changed_since_deploy(st['drift'])}: redeploying the launch script")
    if drifted:
        _deploy(profile, say, probe=False, live=live, hosts=[st["host"] for st in drifted])
    return {st["host"] for st in drifted}


def _deploy(
    profile: Profile,
    say: Say,
    probe: bool = True,
    live: Live = None,
    hosts: list[str] | None = None,
) -> None:
    """The deploy, shown as live rows when `live` opens a board (a terminal), else as lines."""
    from carla_launcher.deploy.runner import deploy

    board = live() if live is not None else None
    try:
        report = deploy(profile, on_line=say, probe=probe, board=board, hosts=hosts)
    finally:
        if board is not None:
            board.close()
    failed = [h for h in report.hosts if not h.ok]
    if failed:
        raise RemoteError(f"deploy failed on {failed[0].host}: {failed[0].error}")


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
    """`compose_args` go to `docker compose up` (and restart the agent's pane); `live` opens the
    deploy's progress board when `up` has to deploy."""
    from carla_launcher.box.address import agent_address
    from carla_launcher.server import control

    host = first_host(profile)
    done: list[str] = []
    known = profile.remote.address or records.server(profile, host).address  # before a deploy
    st = ensure_server(profile, host, say, done, live)
    address = agent_address(profile, host)  # the deploy's, else found over SSH (and remembered)
    port = int(st.get("port") or profile.server.port)
    version = control.wait_started(profile, host, address, port, progress)
    records.learn(profile, host, address=address, port=port, version=version)
    report = UpReport(host, address, port, version, done=done)
    warn_shared_folder(profile, address, say)
    origin = address_origin(profile, None if known else host)
    synced = sync_variants(profile, address, port, say, origin)
    done += synced.lines
    variant = choose_variant(profile.compose_dir, synced.variants, compose)
    report.variant = variant
    server = sess.tmux_server()
    name = sess.session_name(profile.key)
    env = agent_env(address, port)
    # an env-mode variant stays the same when the address moves: its agent must restart anyway
    moved = remembered_env(profile) not in (None, env)
    rerun = variant in synced.written or moved or bool(compose_args)
    restart = {"agent"} if rerun else set()
    panes = session_panes(
        profile,
        host,
        variant,
        gpu=gpu,
        read_write=read_write,
        env=env,
        compose_args=tuple(compose_args),
    )
    result = sess.ensure_session(server, name, panes, restart=restart)
    if result.created:
        done.append("opened panes: " + ", ".join(result.created))
    if result.respawned:
        done.append("restarted panes: " + ", ".join(result.respawned))
    records.remember_session(
        profile, records.SessionRecord(variant, name, env, tuple(compose_args))
    )
    return report
