"""This machine's checks, pure: its GPU report against the VRAM rule, docker and its compose
plugin, the NVIDIA container toolkit, tmux and ssh. Facts in (`LocalFacts`), `Check`s out;
`gather.gather_local` collects the facts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from carla_launcher import proc
from carla_launcher.doctor.model import BOTH, DIST, LOCAL, Check, Mode, Status
from carla_launcher.gpu.vram import DEFAULT_NEED_MIB, Verdict, local_verdict
from carla_launcher.nvidia import smi

TOOLKIT_PROGRAMS = ("nvidia-ctk", "nvidia-container-runtime-hook", "nvidia-container-cli")


@dataclass(frozen=True)
class LocalFacts:
    """What this machine said: its GPUs, `docker info`, and where its programs are."""

    gpu: smi.GpuReport
    docker: proc.Result | None  # `docker info --format {{json .}}`; None: no docker CLI
    which: dict[str, str | None] = field(default_factory=dict)  # program -> path or None


def vram_check(
    report: smi.GpuReport, need_mib: int, forced: Mode | None = None
) -> tuple[Check, Verdict]:
    """The 10 GB rule as a check: ok when local works; a warning (not a failure) when it does
    not, since distributed mode is then the answer; failing when the driver itself is broken,
    or when local mode is asked for (`--mode local`) on a GPU that is too small."""
    v = local_verdict(report, need_mib)
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


def docker_checks(docker: proc.Result | None) -> list[Check]:
    """The docker daemon and its compose plugin: the agent runs with `docker compose` in both
    modes."""
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
    rc, out, err = docker.rc, docker.stdout, docker.stderr
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
                "install it: docker-compose-plugin (Docker's apt repo) "
                "or docker-compose-v2 (Ubuntu)",
                BOTH,
            )
        )
    return out_checks


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
        "install nvidia-container-toolkit, then "
        "`sudo nvidia-ctk runtime configure --runtime=docker` and restart docker",
        LOCAL,
    )


# program -> (status when missing, what is lost, the fix, the modes it blocks)
_TOOLS: dict[str, tuple[Status, str, str, frozenset[str]]] = {
    "tmux": (
        "warning",
        "not installed: `carla-launch attach` shows server and agent in tmux",
        "sudo apt install tmux",
        frozenset(),
    ),
    "ssh": (
        "failing",
        "no OpenSSH client: the box cannot be reached",
        "sudo apt install openssh-client",
        DIST,
    ),
}


def tool_checks(which: dict[str, str | None]) -> list[Check]:
    """tmux for `attach` (a warning), ssh to reach a box (blocks distributed mode)."""
    checks = []
    for name, (status, lost, fix, blocks) in _TOOLS.items():
        found = which.get(name)
        checks.append(
            Check(name, "ok", found or "") if found else Check(name, status, lost, fix, blocks)
        )
    return checks


def local_checks(
    facts: LocalFacts, need_mib: int = DEFAULT_NEED_MIB, forced: Mode | None = None
) -> tuple[list[Check], Verdict]:
    """This machine's checks, judged for `forced` (--mode) or else for the verdict's mode."""
    vram, v = vram_check(facts.gpu, need_mib, forced)
    mode: Mode = forced or v.mode
    return [
        vram,
        *docker_checks(facts.docker),
        toolkit_check(facts, mode),
        *tool_checks(facts.which),
    ], v
