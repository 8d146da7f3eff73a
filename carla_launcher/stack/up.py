"""`carla-launch up`: server running, variants synced, agent started, panes side by side.

The imperative shell that strings the parts together; each step reports what it did, so that
a second `up` can say "nothing to do". What it learns of the server (address, port, version)
is recorded, so that `status`, `env` and `sync` see the box `up` reached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carla_launcher import records
from carla_launcher import session as sess
from carla_launcher.errors import LauncherError, display_path
from carla_launcher.profile import Profile
from carla_launcher.stack.env import agent_env, first_host, remembered_env
from carla_launcher.stack.panes import session_panes
from carla_launcher.stack.variants import Say, choose_variant, sync_variants, warn_shared_folder


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


def ensure_server(profile: Profile, host: str, say: Say, report_done: list[str]) -> dict[str, Any]:
    """Deploy when the box has nothing, start when stopped; the server's status after it."""
    from carla_launcher.deploy.runner import deploy
    from carla_launcher.server import control

    st = control.server_status(profile, host)
    if not st.get("deployed"):
        say(f"{host}: not deployed yet: deploying (this downloads the CARLA package once)")
        report = deploy(profile, on_line=say)
        failed = [h for h in report.hosts if not h.ok]
        if failed:
            raise LauncherError(f"deploy failed on {failed[0].host}: {failed[0].error}")
        report_done.append("deployed the server")
        st = control.server_status(profile, host)
    elif not st.get("running"):
        control.start(profile, host)
        report_done.append("started the server")
        st = control.server_status(profile, host)
    return st


def up(
    profile: Profile,
    compose: str | None,
    say: Say,
    *,
    gpu: bool = False,
    read_write: bool = False,
    progress: Callable[[float, str], None] | None = None,
) -> UpReport:
    from carla_launcher.box.address import agent_address
    from carla_launcher.server import control

    host = first_host(profile)
    done: list[str] = []
    st = ensure_server(profile, host, say, done)
    address = agent_address(profile, host)
    port = int(st.get("port") or profile.server.port)
    version = control.wait_started(profile, host, address, port, progress)
    records.learn(profile, host, address=address, port=port, version=version)
    report = UpReport(host, address, port, version, done=done)
    warn_shared_folder(profile, address, say)
    variants, written = sync_variants(profile, address, port, say)
    if written:
        done.append("wrote " + ", ".join(written))
    variant = choose_variant(profile.compose_dir, variants, compose)
    report.variant = variant
    server = sess.tmux_server()
    name = sess.session_name(profile.key)
    env = agent_env(address, port)
    # an env-mode variant stays the same when the address moves: its agent must restart anyway
    moved = remembered_env(profile) not in (None, env)
    restart = {"agent"} if display_path(variant) in written or moved else set()
    panes = session_panes(profile, host, variant, gpu=gpu, read_write=read_write, env=env)
    result = sess.ensure_session(server, name, panes, restart=restart)
    if result.created:
        done.append("opened panes: " + ", ".join(result.created))
    if result.respawned:
        done.append("restarted panes: " + ", ".join(result.respawned))
    records.remember_session(profile, records.SessionRecord(variant, name, env))
    return report
