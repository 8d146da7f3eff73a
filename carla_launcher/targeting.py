"""Which address (and port) the distributed variants point at: the flags, else the profile, else
the one remembered for its box; for `sync`, also where it came from, and when none is known,
none: the variants are compared for the address they hold (compose/held.py).

The address is data wherever it comes from (netaddr); in the env address mode there is none:
variants read it when they run, so nothing here needs to know one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from carla_launcher.compose.keys import Target
from carla_launcher.errors import InputError, display_path
from carla_launcher.netaddr import address_problem, describe

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

# profile.py (ruamel) and records.py (the state folder) are imported where they are used:
# `sync --check --address X` needs neither.


# where a held target's address comes from (compose/service.py: `held`)
HELD = "address kept from the variants; none is set or remembered here"


@dataclass(frozen=True)
class Resolved:
    """A target, the profile it came from, and where its address came from, as `sync` says it
    ("address from profiles/gpu.yaml")."""

    target: Target
    profile: Profile | None
    origin: str


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
    r = _resolve(address, profile_ref, port, simulator, start, address_env, held_ok=False)
    return r.target, r.profile


def sync_targets(
    address: str | None,
    profile_ref: str | None,
    port: int | None,
    simulator: str | None,
    start: Path | None = None,
    address_env: bool = False,
    folder: Path | None = None,
) -> list[Resolved]:
    """What `sync` works for: as `resolve_target`, except that it never fails for want of an
    address (the variants are then compared for the address they already hold: a `held`
    target, see compose/service.py) and, with no profile named and no default among several,
    it works for each profile (a pre-commit hook in a repository with two boxes): each one
    whose compose folder is `folder`, when one is named."""
    if address is None and profile_ref is None and not address_env:
        others = _undecided(start)
        if others and folder is not None:  # a folder named: the profiles that write it
            here = Path(folder).resolve()
            others = [p for p in others if p.compose_dir.resolve() == here]
            if not others:
                return [Resolved(Target(None, port, simulator), None, HELD)]
        if others:
            return [_for_profile(p, port, simulator, held_ok=True) for p in others]
    return [_resolve(address, profile_ref, port, simulator, start, address_env, held_ok=True)]


def _undecided(start: Path | None) -> list[Profile]:
    """The profiles of the profiles/ folder when no profile is chosen without a name (several,
    none the default); else none."""
    from carla_launcher.profile import PROFILE_DIR, find_profile, read_profile

    try:
        find_profile(None, start)
    except InputError:
        here = (start or Path.cwd()).absolute()
        for folder in (here, *here.parents):
            if (folder / PROFILE_DIR).is_dir():
                pdir = folder / PROFILE_DIR
                paths = sorted([*pdir.glob("*.yaml"), *pdir.glob("*.yml")])
                return [read_profile(p) for p in paths] if len(paths) > 1 else []
    return []


def _resolve(
    address: str | None,
    profile_ref: str | None,
    port: int | None,
    simulator: str | None,
    start: Path | None,
    address_env: bool,
    held_ok: bool,
) -> Resolved:
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
            elif profile_ref is None and e.path is None and held_ok:
                pass  # no profiles at all: the variants hold the address
            elif profile_ref is None and e.path is None:
                raise InputError(
                    None, None, f"no address: pass --address ADDR or --profile P ({e.message})"
                ) from None
            else:
                raise
    if address is not None:
        if simulator is None and profile is not None:
            simulator = profile.compose.simulator
        if port is None and profile is not None:
            port = profile.server.port  # compared with the simulator's own port when deriving
        return Resolved(Target(address, port, simulator), profile, "address from --address")
    if address_env:
        if simulator is None and profile is not None:
            simulator = profile.compose.simulator
        return Resolved(_env_target(port, simulator), profile, "env address mode: --address-env")
    if profile is None:  # held_ok, and no profiles/ folder here or above
        return Resolved(Target(None, port, simulator), None, HELD)
    return _for_profile(profile, port, simulator, held_ok)


def profile_origin(profile: Profile) -> str:
    """Where a loaded profile's address comes from, in `sync`'s words (`up` says it too)."""
    return _for_profile(profile, None, None, held_ok=True).origin


def _for_profile(
    profile: Profile, port: int | None, simulator: str | None, held_ok: bool
) -> Resolved:
    """The target of one profile: env mode, its address, the remembered one, else (held_ok)
    the address its variants hold."""
    where = display_path(profile.path)
    simulator = simulator if simulator is not None else profile.compose.simulator
    if profile.compose.env_mode:
        return Resolved(_env_target(port, simulator), profile, f"env address mode: {where}")
    if profile.remote.address:
        origin = f"address from {where}"
        address: str | None = profile.remote.address
    else:
        from carla_launcher import records

        address = records.profile_address(profile)
        origin = f"address remembered for profile {profile.name}"
    if not address:
        if held_ok:
            return Resolved(Target(None, port, simulator), profile, HELD)
        raise InputError(
            profile.path,
            None,
            "the address of the box is not known yet: set it here, pass --address ADDR, "
            f"or run `carla-launch address {profile.name}` to discover it",
            "remote.address",
        )
    if port is None:
        port = profile.server.port  # compared with the simulator's own port when deriving
    return Resolved(Target(address, port, simulator), profile, origin)


def _env_target(port: int | None, simulator: str | None) -> Target:
    if port is not None:
        raise InputError(
            None,
            None,
            "in the env address mode the port comes from "
            "CARLA_LAUNCH_PORT when the variant runs, not from --port",
            "--port",
        )
    return Target(None, None, simulator, env=True)


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
