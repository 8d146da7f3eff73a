"""Which variant the agent runs, and writing the variants for the box `up` reached.

`choose_variant` is pure; `sync_variants` goes through the one sync service
(`compose.service`), so `up` says "edited by hand" exactly as `sync` and the daemon do, and
what a variant it wrote did (`service.write_line`) exactly as `sync` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from carla_launcher.compose.discover import variant_name
from carla_launcher.errors import InputError, LauncherError
from carla_launcher.profile import Profile

Say = Callable[[str], None]


def choose_variant(folder: Path, variants: list[Path], wanted: str | None) -> Path:
    """The variant to run: the one of COMPOSE (source or variant name), else the only one,
    else the one of docker-compose.yaml / compose.yaml."""
    by_name = {v.name: v for v in variants}
    if wanted:
        name = Path(wanted).name
        for candidate in (name, variant_name(name)):
            if candidate in by_name:
                return by_name[candidate]
        names = ", ".join(sorted(by_name)) or "none"
        raise InputError(
            folder, None, f"no distributed variant for {wanted} (variants: {names})", "COMPOSE"
        )
    if len(variants) == 1:
        return variants[0]
    for default in ("docker-compose.yaml", "docker-compose.yml", "compose.yaml", "compose.yml"):
        if variant_name(default) in by_name:
            return by_name[variant_name(default)]
    names = ", ".join(sorted(by_name)) or "none"
    raise InputError(folder, None, f"several variants, name one as COMPOSE: {names}", "COMPOSE")


def existing_variants(folder: Path) -> list[Path]:
    """The variants already written in `folder` (attach writes none)."""
    from carla_launcher.compose.discover import find_entries

    return [p for e in find_entries(folder) if (p := e.with_name(variant_name(e.name))).is_file()]


@dataclass(frozen=True)
class Synced:
    """The folder's variants after `up` synced them: all of them, the ones written now, and
    what each written one did, in `sync`'s words (the simulator removed, how many references
    point where, where the address came from)."""

    variants: list[Path]
    written: list[Path]
    lines: list[str]


def address_origin(profile: Profile, discovered_on: str | None = None) -> str:
    """Where the address of `up`'s variants came from, as `sync` says it (targeting's words);
    `discovered_on`: the host whose address `up` has just found over SSH."""
    from carla_launcher.targeting import profile_origin

    if discovered_on and not profile.compose.env_mode:
        return f"address found over SSH on {discovered_on}"
    return profile_origin(profile)  # the profile `up` loaded: not read a second time


def sync_variants(profile: Profile, address: str, port: int, say: Say, origin: str = "") -> Synced:
    """Write the variants for this address (or, in the env mode, for any). A variant that was
    edited by hand stops `up`, as `sync` says it; `origin` ends each line (address_origin)."""
    from carla_launcher.compose import service
    from carla_launcher.compose.sync import Target

    folder = profile.compose_dir
    if profile.compose.env_mode:
        target = Target(None, None, profile.compose.simulator, env=True)
    else:
        target = Target(address, port, profile.compose.simulator)
    report = service.sync_folder(folder, target, service.Mode.WRITE)
    variants: list[Path] = []
    written: list[Path] = []
    lines: list[str] = []
    for entry in report.entries:
        if entry.error is not None:
            say(f"warning: {entry.error}")
        wrote = any(v.state is service.VariantState.WRITTEN for v in entry.variants)
        facts = service.facts_of(entry) if wrote else {}  # a diff per variant: only when said
        for v in entry.variants:
            if v.error is not None:
                raise v.error
            if v.state is service.VariantState.HAND_EDITED:
                raise LauncherError(service.hand_edited_message(v.path, v.variant.source))
            if v.variant.source.parent == folder and v.path.name == variant_name(
                v.variant.source.name
            ):
                variants.append(v.path)
            if v.state is service.VariantState.WRITTEN:
                written.append(v.path)
                lines.append(service.write_line(v.path, v.state, facts.get(v.path), origin))
    return Synced(sorted(set(variants)), written, lines)


def _clash(me: Profile, other: Profile) -> str | None:
    """Why `other` writes other variants of my compose folder than mine (None: it does not).
    Env-mode variants are the same for every server; a literal one holds one server's address
    and port, so two profiles agree only when they name the same box and port."""
    if other.compose_dir.resolve() != me.compose_dir.resolve():
        return None
    if me.compose.env_mode and other.compose.env_mode:
        return None
    if me.compose.env_mode != other.compose.env_mode:
        return f"compose.address: {other.compose.address}"
    if set(other.remote.hosts) != set(me.remote.hosts):
        return f"box {other.remote.host}"
    if other.remote.address != me.remote.address:
        return f"address {other.remote.address or 'found over SSH'}"
    if other.server.port != me.server.port:
        return f"server.port {other.server.port}"
    if other.server.gpus != me.server.gpus or other.server.gpu != me.server.gpu:
        return "another GPU"
    return None


def shared_folder_refusal(me: Profile, others: list[Profile]) -> str | None:
    """One line when another profile of the folder writes the same variants for another server
    (each `up` would point the other's agents at its own server), with the fix; else None."""
    clashes = [f"{o.path.name} ({why})" for o in others if (why := _clash(me, o))]
    if not clashes:
        return None
    return (
        f"{', '.join(clashes)} also write{'s' if len(clashes) == 1 else ''} the variants of "
        f"{me.compose.dir} for another server, and each `up` would point the other's agent at "
        "its own server: set `compose.address: env` in these profiles (one variant, each agent "
        "with its own server's address)"
    )


def refuse_shared_folder(profile: Profile) -> None:
    """`up` refuses (exit 2) to write variants that another profile's agent runs for another
    server; in the env address mode they share the variant and each gets its own address."""
    from carla_launcher.targeting import sibling_profiles

    line = shared_folder_refusal(profile, sibling_profiles(profile))
    if line:
        raise InputError(profile.path, None, line, "compose.address")
