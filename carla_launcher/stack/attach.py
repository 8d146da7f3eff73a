"""`carla-launch attach`: the window of `up` again, without deploying or syncing anything.

Panes that still run are kept, so attaching twice never restarts the agent; a dead agent pane
is started again as `up` started it: its variant, its environment and what followed `up P --`.
"""

from __future__ import annotations

from carla_launcher import records
from carla_launcher import session as sess
from carla_launcher.profile import Profile
from carla_launcher.stack.env import first_host, known_env_or_none, remembered_env
from carla_launcher.stack.panes import session_panes
from carla_launcher.stack.variants import choose_variant, existing_variants


def attach_session(
    profile: Profile, compose: str | None, *, gpu: bool, read_write: bool
) -> sess.EnsureResult:
    """Build (or complete) the session: the variant `up` ran, else the one COMPOSE names. The
    arguments `up` passed to `docker compose up` go with `up`'s variant only: a service name
    of one compose file may not exist in another."""
    host = first_host(profile)
    found = records.session(profile)
    variant = found.variant if found is not None else None
    if variant is None or compose:
        variants = existing_variants(profile.compose_dir)
        variant = choose_variant(profile.compose_dir, variants, compose) if variants else None
    ran = found.variant if found is not None else None
    same = ran is not None and variant is not None and variant.resolve() == ran.resolve()
    compose_args = found.compose_args if found is not None and same else ()
    env = (remembered_env(profile) or known_env_or_none(profile, host)) if variant else None
    return sess.ensure_session(
        sess.tmux_server(),
        sess.session_name(profile.key),
        session_panes(
            profile,
            host,
            variant,
            gpu=gpu,
            read_write=read_write,
            env=env,
            compose_args=compose_args,
        ),
    )
