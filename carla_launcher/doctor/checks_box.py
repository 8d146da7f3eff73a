"""A box's checks, pure: what one round trip printed (ssh's exit code and stderr, the DOCTOR
facts of `box/facts.py`) against the profile. Reachable, host key, login, user, GPU driver,
Vulkan, VRAM for the server, disk, ports, package; on a Slurm login node, Slurm instead of the
GPU (`checks_slurm.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carla_launcher.box import explain, sections
from carla_launcher.box import facts as box_facts
from carla_launcher.box.explain import SshOutcome
from carla_launcher.box.facts import BoxFacts
from carla_launcher.box.marker import marker_sha256
from carla_launcher.box.ports import NoFreePort, choose_port
from carla_launcher.doctor import checks_slurm
from carla_launcher.doctor.model import DIST, Check, Status
from carla_launcher.gpu.vram import box_vram
from carla_launcher.nvidia import smi
from carla_launcher.nvidia.roles import is_carla

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

#: Free disk the package needs when it is not installed yet: the ~20 GB archive plus the
#: unpacked tree next to it while deploy unpacks (it unpacks into a temporary folder).
PACKAGE_DISK_NEED_KIB = 45 * 1024 * 1024


def connection_checks(host: str, ssh: SshOutcome, accept_new: bool) -> list[Check]:
    """Reachable, host key known, logged in: told apart from ssh's own words."""
    if ssh.kind in ("dns", "refused", "timeout", "unreachable", "other"):
        return [
            Check(
                "box reachable",
                "failing",
                f"{host}: {ssh.line}",
                explain.fix(ssh.kind, host),
                DIST,
                host,
            )
        ]
    reach = Check("box reachable", "ok", f"{host} answers ssh", host=host)
    if ssh.kind == "host-key-changed":
        return [
            reach,
            Check(
                "box host key",
                "failing",
                "the box's host key CHANGED since you last connected",
                explain.fix(ssh.kind, host),
                DIST,
                host,
            ),
        ]
    if ssh.kind == "host-key":
        return [
            reach,
            Check(
                "box host key",
                "failing",
                f"the box's host key is not known ({ssh.line})",
                explain.fix(ssh.kind, host),
                DIST,
                host,
            ),
        ]
    key = (
        Check(
            "box host key",
            "warning",
            "the box's key was new and was accepted now (accept_new_host_key)",
            "compare the fingerprint in ~/.ssh/known_hosts with the box's own",
            host=host,
        )
        if ssh.new_key
        else Check(
            "box host key",
            "ok",
            "known and checked strictly" if not accept_new else "known",
            host=host,
        )
    )
    if ssh.kind == "auth":
        return [
            reach,
            key,
            Check(
                "box login",
                "failing",
                ssh.line,
                explain.fix(ssh.kind, host),
                DIST,
                host,
            ),
        ]
    return [reach, key]


def user_check(facts: BoxFacts, profile: Profile, host: str) -> Check:
    """CARLA refuses to run as root; as root, deploy runs the server as `server.user`."""
    su = facts.server_user or profile.server.user
    if facts.uid is None:
        return Check("box user", "warning", "could not read `id -u` on the box", "", host=host)
    if facts.uid != 0:
        return Check(
            "box user", "ok", f"logged in as {facts.login_user or facts.uid} (not root)", host=host
        )
    if not su or su == "root":
        return Check(
            "box user",
            "failing",
            "logged in as root and server.user is root: CARLA refuses to run as root",
            "set server.user to a non-root user (default: carla); deploy creates it",
            DIST,
            host,
        )
    exists = "exists" if facts.server_user_exists else "will be created by deploy"
    return Check(
        "box user", "ok", f"logged in as root; the server runs as user {su} ({exists})", host=host
    )


def driver_check(facts: BoxFacts, host: str) -> Check:
    """nvidia-smi answers on the box (else its failure, in its words, with the fix)."""
    g = facts.gpu
    if g.status == "ok":
        drivers = ", ".join(sorted({x.driver for x in g.gpus if x.driver})) or "?"
        names = ", ".join(f"{x.index}: {x.name}" for x in g.gpus)
        return Check("box GPU driver", "ok", f"driver {drivers}; GPUs {names}", host=host)
    return Check(
        "box GPU driver", "failing", g.message, smi.SMI_FIXES.get(g.status, ""), DIST, host
    )


def vulkan_check(facts: BoxFacts, profile: Profile, host: str) -> Check:
    """CARLA renders through Vulkan: without NVIDIA's ICD it exits silently after "Disabling core
    dumps" or falls back to a software device."""
    nvidia_icd = [f for f in facts.icd_files if "nvidia" in f.rsplit("/", 1)[-1].lower()]
    devices = [ln.split("=", 1)[-1].strip() for ln in facts.vulkan_lines if "deviceName" in ln]
    severity: Status = "warning" if profile.server.mode == "compose" else "failing"
    fix_icd = (
        "install the driver's Vulkan part (Ubuntu: libnvidia-gl-<driver version>) and libvulkan1; "
        "it provides /usr/share/vulkan/icd.d/nvidia_icd.json"
    )
    if not nvidia_icd:
        other = f" (found: {', '.join(facts.icd_files)})" if facts.icd_files else ""
        return Check(
            "box Vulkan",
            severity,
            f"no NVIDIA Vulkan ICD (nvidia_icd.json){other}",
            fix_icd,
            DIST,
            host,
        )
    if facts.vulkaninfo is None or facts.vulkaninfo is False:
        return Check(
            "box Vulkan",
            "warning",
            f"ICD {nvidia_icd[0]}; vulkaninfo is not installed, so not confirmed",
            "sudo apt install vulkan-tools, then `vulkaninfo --summary`",
            host=host,
        )
    if any(
        "nvidia" in d.lower()
        or "geforce" in d.lower()
        or "tesla" in d.lower()
        or "quadro" in d.lower()
        or "rtx" in d.lower()
        for d in devices
    ):
        return Check(
            "box Vulkan",
            "ok",
            f"ICD {nvidia_icd[0]}; vulkaninfo sees {', '.join(devices)}",
            host=host,
        )
    seen = ", ".join(devices) or (facts.vulkan_lines[0] if facts.vulkan_lines else "no device")
    return Check(
        "box Vulkan",
        severity,
        f"ICD {nvidia_icd[0]} is there but vulkaninfo sees {seen}",
        "check VK_ICD_FILENAMES and that the ICD's library version matches the driver "
        "(CARLA: add -prefernvidia to server.args on hybrid boxes)",
        DIST,
        host,
    )


def box_vram_check(facts: BoxFacts, profile: Profile, host: str) -> Check | None:
    """Room for the server on the GPU it will use: server.gpu, else the first one (CARLA's
    default adapter). When only another GPU has room, the fix says to pin it."""
    if facts.gpu.status != "ok":
        return None
    pinned = profile.server.gpu
    status, detail = box_vram(facts.gpu, pinned if pinned is not None else 0)
    fix = (
        ""
        if status == "ok"
        else ("someone else holds the GPU: ask them, pick another GPU (server.gpu) or another box")
    )
    if status != "ok" and pinned is None and len(facts.gpu.gpus) > 1:
        best_status, best_detail = box_vram(facts.gpu)
        best = next(
            (g.index for g in facts.gpu.gpus if best_detail.startswith(f"GPU {g.index} ")), None
        )
        if best_status == "ok" and best is not None and best != 0:
            detail += " (without server.gpu CARLA takes the first GPU)"
            fix = f"set server.gpu: {best} in the profile: {best_detail}"
    return Check(
        "box VRAM", status, detail, fix, DIST if status == "failing" else frozenset(), host
    )


def package_installed(facts: BoxFacts) -> bool:
    """Deploy's marker is there, or at least CarlaUE4.sh."""
    return facts.marker is not None or facts.launcher


def disk_check(
    facts: BoxFacts, profile: Profile, host: str, need_kib: int = PACKAGE_DISK_NEED_KIB
) -> Check:
    """Room to unpack the package where it goes, unless it is installed (or not needed)."""
    root = facts.package_root or profile.server.package.root
    if profile.server.mode == "compose":
        return Check(
            "box disk",
            "ok",
            "compose mode: the server runs from an image, no package to unpack",
            host=host,
        )
    free = facts.free_kib
    free_s = "?" if free is None else f"{free / 1024 / 1024:.1f} GB"
    if package_installed(facts):
        return Check("box disk", "ok", f"package installed; {free_s} free there", host=host)
    if free is None:
        return Check(
            "box disk", "warning", f"could not read the free space at {root}", "", host=host
        )
    if free < need_kib:
        return Check(
            "box disk",
            "failing",
            f"{free_s} free at {root}; the package needs about "
            f"{need_kib / 1024 / 1024:.0f} GB while deploy unpacks it",
            "free space there, or set server.package.root to a larger disk",
            DIST,
            host,
        )
    return Check("box disk", "ok", f"{free_s} free at {root}", host=host)


def free_port_from(start: int, busy: set[int]) -> int | None:
    """The first world port from `start` on, in steps of 3, whose port, +1 and +2 are free."""
    try:
        return choose_port(start, busy)
    except NoFreePort:
        return None


def ports_check(facts: BoxFacts, profile: Profile, host: str) -> Check:
    """The world port and port+1 (the streaming port) must be free, or held by our own server."""
    port = profile.server.port
    wanted = [port, port + 1]
    busy = {lst.port for lst in facts.listeners}
    taken = [p for p in wanted if p in busy]
    if not taken:
        return Check("box ports", "ok", f"{port} and {port + 1} are free", host=host)
    owners = {lst.process for lst in facts.listeners if lst.port in taken and lst.process}
    ours_by_name = owners and all(is_carla(o) for o in owners)
    session = profile.server.tmux_session
    if ours_by_name or session in facts.tmux_sessions:
        why = (
            f"tmux session {session!r}"
            if session in facts.tmux_sessions
            else ", ".join(sorted(owners))
        )
        return Check(
            "box ports", "ok", f"{', '.join(map(str, taken))} held by our server ({why})", host=host
        )
    who = f" by {', '.join(sorted(owners))}" if owners else ""
    alt = free_port_from(port + 3, busy)
    fix = (
        f"stop what holds it, or set server.port: {alt} (free with {alt + 1} and {alt + 2})"
        if alt
        else "stop what holds it"
    )
    return Check(
        "box ports",
        "failing",
        f"port {', '.join(map(str, taken))} in use{who}, not by our server",
        fix,
        DIST,
        host,
    )


def package_check(facts: BoxFacts, profile: Profile, host: str) -> Check:
    """Installed by deploy (its marker), and from the archive the profile names (sha256)."""
    pkg = profile.server.package
    name = profile.name
    if profile.server.mode == "compose":
        return Check("box package", "ok", "compose mode: no package needed", host=host)
    root = facts.package_root or pkg.root
    if facts.marker is not None:
        got = marker_sha256(facts.marker)
        if pkg.sha256 and got and got != pkg.sha256:
            return Check(
                "box package",
                "warning",
                f"{root}: installed from another archive (sha256 {got[:12]}…, "
                f"the profile says {pkg.sha256[:12]}…)",
                f"carla-launch deploy {name}",
                host=host,
            )
        if pkg.sha256 and got:
            return Check(
                "box package",
                "ok",
                f"{root}: installed and verified (sha256 {got[:12]}…)",
                host=host,
            )
        return Check(
            "box package",
            "warning",
            f"{root}: installed by deploy, but not verified (no sha256 to compare)",
            "add server.package.sha256 to the profile"
            if not pkg.sha256
            else f"carla-launch deploy {name}",
            host=host,
        )
    if facts.launcher:
        return Check(
            "box package",
            "warning",
            f"{root}: CarlaUE4.sh is there but carla-launch did not install it (not verified)",
            f"carla-launch deploy {name} checks and records it",
            host=host,
        )
    return Check(
        "box package",
        "warning",
        f"not installed at {root} yet",
        f"carla-launch deploy {name}",
        host=host,
    )


def box_checks(profile: Profile, host: str, rc: int, stdout: str, stderr: str) -> list[Check]:
    """Everything one ssh round trip tells about a box, as checks."""
    if profile.remote.connector == "local":
        conn = [
            Check("box reachable", "ok", "connector: local (this machine is the box)", host=host)
        ]
    elif rc == 124:  # the transport's own timeout: connected (or not) but no full answer
        return [
            Check(
                "box reachable",
                "failing",
                f"{host}: no answer within the time limit ({stderr.strip()})",
                explain.fix("timeout", host),
                DIST,
                host,
            )
        ]
    else:
        conn = connection_checks(
            host, explain.classify(rc, stderr), profile.remote.accept_new_host_key
        )
        if any(c.status == "failing" for c in conn):
            return conn
    facts = box_facts.parse_facts(stdout, where=host, server_user=profile.server.user)
    if "id" not in sections.parse(stdout):  # the first fact of DOCTOR and of DOCTOR_SLURM
        line = (stderr.strip().splitlines() or [f"exit {rc}"])[-1]
        return [
            *conn,
            Check(
                "box facts",
                "failing",
                f"the check script did not run: {line}",
                "run `sh` over the same ssh by hand; a login shell that prints or exits breaks it",
                DIST,
                host,
            ),
        ]
    if profile.server.mode == "slurm":  # a login node: the compute nodes have the GPUs
        return [
            *conn,
            user_check(facts, profile, host),
            checks_slurm.gpus_check(profile, host),
            checks_slurm.slurm_check(facts, profile, host),
            disk_check(facts, profile, host),
            checks_slurm.ports_check(profile, host),
            package_check(facts, profile, host),
        ]
    out = [
        *conn,
        user_check(facts, profile, host),
        driver_check(facts, host),
        vulkan_check(facts, profile, host),
    ]
    vram = box_vram_check(facts, profile, host)
    if vram:
        out.append(vram)
    out += [
        disk_check(facts, profile, host),
        ports_check(facts, profile, host),
        package_check(facts, profile, host),
    ]
    return out
