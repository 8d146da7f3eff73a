"""An agent's environment: CARLA_LAUNCH_HOST/PORT of its server (and the URL form of the host).

An env-mode variant (`compose.address: env`) reads the server from these when it runs, so
`up`, `attach`, `down`, `status` and `carla-launch env` must all agree on them: they are
built here, once, from an address and a port (and, per agent, the container-name suffix of
`stack/pairs.py`), and read back from the records through `checked_env`.
"""

from __future__ import annotations

import re

from carla_launcher import records
from carla_launcher.compose.hosts import ENV_HOST, ENV_PORT, ENV_SUFFIX, ENV_URL_HOST
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


def checked_env(env: dict[str, str]) -> dict[str, str]:
    """What `up` gave an agent, as far as it is what `up` writes (read back from a record
    outside the profile): a tampered address, port or container-name suffix is left out."""
    out: dict[str, str] = {}
    host, port = env.get(ENV_HOST), env.get(ENV_PORT)
    if host is not None and port is not None and not address_problem(host) and port.isdigit():
        out.update(agent_env(host, int(port)))
    suffix = env.get(ENV_SUFFIX)
    if suffix is not None and re.fullmatch(r"-[a-z0-9][a-z0-9_-]*", suffix):
        out[ENV_SUFFIX] = suffix
    return out


def known_env(profile: Profile, host: str | None = None, slot: int = 0) -> dict[str, str]:
    """CARLA_LAUNCH_HOST/PORT of server `slot` on `host` as `up` finds them, without deploying
    anything: the end of its SSH tunnel when `up` opened one (host.docker.internal and the
    local port); else remote.address, else the recorded or discovered address; the recorded
    port (it moves on a busy box), else the one asked for (server.port, plus 3 per server
    before it)."""
    from carla_launcher.box.address import agent_address
    from carla_launcher.box.ports import STRIDE
    from carla_launcher.box.tunnel import AGENT_HOST

    host = host or first_host(profile)
    found = records.session(profile)
    for a in found.pairs if found is not None else ():
        if a.tunnel is not None and (a.host or first_host(profile), a.slot) == (host, slot):
            return agent_env(AGENT_HOST, a.tunnel.local_port)
    port = records.server(profile, host, slot).port or profile.server.port + STRIDE * slot
    return agent_env(agent_address(profile, host), port)


def known_env_or_none(profile: Profile, host: str, slot: int = 0) -> dict[str, str]:
    """known_env, or none when it cannot be found: an env-mode agent then says itself that
    CARLA_LAUNCH_HOST is not set (attach must not fail for the agent's sake)."""
    try:
        return known_env(profile, host, slot)
    except LauncherError:
        return {}
