"""What runs in the local tmux window: the server's pane, the agent's, the server's SSH tunnel
when its agent reaches it through one, optionally the GPUs'.

Pure: argv lists and pane specs only (the tunnel's reads the profile's ssh_config path, which
writes that file when it changed, as every ssh command line does); `session.ensure_session`
makes them real.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from carla_launcher import session as sess
from carla_launcher.box.tunnel import Forward, describe
from carla_launcher.profile import Profile
from carla_launcher.records import AgentRecord, TunnelRecord
from carla_launcher.stack.env import first_host


def agent_argv(
    variant: Path, compose_args: Sequence[str] = (), project: str | None = None
) -> list[str]:
    """`docker compose -p PROJECT -f VARIANT up`, then what the user gave after `up P --`
    (`--build`, a service): each an argv word, never joined into a shell line. The project
    (`stack/pairs.py`) keeps each agent's containers apart from every other agent's."""
    named = ["-p", project] if project is not None else []
    return ["docker", "compose", *named, "-f", str(variant), "up", *compose_args]


def server_pane_argv(profile: Profile, host: str, read_write: bool, slot: int = 0) -> list[str]:
    """`ssh -t box tmux attach -r ...`: server `slot`'s own tmux session, seen from here."""
    from carla_launcher.box.ssh import ssh_argv
    from carla_launcher.server.control import attach_command

    remote = attach_command(profile, slot)
    if read_write:  # read-only by default: a stray Ctrl-C must not kill the server
        remote = remote.replace("attach-session -r ", "attach-session ")
    return ssh_argv(profile, host, tty=True, command=remote)


def tunnel_pane_argv(profile: Profile, host: str, forward: Forward, slot: int = 0) -> list[str]:
    """The server's tunnel in its keep-alive loop (`box/tunnel.py`): ssh again a second after
    it ends, ended with the pane (HUP) or the session. A Slurm server's follows its job from
    node to node through the login node `host` (`follow_argv`)."""
    from carla_launcher.box.tunnel import follow_argv, keepalive_argv
    from carla_launcher.box.tunnel_local import tunnel_command

    if profile.server.mode == "slurm":
        from carla_launcher.box.ssh import ssh_config_file
        from carla_launcher.server.control import follow_commands
        from carla_launcher.server.slurm import TARGET_MARK

        ask, watch = follow_commands(profile, slot)
        config = str(ssh_config_file(profile))
        return follow_argv(config, host, forward, ask, watch, TARGET_MARK)
    return keepalive_argv(tunnel_command(profile, host, forward))


def forward_of(tunnel: TunnelRecord) -> Forward:
    return Forward(tunnel.bind, tunnel.local_port, tunnel.remote_port)


def gpu_argv(profile: Profile) -> list[str]:
    from carla_launcher.gpu.watch import watch_argv

    return watch_argv(str(profile.path))


def session_panes(
    profile: Profile,
    host: str,
    variant: Path | None,
    *,
    gpu: bool,
    read_write: bool,
    env: dict[str, str] | None = None,
    compose_args: Sequence[str] = (),
    project: str | None = None,
    slot: int = 0,
    tunnel: Forward | None = None,
) -> list[sess.PaneSpec]:
    """The panes of one pair's window: server `slot` on `host`, its agent and its tunnel (when
    `tunnel` is given); `env`, `compose_args` and `project` go to the agent's pane only."""
    return sess.layout(
        server_pane_argv(profile, host, read_write, slot),
        agent_argv(variant, compose_args, project) if variant else None,
        variant.parent if variant else profile.compose_dir,
        gpu_argv=gpu_argv(profile) if gpu else None,
        env=sess.pane_env(),
        server_title=f"CARLA server {slot} on {host}" if slot else f"CARLA server on {host}",
        agent_title=f"agent: {variant.name}" + (f" ({project})" if project else "")
        if variant
        else "agent",
        agent_env=env,
        tunnel_argv=tunnel_pane_argv(profile, host, tunnel, slot) if tunnel else None,
        tunnel_title=f"tunnel: {describe(tunnel, host)}" if tunnel else "tunnel",
    )


def pair_panes(
    profile: Profile, agent: AgentRecord, *, gpu: bool, read_write: bool
) -> list[sess.PaneSpec]:
    """The window of one recorded pair: its server's pane beside its agent's, as `up` ran it."""
    return session_panes(
        profile,
        agent.host or first_host(profile),
        agent.variant,
        gpu=gpu,
        read_write=read_write,
        env=agent.env,
        compose_args=agent.compose_args,
        project=agent.project,
        slot=agent.slot,
        tunnel=forward_of(agent.tunnel) if agent.tunnel else None,
    )
