"""`carla-launch doctor`: every usual reason a launch fails, checked before anything starts.

Two halves. The checks are pure functions from facts (a GPU report, what `docker info` printed,
what one ssh round trip to the box printed) to `Check`s, and `verdict_of` turns the checks into
`local` or `distributed` and an exit code. `gather_*` are the imperative shell that collects the
facts: the local ones in parallel with the one ssh round trip per box, so the whole run costs
about one nvidia-smi plus one ssh connection.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from carla_launcher import resources as R
from carla_launcher.box import explain, sections, transport
from carla_launcher.box import facts as box_facts
from carla_launcher.box.explain import SshOutcome
from carla_launcher.box.facts import BoxFacts
from carla_launcher.box.marker import marker_sha256
from carla_launcher.box.ports import NoFreePort, choose_port
from carla_launcher.nvidia import smi
from carla_launcher.nvidia.roles import is_carla

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

Status = Literal["ok", "warning", "failing"]
Mode = Literal["local", "distributed"]
BOTH: frozenset[str] = frozenset({"local", "distributed"})
LOCAL: frozenset[str] = frozenset({"local"})
DIST: frozenset[str] = frozenset({"distributed"})


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""
    blocks: frozenset[str] = frozenset()  # the modes this check, when failing, makes impossible
    host: str | None = None  # for box checks

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "fix": self.fix,
        }
        if self.host is not None:
            d["host"] = self.host
        d["blocks"] = sorted(self.blocks) if self.status == "failing" else []
        return d


@dataclass(frozen=True)
class Report:
    verdict: Mode
    reason: str
    checks: tuple[Check, ...]
    mode: Mode  # the mode the exit code is about: the verdict, or what --mode asked

    @property
    def exit_code(self) -> int:
        return 1 if any(c.status == "failing" and self.mode in c.blocks for c in self.checks) else 0

    def as_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "mode": self.mode,
            "checks": [c.as_json() for c in self.checks],
        }


# -- local checks (pure) --------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalFacts:
    gpu: smi.GpuReport
    docker: tuple[int, str, str] | None  # `docker info --format {{json .}}`; None: no docker CLI
    which: dict[str, str | None] = field(default_factory=dict)  # program -> path or None


def vram_check(
    report: smi.GpuReport, need_mib: int, forced: Mode | None = None
) -> tuple[Check, R.Verdict]:
    """The 10 GB rule as a check: ok when local works; a warning (not a failure) when it does
    not, since distributed mode is then the answer; failing when the driver itself is broken,
    or when local mode is asked for (`--mode local`) on a GPU that is too small."""
    v = R.local_verdict(report, need_mib)
    if v.mode == "local":
        return Check("local VRAM", "ok", v.reason), v
    if report.status in ("mismatch", "no-driver", "error", "no-devices"):
        return Check(
            "local VRAM", "failing", report.message, smi.SMI_FIXES.get(report.status, ""), LOCAL
        ), v
    fix = "run the server on a GPU box: `carla-launch doctor P` checks one (profiles/P.yaml)"
    if forced == "local":
        return Check("local VRAM", "failing", v.reason, fix, LOCAL), v
    return Check("local VRAM", "warning", v.reason, fix), v


def docker_checks(docker: tuple[int, str, str] | None) -> list[Check]:
    """The docker daemon and the compose plugin: the agent runs with `docker compose` in both modes."""
    if docker is None:
        return [
            Check(
                "docker",
                "failing",
                "no `docker` command",
                "install Docker Engine (docs.docker.com/engine/install) or Debian's docker.io",
                BOTH,
            ),
            Check(
                "docker compose",
                "failing",
                "no docker, so no compose plugin",
                "install Docker first",
                BOTH,
            ),
        ]
    rc, out, err = docker
    try:
        info = json.loads(out.strip().splitlines()[0]) if out.strip() else {}
    except (ValueError, IndexError):
        info = {}
    if not isinstance(info, dict):
        info = {}
    client = info.get("ClientInfo") or {}
    plugins = client.get("Plugins") or []
    server = info.get("ServerVersion") or ""
    errors = " ".join(str(e) for e in (info.get("ServerErrors") or [])) + " " + err
    out_checks: list[Check] = []
    if server:
        runtimes = sorted((info.get("Runtimes") or {}).keys())
        out_checks.append(
            Check("docker", "ok", f"daemon {server} (runtimes: {', '.join(runtimes) or '?'})")
        )
    elif "permission denied" in errors.lower():
        out_checks.append(
            Check(
                "docker",
                "failing",
                "the docker daemon refuses you (permission denied on its socket)",
                "sudo usermod -aG docker $USER, then log out and in again",
                BOTH,
            )
        )
    else:
        line = next(
            (ln.strip() for ln in errors.splitlines() if ln.strip()), f"docker info exited {rc}"
        )
        out_checks.append(
            Check(
                "docker",
                "failing",
                f"daemon not reachable: {line}",
                "start it: sudo systemctl start docker (or check DOCKER_HOST)",
                BOTH,
            )
        )
    compose = next((p for p in plugins if isinstance(p, dict) and p.get("Name") == "compose"), None)
    if compose and not compose.get("Err"):
        out_checks.append(Check("docker compose", "ok", f"plugin {compose.get('Version', '?')}"))
    else:
        why = f" ({compose['Err']})" if compose and compose.get("Err") else ""
        out_checks.append(
            Check(
                "docker compose",
                "failing",
                f"the compose plugin is missing{why}",
                "install it: docker-compose-plugin (Docker's apt repo) or docker-compose-v2 (Ubuntu)",
                BOTH,
            )
        )
    return out_checks


TOOLKIT_PROGRAMS = ("nvidia-ctk", "nvidia-container-runtime-hook", "nvidia-container-cli")


def toolkit_check(facts: LocalFacts, verdict: Mode) -> Check:
    """GPU containers need the NVIDIA container toolkit: blocking for local mode (the server's
    container), a warning in distributed mode (only agents that reserve a GPU need it)."""
    found = [p for p in TOOLKIT_PROGRAMS if facts.which.get(p)]
    if facts.gpu.status != "ok":
        return Check("NVIDIA container toolkit", "ok", "not needed: no usable NVIDIA GPU here")
    if found:
        return Check("NVIDIA container toolkit", "ok", f"found {', '.join(found)}")
    return Check(
        "NVIDIA container toolkit",
        "failing" if verdict == "local" else "warning",
        "not installed: containers cannot use the GPU (`gpus:` / `--gpus` fail)",
        "install nvidia-container-toolkit, then `sudo nvidia-ctk runtime configure --runtime=docker` "
        "and restart docker",
        LOCAL,
    )


def tool_checks(which: dict[str, str | None]) -> list[Check]:
    tmux = (
        Check("tmux", "ok", which["tmux"] or "")
        if which.get("tmux")
        else Check(
            "tmux",
            "warning",
            "not installed: `carla-launch attach` shows server and agent in tmux",
            "sudo apt install tmux",
        )
    )
    ssh = (
        Check("ssh", "ok", which["ssh"] or "")
        if which.get("ssh")
        else Check(
            "ssh",
            "failing",
            "no OpenSSH client: the box cannot be reached",
            "sudo apt install openssh-client",
            DIST,
        )
    )
    return [tmux, ssh]


def local_checks(
    facts: LocalFacts, need_mib: int = R.DEFAULT_NEED_MIB, forced: Mode | None = None
) -> tuple[list[Check], R.Verdict]:
    """This machine's checks, judged for `forced` (--mode) or else for the verdict's mode."""
    vram, v = vram_check(facts.gpu, need_mib, forced)
    mode: Mode = forced or v.mode
    return [
        vram,
        *docker_checks(facts.docker),
        toolkit_check(facts, mode),
        *tool_checks(facts.which),
    ], v


# -- box checks (pure) ----------------------------------------------------------------------------
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
    g = facts.gpu
    if g.status == "ok":
        drivers = ", ".join(sorted({x.driver for x in g.gpus if x.driver})) or "?"
        names = ", ".join(f"{x.index}: {x.name}" for x in g.gpus)
        return Check("box GPU driver", "ok", f"driver {drivers}; GPUs {names}", host=host)
    return Check("box GPU driver", "failing", g.message, smi.SMI_FIXES.get(g.status, ""), DIST, host)


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
    status, detail = R.box_vram(facts.gpu, pinned if pinned is not None else 0)
    fix = (
        ""
        if status == "ok"
        else ("someone else holds the GPU: ask them, pick another GPU (server.gpu) or another box")
    )
    if status != "ok" and pinned is None and len(facts.gpu.gpus) > 1:
        best_status, best_detail = R.box_vram(facts.gpu)
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
    return facts.marker is not None or facts.launcher


def disk_check(
    facts: BoxFacts, profile: Profile, host: str, need_kib: int = R.PACKAGE_DISK_NEED_KIB
) -> Check:
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
            f"{free_s} free at {root}; the package needs about {need_kib / 1024 / 1024:.0f} GB while deploy unpacks it",
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
                f"{root}: installed from another archive (sha256 {got[:12]}…, the profile says {pkg.sha256[:12]}…)",
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
    if "gpus" not in sections.parse(stdout):
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


# -- the verdict (pure) ---------------------------------------------------------------------------
def verdict_of(
    checks: Iterable[Check], local: R.Verdict, profile: Profile | None, forced: Mode | None = None
) -> Report:
    checks = tuple(checks)
    if local.mode == "local":
        reason = local.reason
    elif profile is None:
        reason = f"{local.reason}; `carla-launch doctor P` checks a GPU box"
    else:
        hosts = ", ".join(profile.remote.hosts)
        box_failing = [c for c in checks if c.host is not None and c.status == "failing"]
        reason = f"{local.reason}; run the server on {hosts}" + (
            f" (fix {len(box_failing)} failing box check{'s' if len(box_failing) > 1 else ''} first)"
            if box_failing
            else ""
        )
    return Report(local.mode, reason, checks, forced or local.mode)


# -- the shell ------------------------------------------------------------------------------------
LOCAL_PROGRAMS = ("tmux", "ssh", *TOOLKIT_PROGRAMS)


def gather_local() -> LocalFacts:
    """The local facts; nvidia-smi and docker run in parallel (each takes 50-500 ms)."""
    from carla_launcher import gpu

    which = {p: shutil.which(p) for p in LOCAL_PROGRAMS}
    with ThreadPoolExecutor(max_workers=2) as pool:
        g = pool.submit(gpu.local_report)
        d = (
            pool.submit(gpu.run, ["docker", "info", "--format", "{{json .}}"], 10.0)
            if shutil.which("docker")
            else None
        )
        report = g.result()
        docker = d.result() if d else None
    return LocalFacts(report, docker, which)


def run_doctor(
    profile: Profile | None,
    need_mib: int = R.DEFAULT_NEED_MIB,
    forced: Mode | None = None,
    ssh_timeout: float = 20.0,
) -> Report:
    """All checks: the local ones while the boxes answer their one round trip each."""
    hosts: list[str] = list(profile.remote.hosts) if profile else []
    with ThreadPoolExecutor(max_workers=1 + max(1, len(hosts))) as pool:
        boxes = []
        if profile is not None:
            script = box_facts.facts_script(
                box_facts.DOCTOR,
                root=profile.server.package.root,
                server_user=profile.server.user,
                session=profile.server.tmux_session,
            )
            for h in hosts:
                boxes.append((h, pool.submit(transport.run, profile, h, script, ssh_timeout)))
        facts = gather_local()
        checks, local = local_checks(facts, need_mib, forced)
        for h, fut in boxes:
            r = fut.result()
            checks += box_checks(profile, h, r.rc, r.stdout, r.stderr)  # type: ignore[arg-type]
    return verdict_of(checks, local, profile, forced)


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
    blocking = [c for c in report.checks if c.status == "failing" and report.mode in c.blocks]
    if blocking:
        names = ", ".join(c.name + (f" ({c.host})" if c.host else "") for c in blocking)
        lines.append(
            f"blocked: {report.mode} mode cannot start until {names} {'is' if len(blocking) == 1 else 'are'} fixed"
        )
    return "\n".join(lines)
