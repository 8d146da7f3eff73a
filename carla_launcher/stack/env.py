"""The agent's environment: CARLA_LAUNCH_HOST/PORT (and the URL form of the host).

An env-mode variant (`compose.address: env`) reads the box from these when it runs, so
`up`, `attach`, `down`, `status` and `carla-launch env` must all agree on them: they are
built here, once, from an address and a port.
"""

from __future__ import annotations

import os

from carla_launcher import records
from carla_launcher.compose.hosts import ENV_HOST, ENV_PORT, ENV_URL_HOST
from carla_launcher.errors import InputError, LauncherError
from carla_launcher.netaddr import address_problem, for_url
from carla_launcher.profile import Profile


def first_host(profile: Profile) -> str:
    """The box `up`, `attach` and `env` use: the profile's first host (reading a profile
    refuses one without any, so this only guards the type)."""
    if profile.remote.host is None:
        raise InputError(profile.path, None, "no host to run the server on", "remote.host")
    return profile.remote.host


def agent_env(address: str, port: int) -> dict[str, str]:
    """What an env-mode variant reads; passed in the literal mode too, where nothing reads
    it, so that either kind of variant runs. URLs and host:port pairs in the variant read the
    URL form ([fd00::2] for IPv6)."""
    return {ENV_HOST: address, ENV_PORT: str(port), ENV_URL_HOST: for_url(address)}


def remembered_env(profile: Profile) -> dict[str, str] | None:
    """CARLA_LAUNCH_HOST/PORT that `up` gave the agent (None: nothing remembered, or not
    what `up` writes: then it is found again rather than passed on)."""
    found = records.session(profile)
    env = found.env if found is not None else {}
    if not {ENV_HOST, ENV_PORT} <= set(env):
        return None
    host, port = env[ENV_HOST], env[ENV_PORT]
    if address_problem(host) or not port.isdigit():
        return None
    return agent_env(host, int(port))


def known_env(profile: Profile, host: str | None = None) -> dict[str, str]:
    """CARLA_LAUNCH_HOST/PORT as `up` finds them, without deploying anything: remote.address,
    else the recorded or discovered address; the recorded port (it moves on a busy box), else
    server.port."""
    from carla_launcher.box.address import agent_address

    host = host or first_host(profile)
    port = records.server(profile, host).port or profile.server.port
    return agent_env(agent_address(profile, host), port)


def known_env_or_none(profile: Profile, host: str) -> dict[str, str]:
    """known_env, or none when it cannot be found: an env-mode agent then says itself that
    CARLA_LAUNCH_HOST is not set (attach must not fail for the agent's sake)."""
    try:
        return known_env(profile, host)
    except LauncherError:
        return {}


def compose_environ(profile: Profile) -> dict[str, str]:
    """The environment for `docker compose -f VARIANT ...` of what `up` started (down, ps):
    an env-mode variant does not even load without CARLA_LAUNCH_HOST."""
    return {**os.environ, **(remembered_env(profile) or {})}
