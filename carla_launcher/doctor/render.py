"""What `carla-launch doctor` prints: one line per check (and its fix), grouped by machine, then
the verdict; or the same as JSON for `--json`. Pure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from carla_launcher.doctor.model import Check, Report
from carla_launcher.jsonout import document

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

LABEL = {"ok": "ok", "warning": "warning", "failing": "FAILING"}


def render(report: Report, profile: Profile | None) -> str:
    """What a user sees: one line per check (and its fix), grouped by machine, then the verdict."""
    lines = ["this machine"]
    width = max((len(c.name) for c in report.checks), default=10)
    last_host: str | None = None
    for c in report.checks:
        if c.host is not None and c.host != last_host:
            last_host = c.host
            lines += ["", f"box {c.host} (profile {profile.name if profile else '?'})"]
        lines.append(f"  {LABEL[c.status]:<8} {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != "ok":
            lines.append(f"  {'':<8} {'':<{width}}  fix: {c.fix}")
    lines += ["", f"verdict: {report.verdict}: {report.reason}"]
    if report.mode != report.verdict:
        lines.append(f"checked for: {report.mode} (--mode)")
    blocking = report.blocking
    if blocking:
        names = ", ".join(c.name + (f" ({c.host})" if c.host else "") for c in blocking)
        lines.append(
            f"blocked: {report.mode} mode cannot start until {names} "
            f"{'is' if len(blocking) == 1 else 'are'} fixed"
        )
    return "\n".join(lines)


def check_json(c: Check) -> dict[str, Any]:
    """One check as `doctor --json` prints it: `host` None for this machine, a box's host
    otherwise (one shape for one box or a pool); `blocks` only while it is failing."""
    return {
        "host": c.host,
        "name": c.name,
        "status": c.status,
        "detail": c.detail,
        "fix": c.fix,
        "blocks": sorted(c.blocks) if c.status == "failing" else [],
    }


def to_json(report: Report) -> dict[str, Any]:
    """`doctor --json` (schemas/doctor.schema.json): the verdict, why, the mode judged, and
    every check in the order they print."""
    return document(
        verdict=report.verdict,
        reason=report.reason,
        mode=report.mode,
        checks=[check_json(c) for c in report.checks],
    )
