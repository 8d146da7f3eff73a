"""Shell completion of the values commands take: profile names and compose files.

Click asks these while the user presses Tab, so they never fail: a folder without profiles or a
profile that does not load completes nothing (the command itself says why when it runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.shell_completion import CompletionItem

from carla_launcher.errors import LauncherError

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

_SUFFIXES = (".yaml", ".yml")


# The profile package is imported only when Tab is pressed: every command imports this module
# (through commands/options.py), and `sync --check` in a pre-commit hook must not pay for YAML.
def profiles_folder(start: Path) -> Path | None:
    """The `profiles/` folder `find_profile` reads: the first one from `start` upwards."""
    from carla_launcher.profile import PROFILE_DIR

    start = start.absolute()
    for folder in (start, *start.parents):
        if (folder / PROFILE_DIR).is_dir():
            return folder / PROFILE_DIR
    return None


def profile_names(start: Path) -> list[str]:
    """The names a command accepts as P here (profiles/NAME.yaml), sorted."""
    from carla_launcher.profile import profiles_in

    folder = profiles_folder(start)
    return [] if folder is None else sorted({p.stem for p in profiles_in(folder)})


def _is_path(incomplete: str) -> bool:
    """P given as a path (as find_profile reads it): let the shell complete file names."""
    return "/" in incomplete or incomplete.endswith(_SUFFIXES) or incomplete.startswith(("~", "."))


def complete_profile(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    if _is_path(incomplete):
        return [CompletionItem(incomplete, type="file")]
    try:
        names = profile_names(Path.cwd())
    except OSError:
        return []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def _profile(ctx: click.Context) -> Profile | None:
    """The profile named earlier on the command line (or the default one), if it loads.

    While an option waits for the value being completed (`up gpu -f <Tab>`), click stops
    parsing before it assigns the positional words: they are left in `ctx.args`, P first."""
    from carla_launcher.profile import load_profile

    ref = ctx.params.get("profile") or (ctx.args[0] if ctx.args else None)
    try:
        return load_profile(ref if isinstance(ref, str) else None)
    except (LauncherError, OSError):
        return None


def complete_compose_file(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The compose files of the profile's compose folder (what `-f` picks among); file names
    when no profile loads or the user types a path."""
    from carla_launcher.compose.discover import find_entries

    prof = _profile(ctx)
    if prof is None or "/" in incomplete:
        return [CompletionItem(incomplete, type="file")]
    try:
        names = [p.name for p in find_entries(prof.compose_dir)]
    except OSError:
        return []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]
