"""What runs in the local tmux window: the server's pane, the agent's, optionally the GPUs'.

Pure: argv lists and pane specs only; `session.ensure_session` makes them real.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from carla_launcher import session as sess
from carla_launcher.profile import Profile


def agent_argv(variant: Path, compose_args: Sequence[str] = ()) -> list[str]:
    """`docker compose -f VARIANT up`, then what the user gave after `up P --` (`--build`, a
    service): each an argv word, never joined into a shell line."""
    return ["docker", "compose", "-f", str(variant), "up", *compose_args]


def server_pane_argv(profile: Profile, host: str, read_write: bool) -> list[str]:
    """`ssh -t box tmux attach -r ...`: the server's own tmux session, seen from here."""
    from carla_launcher.box.ssh import ssh_argv
    from carla_launcher.server.control import attach_command

    remote = attach_command(profile)
    if read_write:  # read-only by default: a stray Ctrl-C must not kill the server
        remote = remote.replace("attach-session -r ", "attach-session ")
    return ssh_argv(profile, host, tty=True, command=remote)


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
) -> list[sess.PaneSpec]:
    """The panes of the window; `env` and `compose_args` go to the agent's pane only."""
    return sess.layout(
        server_pane_argv(profile, host, read_write),
        agent_argv(variant, compose_args) if variant else None,
        variant.parent if variant else profile.compose_dir,
        gpu_argv=gpu_argv(profile) if gpu else None,
        env=sess.pane_env(),
        server_title=f"CARLA server on {host}",
        agent_title=f"agent: {variant.name}" if variant else "agent",
        agent_env=env,
    )
