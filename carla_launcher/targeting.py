"""Which address (and port) the distributed variants point at: the flags, else the profile.

The address is data wherever it comes from (netaddr); in the env address mode there is none:
variants read it when they run, so nothing here needs to know one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from carla_launcher.compose.keys import Target
from carla_launcher.errors import InputError
from carla_launcher.netaddr import address_problem, describe

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

# profile.py (ruamel) and records.py (the state folder) are imported where they are used:
# `sync --check --address X` needs neither.


def resolve_target(
    address: str | None,
    profile_ref: str | None,
    port: int | None,
    simulator: str | None,
    start: Path | None = None,
    address_env: bool = False,
) -> tuple[Target, Profile | None]:
    """`--address` wins over the profile; with neither, the default profile gives it.

    `--address-env` or the profile's `compose.address: env` ask for no address at all, so
    `sync --check` works where no box is known (CI, a fresh clone)."""
    if address is not None and address_env:
        raise InputError(
            None,
            None,
            "cannot be used with --address: a variant either holds the "
            "address or reads it from CARLA_LAUNCH_HOST",
            "--address-env",
        )
    if address is not None and (problem := address_problem(address)):
        raise InputError(None, None, describe(address, problem), "--address")
    profile = None
    if address is None or profile_ref is not None:
        from carla_launcher.profile import load_profile

        try:
            profile = load_profile(profile_ref, start)
        except InputError as e:
            if profile_ref is None and (address is not None or address_env):
                pass  # no profile named and none found: the flags are all we need
            elif profile_ref is None and e.path is None:
                raise InputError(
                    None, None, f"no address: pass --address ADDR or --profile P ({e.message})"
                ) from None
            else:
                raise
    if simulator is None and profile is not None:
        simulator = profile.compose.simulator
    if address is None and (address_env or (profile is not None and profile.compose.env_mode)):
        if port is not None:
            raise InputError(
                None,
                None,
                "in the env address mode the port comes from "
                "CARLA_LAUNCH_PORT when the variant runs, not from --port",
                "--port",
            )
        return Target(None, None, simulator, env=True), profile
    if address is None:
        if profile is None:  # load_profile above raised unless an address flag was given
            raise InputError(None, None, "no address: pass --address ADDR or --profile P")
        from carla_launcher import records

        address = profile.remote.address or records.profile_address(profile)
        if not address:
            raise InputError(
                profile.path,
                None,
                "the address of the box is not known yet: set it here, pass --address ADDR, "
                f"or run `carla-launch address {profile.name}` to discover it",
                "remote.address",
            )
    if port is None and profile is not None:
        port = profile.server.port  # compared with the simulator's own port when deriving
    return Target(address, port, simulator), profile


# -- two profiles, one compose folder --------------------------------------------------------------
def sibling_profiles(profile: Profile) -> list[Profile]:
    """The other profiles of the same profiles/ folder that load (a broken one is its own
    problem, reported when it is used)."""
    from carla_launcher.profile import PROFILE_DIR, read_profile

    folder = profile.path.parent
    if folder.name != PROFILE_DIR:
        return []
    found = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        if path.absolute() == profile.path:
            continue
        try:
            found.append(read_profile(path))
        except InputError:
            continue
    return found


def sharing_warning(
    me: Profile, my_address: str | None, others: list[tuple[Profile, str | None]]
) -> str | None:
    """One line when another profile writes the same variants for another box (each `up`
    would rewrite them for its own box), suggesting the env address mode; else None.

    `others` pairs each profile with its known address (None: not known yet). A warning, not a
    refusal: using one box after the other from one folder is legitimate, and the profiles
    alone cannot tell whether both run at once."""
    clashes = []
    for other, address in others:
        if other.compose_dir.resolve() != me.compose_dir.resolve():
            continue
        if me.compose.env_mode and other.compose.env_mode:
            continue
        if me.compose.env_mode or other.compose.env_mode:
            clashes.append(f"{other.path.name} (compose.address: {other.compose.address})")
        elif address is not None and my_address is not None and address != my_address:
            clashes.append(f"{other.path.name} ({address})")
        elif address is None and set(other.remote.hosts) != set(me.remote.hosts):
            clashes.append(f"{other.path.name} (box {other.remote.host})")
    if not clashes:
        return None
    return (
        f"{', '.join(clashes)} also write{'s' if len(clashes) == 1 else ''} the variants of "
        f"{me.compose.dir} for another box, so each `up` rewrites them; set "
        "`compose.address: env` in these profiles to share one variant"
    )
