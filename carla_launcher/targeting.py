"""Which address (and port) the distributed variants point at: the flags, else the profile."""

from __future__ import annotations

from pathlib import Path

from carla_launcher.compose.sync import Target
from carla_launcher.errors import InputError
from carla_launcher.profile import Profile, load_profile
from carla_launcher.state import discovered_address


def resolve_target(
    address: str | None,
    profile_ref: str | None,
    port: int | None,
    simulator: str | None,
    start: Path | None = None,
    address_env: bool = False,
) -> tuple[Target, Profile | None]:
    """`--address` wins over the profile; with neither, the default profile gives it."""
    profile = None
    if address is None or profile_ref is not None:
        try:
            profile = load_profile(profile_ref, start)
        except InputError as e:
            if profile_ref is None and address is not None:
                pass  # no profile named and none found: --address is all we need
            elif profile_ref is None and e.path is None:
                raise InputError(
                    None, None, f"no address: pass --address ADDR or --profile P ({e.message})"
                ) from None
            else:
                raise
    if address is None:
        assert profile is not None
        address = profile.remote.address or discovered_address(profile.key)
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
    if simulator is None and profile is not None:
        simulator = profile.compose.simulator
    if not address.strip() or any(c.isspace() for c in address.strip()):
        raise InputError(None, None, f"not an address: {address!r}", "--address")
    return Target(address.strip(), port, simulator), profile
