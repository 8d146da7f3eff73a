"""A doctor's findings: `Check`s, the `Report` they make, and the verdict that joins them. Pure.

Each failing check names the modes it makes impossible (`blocks`); the exit code is about
one mode, the verdict's or the one `--mode` asked for, so a machine that cannot run locally
but can run distributed exits 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from carla_launcher.gpu.vram import Verdict

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

Status = Literal["ok", "warning", "failing"]
Mode = Literal["local", "distributed"]
BOTH: frozenset[str] = frozenset({"local", "distributed"})
LOCAL: frozenset[str] = frozenset({"local"})
DIST: frozenset[str] = frozenset({"distributed"})


@dataclass(frozen=True)
class Check:
    """One finding, with a one-line fix when it is not ok."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    blocks: frozenset[str] = frozenset()  # the modes this check, when failing, makes impossible
    host: str | None = None  # for box checks


@dataclass(frozen=True)
class Report:
    """All checks and the verdict: where the server should run, and why."""

    verdict: Mode
    reason: str
    checks: tuple[Check, ...]
    mode: Mode  # the mode the exit code is about: the verdict, or what --mode asked

    @property
    def blocking(self) -> list[Check]:
        """The failing checks that make `mode` impossible."""
        return [c for c in self.checks if c.status == "failing" and self.mode in c.blocks]

    @property
    def exit_code(self) -> int:
        return 1 if self.blocking else 0


def verdict_of(
    checks: Iterable[Check], local: Verdict, profile: Profile | None, forced: Mode | None = None
) -> Report:
    """The report: the VRAM rule's verdict, with what to do next when it says distributed."""
    checks = tuple(checks)
    if local.mode == "local":
        reason = local.reason
    elif profile is None:
        reason = f"{local.reason}; `carla-launch doctor P` checks a GPU box"
    else:
        hosts = ", ".join(profile.remote.hosts)
        box_failing = [c for c in checks if c.host is not None and c.status == "failing"]
        n = len(box_failing)
        first = f" (fix {n} failing box check{'s' if n > 1 else ''} first)" if n else ""
        reason = f"{local.reason}; run the server on {hosts}{first}"
    return Report(local.mode, reason, checks, forced or local.mode)
