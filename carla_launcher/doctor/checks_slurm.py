"""A Slurm login node's checks, pure (`server.mode: slurm`): what the `slurm` fact of
`box/facts.py` says against the profile's `server.slurm`.

The box is the cluster's login node: it has no GPU (the compute nodes have them, and Slurm
gives each job one), so the driver, Vulkan and VRAM checks of a GPU box would only be wrong
there. What can be wrong is Slurm: its commands missing from a non-interactive login's PATH
(the loop runs sbatch, squeue, scancel and scontrol there), a partition the cluster does not
have, one that takes no jobs, no node with the gres the jobs ask for, or a time limit the
partition never grants (the job then stays pending with reason PartitionTimeLimit).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from carla_launcher.box.facts import BoxFacts, Partition, SlurmFacts
from carla_launcher.doctor.model import DIST, Check

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

#: What the job loop runs on the login node (`server/slurm.py`).
LOOP_TOOLS = ("sbatch", "squeue", "scancel", "scontrol")
#: What a partition that is not up does to the jobs sent to it.
NOT_UP = {
    "down": "its jobs queue but do not start until it is up",
    "drain": "Slurm refuses new jobs until it is up",
    "inact": "Slurm refuses new jobs until it is up",
    "inactive": "Slurm refuses new jobs until it is up",
}
#: How Slurm's commands get on the PATH of commands over ssh (`ssh HOST sh -s`: bash reads
#: ~/.bashrc then, not ~/.profile; most ~/.bashrc files return early when not interactive).
PATH_HOW = (
    "in ~/.bashrc before its interactive guard (zsh: ~/.zshenv), `module load slurm` or "
    '`PATH="/path/to/slurm/bin:$PATH"`'
)
PATH_FIX = f"put them on PATH for commands over ssh: {PATH_HOW}; is remote.host the login node?"
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def slurm_seconds(text: str) -> float | None:
    """A Slurm time limit in seconds: infinite (also 0) is `inf`; None when it is not one
    (sinfo's `n/a`). MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS, DAYS-HOURS,
    DAYS-HOURS:MINUTES, DAYS-HOURS:MINUTES:SECONDS, as sbatch --time reads them.

    >>> [slurm_seconds(t) for t in ("30", "30:00", "4:00:00", "1-02:00:00", "2-12", "1-0:30")]
    [1800.0, 1800.0, 14400.0, 93600.0, 216000.0, 88200.0]
    >>> slurm_seconds("infinite"), slurm_seconds("UNLIMITED"), slurm_seconds("n/a")
    (inf, inf, None)
    """
    t = text.strip()
    if t.lower() in ("infinite", "unlimited"):
        return float("inf")
    m = _TIME.match(t)
    if not m:
        return None
    days, *rest = m.groups()
    nums = [int(n) for n in rest if n is not None]
    units = (3600, 60, 1) if days is not None or len(nums) == 3 else (60, 1)
    secs = int(days or 0) * 86400 + sum(n * u for n, u in zip(nums, units, strict=False))
    return float(secs) if secs else float("inf")


def gres_wanted(spec: str) -> list[tuple[str, str | None]]:
    """(name, type) of each gres of `server.slurm.gres` (`name[:type][:count]`, comma-separated).

    >>> gres_wanted("gpu:1"), gres_wanted("gpu:a100:2,mps:50"), gres_wanted("gpu")
    ([('gpu', None)], [('gpu', 'a100'), ('mps', None)], [('gpu', None)])
    """
    out: list[tuple[str, str | None]] = []
    for item in spec.split(","):
        parts = item.strip().removeprefix("gres:").removeprefix("gres/").split(":")
        if not parts[0]:
            continue
        kind = parts[1] if len(parts) >= 3 or (len(parts) == 2 and not parts[1].isdigit()) else None
        out.append((parts[0], kind))
    return out


def has_gres(p: Partition, name: str, kind: str | None) -> bool:
    """Some node of `p` has that gres (sinfo's `gpu:a100:4(S:0-1)`: name gpu, type a100).

    >>> p = Partition("gpu", True, "up", "infinite", 2, ("gpu:a100:4(S:0-1)",))
    >>> has_gres(p, "gpu", None), has_gres(p, "gpu", "a100"), has_gres(p, "gpu", "v100")
    (True, True, False)
    """
    for g in p.gres:
        parts = g.split("(", 1)[0].split(":")
        if parts[0] == name and (kind is None or (len(parts) >= 3 and parts[1] == kind)):
            return True
    return False


def gpus_check(profile: Profile, host: str) -> Check:
    """What replaces the driver, Vulkan and VRAM checks on a login node."""
    return Check(
        "box GPUs",
        "ok",
        "a login node (server.mode: slurm): the GPUs are the compute nodes', and Slurm gives "
        f"each job its own (--gres={profile.server.slurm.gres})",
        host=host,
    )


def ports_check(profile: Profile, host: str) -> Check:
    """Nothing listens on the login node: each job takes free ports on its own node."""
    return Check(
        "box ports",
        "ok",
        f"server.mode: slurm: each job takes free ports from {profile.server.port} on its "
        "compute node; none are needed here",
        host=host,
    )


def slurm_check(facts: BoxFacts, profile: Profile, host: str) -> Check:
    """Slurm answers on the login node, and the jobs the profile asks for can run."""
    s = facts.slurm

    def failing(detail: str, fix: str) -> Check:
        return Check("box Slurm", "failing", detail, fix, DIST, host)

    if s is None:
        return failing("the box did not answer about Slurm", "run `sinfo` there by hand")
    missing = [t for t in LOOP_TOOLS if t not in s.found]
    if missing:
        found = [t for t in s.found if t in LOOP_TOOLS]
        seen = f" (found: {', '.join(found)})" if found else ""
        return failing(f"{', '.join(missing)} not found on the login node's PATH{seen}", PATH_FIX)
    version = s.version or "Slurm (version unknown)"
    if "sinfo" not in s.found:
        return Check(
            "box Slurm",
            "warning",
            f"{version}; sinfo not found, so the partition is not checked",
            f"put sinfo on PATH as well: {PATH_HOW}",
            host=host,
        )
    if s.sinfo_error is not None:
        return failing(
            f"{version}; sinfo failed: {s.sinfo_error}",
            "on the login node, `sinfo` must list the partitions (slurm.conf, munge, the "
            "controller): ask the cluster's admins",
        )
    return _partition_check(s, profile, host, version)


def _names(parts: tuple[Partition, ...], most: int = 12) -> str:
    """The partitions in sinfo's order, the default marked; a long list cut after `most`."""
    names = [p.name + (" (the default)" if p.default else "") for p in parts]
    more = f" and {len(names) - most} more (sinfo lists them)" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _partition_check(s: SlurmFacts, profile: Profile, host: str, version: str) -> Check:
    slurm = profile.server.slurm
    known = {p.name: p for p in s.partitions}
    if not known:
        return Check(
            "box Slurm",
            "failing",
            f"{version}; sinfo lists no partition you may use",
            "ask the cluster's admins which partition (and account) to use",
            DIST,
            host,
        )
    wanted = [n.strip() for n in (slurm.partition or "").split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        default = next((p.name for p in s.partitions if p.default), None)
        return Check(
            "box Slurm",
            "failing",
            f"server.slurm.partition {', '.join(unknown)}: no such partition; "
            f"the cluster has {_names(s.partitions)}",
            "set server.slurm.partition to one of them"
            + (f", or null for the default ({default})" if default else ""),
            DIST,
            host,
        )
    if wanted:
        targets = [known[n] for n in wanted]
    else:
        targets = [p for p in s.partitions if p.default]
        if not targets:
            return Check(
                "box Slurm",
                "failing",
                "server.slurm.partition is null and the cluster has no default partition",
                f"set server.slurm.partition to one of {_names(s.partitions)}",
                DIST,
                host,
            )
    problems = _warnings(targets, s.partitions, slurm.gres, slurm.time)
    if problems:
        return Check(
            "box Slurm",
            "warning",
            "; ".join(d for d, _ in problems),
            "; ".join(dict.fromkeys(f for _, f in problems)),  # several partitions down: one
            host=host,
        )
    return Check("box Slurm", "ok", f"{version}; " + "; ".join(map(_summary, targets)), host=host)


def _summary(p: Partition) -> str:
    gres = ", ".join(p.gres) or "no gres"
    nodes = f"{p.nodes} node{'s' if p.nodes != 1 else ''}"
    default = " (the default)" if p.default else ""
    return f"partition {p.name}{default}: time limit {p.time_limit}, {nodes}, {gres}"


def _warnings(
    targets: list[Partition], every: tuple[Partition, ...], gres: str, time: str | None
) -> list[tuple[str, str]]:
    """(detail, fix) of each reason the jobs would wait or be refused in `targets` (sbatch
    takes the first of its partitions that can run the job: one good one is enough)."""
    out: list[tuple[str, str]] = []
    names = ("partition " if len(targets) == 1 else "partitions ") + ", ".join(
        p.name for p in targets
    )
    if not any(p.avail == "up" for p in targets):
        out += [
            (
                f"partition {p.name} is {p.avail}: {NOT_UP.get(p.avail, 'it takes no jobs now')}",
                "wait until the cluster's admins set it up, or set server.slurm.partition to "
                "another partition",
            )
            for p in targets
        ]
    for name, kind in gres_wanted(gres):
        want = f"{name}:{kind}" if kind else name
        if any(has_gres(p, name, kind) for p in targets):
            continue
        others = [p for p in every if has_gres(p, name, kind)]
        others = [p for p in others if p.avail == "up"] or others
        have = ", ".join(dict.fromkeys(g for p in targets for g in p.gres)) or "none"
        out.append(
            (
                f"server.slurm.gres asks for {want}, and no node of {names} has it "
                f"(their gres: {have}): sbatch refuses such jobs",
                f"set server.slurm.partition to {' or '.join(p.name for p in others)} (they "
                f"have {want})"
                if others
                else f"no partition you may use lists gres {want}: check server.slurm.gres "
                "with the cluster's admins",
            )
        )
    asked = slurm_seconds(time) if time else None
    limits = [(p, slurm_seconds(p.time_limit)) for p in targets]
    if asked is not None and all(lim is not None and asked > lim for _, lim in limits):
        longest = max(limits, key=lambda pl: pl[1] or 0)[0]
        out.append(
            (
                f"server.slurm.time {time} is over the time limit of {names} "
                f"({', '.join(p.time_limit for p in targets)}): the jobs would stay pending "
                "(PartitionTimeLimit)",
                f"set server.slurm.time to at most {longest.time_limit}, or null (the "
                "partition's limit)",
            )
        )
    return out
