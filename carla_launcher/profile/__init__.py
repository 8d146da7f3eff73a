"""Profiles (`profiles/NAME.yaml`): where the CARLA server runs and how.

`fields.py` lists every field once (kind, default, allowed values, help, README section);
`load.py` finds a profile and reads it into typed, validated objects from that table;
`schema.py` makes the JSON Schema (and the README's field table) from it; `template.py` writes
the commented profile `carla-launch init` writes.
"""

from __future__ import annotations

from carla_launcher.profile.fields import DEFAULT_OS_PACKAGES
from carla_launcher.profile.load import (
    ADDRESS_MODES,
    DEFAULT_PROFILE,
    PROFILE_DIR,
    ComposeSettings,
    Package,
    Profile,
    Remote,
    Server,
    Slurm,
    default_profile,
    find_profile,
    load_profile,
    parse_profile,
    profiles_in,
    read_profile,
)

__all__ = [
    "ADDRESS_MODES",
    "DEFAULT_OS_PACKAGES",
    "DEFAULT_PROFILE",
    "PROFILE_DIR",
    "ComposeSettings",
    "Package",
    "Profile",
    "Remote",
    "Server",
    "Slurm",
    "default_profile",
    "find_profile",
    "load_profile",
    "parse_profile",
    "profiles_in",
    "read_profile",
]
