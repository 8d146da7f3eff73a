"""`carla-launch down`: the agent's containers down and the local window closed; with
`--server`, the servers too. What `up` recorded of the session is forgotten."""

from __future__ import annotations

from carla_launcher import proc, records
from carla_launcher import session as sess
from carla_launcher.profile import Profile
from carla_launcher.stack.env import compose_environ
from carla_launcher.stack.variants import Say


def down(profile: Profile, stop_server: bool, say: Say) -> list[str]:
    """What was taken down, one line each (empty: nothing was running)."""
    done = []
    found = records.session(profile)
    variant = found.variant if found is not None else None
    if variant is not None and variant.is_file():
        result = proc.run(
            ["docker", "compose", "-f", str(variant), "down"],
            None,
            cwd=str(variant.parent),
            env=compose_environ(profile),
        )
        if not result.ok:
            lines = result.stderr.strip().splitlines()
            last = lines[-1] if lines else f"exit status {result.rc}"
            say(f"warning: docker compose down: {last}")
        else:
            done.append(f"agent containers of {variant.name} removed")
    if sess.kill_session(sess.tmux_server(), sess.session_name(profile.key)):
        done.append("local session closed")
    if stop_server:
        from carla_launcher.server import control

        for host in profile.remote.hosts:
            if control.stop(profile, host, by="carla-launch down --server"):
                done.append(f"server on {host} stopped")
    records.forget_session(profile)
    return done
