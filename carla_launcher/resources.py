"""GPU facts and the local-or-distributed rule, as pure functions.

Everything here takes text (what `nvidia-smi`, `df`, `ss` printed) or plain data and returns
plain data: no processes, no clock, no files. `gpu.py` and `doctor.py` are the shells that run
the commands, here or on a box in one ssh round trip (`box_script` builds that round trip and
`parse_box` reads it back), and hand the output to these functions.

Why CSV and not nvidia-smi's table: the `--query-*` CSV output is the interface NVIDIA keeps
stable for scripts; the table changes layout between drivers.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

# -- the rule -------------------------------------------------------------------------------------
#: Server and agent on one GPU need *more than* this much VRAM (the 10 GB rule; GB = GiB, as
#: cards are sold: a "12 GB" card reports 12288 MiB). Configurable via `need_mib`.
DEFAULT_NEED_MIB = 10 * 1024
#: CARLA's own documentation: the server needs at least a 6 GB GPU, 8 GB recommended. Used for
#: the box, where only the server runs.
SERVER_MIN_MIB = 6 * 1024
SERVER_RECOMMENDED_MIB = 8 * 1024
#: Free disk the package needs when it is not installed yet: the ~20 GB archive plus the
#: unpacked tree next to it while deploy unpacks (it unpacks into a temporary folder).
PACKAGE_DISK_NEED_KIB = 45 * 1024 * 1024
#: The Vulkan loader's ICD folders; NVIDIA's driver installs `nvidia_icd.json` into one of them.
VULKAN_ICD_DIRS = ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d")

# -- nvidia-smi queries ---------------------------------------------------------------------------
GPU_FIELDS = (
    "index",
    "name",
    "uuid",
    "memory.total",
    "memory.used",
    "memory.free",
    "utilization.gpu",
    "driver_version",
)
#: Asked for too, so that MIG shows; drivers before R450 do not know it and we then ask without.
MIG_FIELD = "mig.mode.current"
APP_FIELDS = ("gpu_uuid", "pid", "process_name", "used_memory")


def smi_gpu_argv(with_mig: bool = True) -> list[str]:
    fields = GPU_FIELDS + ((MIG_FIELD,) if with_mig else ())
    return ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]


def smi_apps_argv() -> list[str]:
    return [
        "nvidia-smi",
        f"--query-compute-apps={','.join(APP_FIELDS)}",
        "--format=csv,noheader,nounits",
    ]


def unknown_field(output: str) -> bool:
    """nvidia-smi's answer to a field its driver does not know (old drivers and `mig.mode.current`)."""
    return "is not a valid field to query" in output


Status = Literal["ok", "missing", "no-devices", "mismatch", "no-driver", "error", "unreachable"]


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    uuid: str
    total_mib: int | None
    used_mib: int | None
    free_mib: int | None
    util_pct: int | None
    driver: str | None
    mig: bool | None = None  # None: the driver could not say

    @property
    def free(self) -> int | None:
        """Free MiB; derived from total - used where nvidia-smi said [N/A]."""
        if self.free_mib is not None:
            return self.free_mib
        if self.total_mib is not None and self.used_mib is not None:
            return self.total_mib - self.used_mib
        return None


Role = Literal["carla", "agent"]


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    gpu_uuid: str
    name: str  # nvidia-smi's process_name, replaced by what the process table says when known
    used_mib: int | None
    user: str | None = None
    in_container: bool = False
    cmdline: str = ""
    role: Role | None = None


@dataclass(frozen=True)
class GpuReport:
    """What one machine's GPUs look like, or why we cannot tell (status != ok)."""

    status: Status
    gpus: tuple[Gpu, ...] = ()
    processes: tuple[GpuProcess, ...] = ()
    message: str = ""
    where: str = "this machine"
    source: str = "nvidia-smi"

    def gpu_index(self, uuid: str) -> int | None:
        for g in self.gpus:
            if g.uuid == uuid:
                return g.index
        return None

    def processes_on(self, gpu: Gpu) -> list[GpuProcess]:
        return [p for p in self.processes if p.gpu_uuid == gpu.uuid]


# -- parsing --------------------------------------------------------------------------------------
_UNIT = re.compile(r"\s*(MiB|%|W|MHz|C)$")


def parse_int(value: str) -> int | None:
    """`1234`, `1234 MiB` -> 1234; `[N/A]`, `[Not Supported]`, `N/A`, `` -> None."""
    v = _UNIT.sub("", value.strip())
    if not v or v.startswith("[") or v.upper() == "N/A":
        return None
    try:
        return int(float(v))
    except ValueError:
        return None


def _text(value: str) -> str | None:
    v = value.strip()
    return None if not v or v.startswith("[") or v.upper() == "N/A" else v


def _split(line: str, n: int, free_at: int) -> list[str] | None:
    """Split a CSV line of n fields. nvidia-smi separates with ", " and does not quote, so a
    field at `free_at` (a name or a path) may hold the separator: the extra parts are joined
    back into it. Returns None for a line with too few fields."""
    sep = ", " if line.count(", ") >= n - 1 else ","
    parts = line.split(sep)
    if len(parts) < n:
        return None
    extra = len(parts) - n
    if extra:
        parts = (
            parts[:free_at]
            + [sep.join(parts[free_at : free_at + extra + 1])]
            + parts[free_at + extra + 1 :]
        )
    return [p.strip() for p in parts]


def parse_gpus(text: str, fields: Iterable[str] = GPU_FIELDS) -> tuple[Gpu, ...]:
    """`--query-gpu=<fields> --format=csv,noheader,nounits` -> Gpu per line."""
    names = list(fields)
    out: list[Gpu] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = _split(line, len(names), names.index("name"))
        if parts is None:
            continue
        row = dict(zip(names, parts))
        index = parse_int(row.get("index", ""))
        if index is None:
            continue
        mig_text = (_text(row.get(MIG_FIELD, "")) or "").lower()
        out.append(
            Gpu(
                index=index,
                name=row.get("name", "").strip(),
                uuid=row.get("uuid", "").strip(),
                total_mib=parse_int(row.get("memory.total", "")),
                used_mib=parse_int(row.get("memory.used", "")),
                free_mib=parse_int(row.get("memory.free", "")),
                util_pct=parse_int(row.get("utilization.gpu", "")),
                driver=_text(row.get("driver_version", "")),
                mig={"enabled": True, "disabled": False}.get(mig_text),
            )
        )
    return tuple(out)


def parse_apps(text: str, fields: Iterable[str] = APP_FIELDS) -> tuple[GpuProcess, ...]:
    """`--query-compute-apps=<fields> --format=csv,noheader,nounits` -> GpuProcess per line.
    Process names are paths and may hold commas; they are kept whole."""
    names = list(fields)
    out: list[GpuProcess] = []
    for line in text.splitlines():
        if not line.strip() or "No running" in line:
            continue
        parts = _split(line, len(names), names.index("process_name"))
        if parts is None:
            continue
        row = dict(zip(names, parts))
        pid = parse_int(row.get("pid", ""))
        if pid is None:
            continue
        out.append(
            GpuProcess(
                pid=pid,
                gpu_uuid=row.get("gpu_uuid", "").strip(),
                name=_text(row.get("process_name", "")) or "?",
                used_mib=parse_int(row.get("used_memory", "")),
            )
        )
    return tuple(out)


def classify_smi_failure(rc: int, output: str) -> tuple[Status, str] | None:
    """Why nvidia-smi gave no table, as (status, one line for a user); None if it worked.

    rc 127 is the shell's "command not found" (the remote script reports it that way too)."""
    text = output.strip()
    first = text.splitlines()[0].strip() if text else ""
    if rc == 127 or (rc != 0 and "not found" in first and "nvidia-smi" in first):
        return "missing", "nvidia-smi not found: no NVIDIA driver installed"
    if "No devices were found" in text:
        return "no-devices", "No devices were found: the NVIDIA driver sees no GPU"
    if "version mismatch" in text:
        lib = re.search(r"NVML library version:\s*(\S+)", text)
        extra = f" (NVML library {lib.group(1)})" if lib else ""
        return (
            "mismatch",
            f"Driver/library version mismatch{extra}: the driver was upgraded, the old kernel module is still loaded",
        )
    if (
        "couldn't communicate with the NVIDIA driver" in text
        or "NVIDIA driver is not loaded" in text
    ):
        return "no-driver", "nvidia-smi cannot talk to the NVIDIA driver (kernel module not loaded)"
    if rc != 0:
        return "error", f"nvidia-smi failed (exit {rc}): {first or 'no output'}"
    if not text:
        return "no-devices", "nvidia-smi listed no GPU"
    return None


def smi_report(
    gpu_rc: int,
    gpu_out: str,
    apps_rc: int | None,
    apps_out: str,
    fields: Iterable[str] = GPU_FIELDS,
    where: str = "this machine",
) -> GpuReport:
    """The two nvidia-smi queries -> one report. A failed process query keeps the GPUs."""
    failure = classify_smi_failure(gpu_rc, gpu_out)
    if failure:
        return GpuReport(status=failure[0], message=failure[1], where=where)
    gpus = parse_gpus(gpu_out, fields)
    if not gpus:
        return GpuReport(
            status="error",
            message=f"could not read nvidia-smi's output: {gpu_out.strip()[:80]!r}",
            where=where,
        )
    procs = parse_apps(apps_out) if apps_rc == 0 else ()
    return GpuReport(status="ok", gpus=gpus, processes=procs, where=where)


# -- whose process is it --------------------------------------------------------------------------
_CARLA = re.compile(r"Carla(UE4|Unreal)", re.IGNORECASE)
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
_CONTAINER_CGROUP = re.compile(r"docker|containerd|libpod|kubepods|/lxc/")


@dataclass(frozen=True)
class ProcInfo:
    """What the process table says about a pid (psutil here, `ps` on a box)."""

    name: str
    user: str | None = None
    cmdline: str = ""
    in_container: bool = False


def process_role(
    info: ProcInfo, owners: frozenset[str] | None = None, agent_users: frozenset[str] | None = None
) -> Role | None:
    """Whose GPU memory is it? "carla": a CARLA server (CarlaUE4*/CarlaUnreal*) run by one of
    `owners` (None: any user counts, as on this machine). "agent": something a container runs,
    or a python process of one of `agent_users` (None: no agent runs on this machine, as on a
    box). None: someone else's, the thing that makes a shared GPU too small."""
    exe = info.cmdline.split(" ", 1)[0] if info.cmdline else ""
    if _CARLA.search(info.name) or _CARLA.search(exe):
        return (
            "carla" if owners is None or (info.user is not None and info.user in owners) else None
        )
    if agent_users is None:
        return None
    base = info.name.rsplit("/", 1)[-1]
    if info.in_container or (
        _PYTHON.match(base) and info.user is not None and info.user in agent_users
    ):
        return "agent"
    return None


def cgroup_in_container(cgroup_text: str) -> bool:
    """/proc/PID/cgroup of a process docker (or podman, k8s, lxc) started."""
    return bool(_CONTAINER_CGROUP.search(cgroup_text))


def same_program(smi_name: str, table_name: str) -> bool:
    """Does the process table's name fit nvidia-smi's? nvidia-smi shows host pids: when we run
    inside a container, the same pid here is another program, and its name must not be used."""
    a = smi_name.rsplit("/", 1)[-1][:15]
    b = table_name.rsplit("/", 1)[-1][:15]
    return bool(a and b) and (a.startswith(b) or b.startswith(a))


def with_roles(
    report: GpuReport,
    table: dict[int, ProcInfo] | None = None,
    *,
    owners: frozenset[str] | None = None,
    agent_users: frozenset[str] | None = None,
) -> GpuReport:
    """Name the GPU's processes from the process table where it knows them, and mark roles."""
    table = table or {}
    procs = []
    for p in report.processes:
        info = table.get(p.pid)
        known = p.name not in ("?", "") and not p.name.startswith("[")
        if info and (not known or same_program(p.name, info.name)):
            p = replace(
                p,
                name=info.name or p.name,
                user=info.user,
                cmdline=info.cmdline,
                in_container=info.in_container,
            )
        role = process_role(
            ProcInfo(p.name, p.user, p.cmdline, p.in_container), owners, agent_users
        )
        procs.append(replace(p, role=role))
    return replace(report, processes=tuple(procs))


def parse_ps(text: str) -> dict[int, ProcInfo]:
    """The box script's `ps` section: `PID CONTAINER(0|1) USER ARGS...` per line."""
    out: dict[int, ProcInfo] = {}
    for line in text.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        args = parts[3] if len(parts) > 3 else ""
        exe = args.split(" ", 1)[0].rsplit("/", 1)[-1] if args else "?"
        out[int(parts[0])] = ProcInfo(
            name=exe, user=parts[2], cmdline=args, in_container=parts[1] == "1"
        )
    return out


# -- the 10 GB rule -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    mode: Literal["local", "distributed"]
    reason: str
    gpu: int | None = None  # the GPU the verdict is about


def gib(mib: int | None) -> str:
    return "?" if mib is None else f"{mib / 1024:.1f} GB"


def available_mib(report: GpuReport, gpu: Gpu) -> int | None:
    """Free VRAM plus what CARLA and the agent already hold: they would be replaced, not added."""
    free = gpu.free
    if free is None:
        return None
    ours = sum(p.used_mib or 0 for p in report.processes_on(gpu) if p.role is not None)
    return free + ours


def local_verdict(report: GpuReport, need_mib: int = DEFAULT_NEED_MIB) -> Verdict:
    """Run server and agent here only when one GPU has more than `need_mib` available.

    Not on a MIG GPU (MIG instances have no graphics, so no Vulkan for CARLA); the best GPU is
    the one with the most available memory."""
    need = f"server and agent together need more than {gib(need_mib)}"
    if report.status != "ok":
        return Verdict("distributed", f"no usable NVIDIA GPU here ({report.message})")
    usable = [g for g in report.gpus if not g.mig]
    if not usable:
        return Verdict("distributed", "every GPU here is in MIG mode (no Vulkan for CARLA)")
    scored = [(available_mib(report, g), g) for g in usable]
    known = [(a, g) for a, g in scored if a is not None]
    if not known:
        return Verdict("distributed", "nvidia-smi reports no memory figures here")
    best_avail, best = max(known, key=lambda t: (t[0], -t[1].index))
    label = f"GPU {best.index} ({best.name}, {gib(best.total_mib)})"
    if best_avail > need_mib:
        pin = (
            f" (pin CARLA to it: server.gpu / -graphicsadapter, whose Vulkan index may differ from {best.index})"
            if len(report.gpus) > 1
            else ""
        )
        return Verdict("local", f"{label} has {gib(best_avail)} available; {need}{pin}", best.index)
    if best.total_mib is not None and best.total_mib <= need_mib:
        return Verdict("distributed", f"{label} is too small: {need}", best.index)
    others = (best.total_mib or 0) - best_avail
    return Verdict(
        "distributed",
        f"{label} has only {gib(best_avail)} available ({gib(others)} used by other programs); {need}",
        best.index,
    )


def box_vram(
    report: GpuReport,
    gpu_index: int | None = None,
    minimum_mib: int = SERVER_MIN_MIB,
    recommended_mib: int = SERVER_RECOMMENDED_MIB,
) -> tuple[Literal["ok", "warning", "failing"], str]:
    """Is there room for the CARLA server on the box (only the server runs there)?
    Names who else holds memory, since a shared box is the usual reason there is none."""
    gpus = [g for g in report.gpus if gpu_index is None or g.index == gpu_index]
    if report.status != "ok" or not gpus:
        return "failing", report.message or f"no GPU {gpu_index} on the box"
    scored = [(available_mib(report, g) or 0, g) for g in gpus if not g.mig]
    if not scored:
        return "failing", "every GPU is in MIG mode (no graphics for CARLA)"
    avail, g = max(scored, key=lambda t: (t[0], -t[1].index))
    others = [p for p in report.processes_on(g) if p.role is None]
    who = ", ".join(
        f"{p.name.rsplit('/', 1)[-1]} ({p.user or 'pid ' + str(p.pid)}, {gib(p.used_mib)})"
        for p in others[:3]
    )
    detail = f"GPU {g.index} ({g.name}): {gib(avail)} available of {gib(g.total_mib)}"
    if who:
        detail += f"; others using it: {who}"
    if avail < minimum_mib:
        return "failing", detail + f"; the server needs at least {gib(minimum_mib)}"
    if avail < recommended_mib:
        return "warning", detail + f"; {gib(recommended_mib)} recommended"
    return "ok", detail


def carla_usage(report: GpuReport) -> list[GpuProcess]:
    """The CARLA server's processes and their VRAM (for `status`)."""
    return [p for p in report.processes if p.role == "carla"]


# -- the box round trip ---------------------------------------------------------------------------
SECTION = "##carla-launch## "


def box_script(
    *,
    gpu_only: bool = False,
    package_root: str = "~/CARLA_Leaderboard_20",
    server_user: str = "carla",
    session: str = "carla",
) -> str:
    """One POSIX sh script that prints every fact a remote check needs, as sections.

    Each section is `##carla-launch## NAME`, the output, then `##carla-launch## rc N`. It starts
    with deploy's own prologue (`remote/shell.py`), so "who runs the server" and "where is the
    package" (`~` = the server user's home when we log in as root) mean what deploy means.
    Every command reads /dev/null: the script also works when fed to `sh -s` on stdin. PATH
    gets what a login shell adds (~/.local/bin, ~/bin) and NVIDIA's /usr/local/nvidia/bin,
    which non-interactive ssh commands miss."""
    from carla_launcher.remote.shell import MARKER, prologue

    gq = ",".join(GPU_FIELDS)
    lines = [
        prologue(server_user, session, package_root).rstrip("\n"),
        'PATH="$HOME/.local/bin:$HOME/bin:$PATH:/usr/local/nvidia/bin:/usr/sbin:/sbin"; export PATH',
        "LC_ALL=C; export LC_ALL",
        f"sec() {{ printf '\\n{SECTION}%s\\n' \"$1\"; }}",
        f"end() {{ printf '\\n{SECTION}rc %s\\n' \"$1\"; }}",
        "sec id",
        'id -u </dev/null; id -un </dev/null; echo "server_user=$SU $USER_EXISTS"; end 0',
        "sec gpus",
        "if command -v nvidia-smi >/dev/null 2>&1; then",
        f"  f='{gq},{MIG_FIELD}'",
        "  out=$(nvidia-smi --query-gpu=$f --format=csv,noheader,nounits </dev/null 2>&1); rc=$?",
        "  case $out in *'not a valid field'*)",
        f"    f='{gq}'",
        "    out=$(nvidia-smi --query-gpu=$f --format=csv,noheader,nounits </dev/null 2>&1); rc=$?;;",
        "  esac",
        '  echo "fields=$f"; printf \'%s\\n\' "$out"; end $rc',
        "  sec apps",
        f"  apps=$(nvidia-smi --query-compute-apps={','.join(APP_FIELDS)} --format=csv,noheader,nounits </dev/null 2>&1); rc=$?",
        "  printf '%s\\n' \"$apps\"; end $rc",
        "  sec ps",
        "  for p in $(printf '%s\\n' \"$apps\" | awk -F', *' '$2 ~ /^[0-9]+$/ {print $2}'); do",
        "    c=0; grep -qE 'docker|containerd|libpod|kubepods|/lxc/' /proc/$p/cgroup 2>/dev/null && c=1",
        "    ps -o pid=,user=,args= -p $p </dev/null 2>/dev/null | awk -v c=$c '{ $1 = $1 \" \" c; print }'",
        "  done; end 0",
        "else",
        "  echo 'nvidia-smi: not found'; end 127",
        "fi",
    ]
    if gpu_only:
        return "\n".join(lines) + "\n"
    icd = " ".join(shlex.quote(d) for d in VULKAN_ICD_DIRS)
    lines += [
        "sec vulkan",
        f'for d in {icd}; do ls -1 "$d"/*.json 2>/dev/null; done',
        'for f in $(printf %s "${VK_ICD_FILENAMES:-}:${VK_DRIVER_FILES:-}" | tr : " "); do [ -f "$f" ] && echo "$f"; done',
        "if command -v vulkaninfo >/dev/null 2>&1; then",
        "  echo vulkaninfo=yes",
        "  timeout 8 vulkaninfo --summary </dev/null 2>&1 | grep -E 'deviceName|driverName|ERROR' | head -n 8",
        "else echo vulkaninfo=no; fi; end 0",
        "sec disk",
        'echo "root=$ROOT"; d=$ROOT; while [ ! -e "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done',
        'df -Pk "$d" </dev/null 2>&1; end $?',
        "sec package",
        f'if [ -f "$ROOT/{MARKER}" ]; then echo marker=yes; head -c 2000 "$ROOT/{MARKER}"; echo; fi',
        '[ -f "$ROOT/CarlaUE4.sh" ] && echo launcher=yes; end 0',
        "sec ports",
        "if command -v ss >/dev/null 2>&1; then ss -ltnpH </dev/null 2>/dev/null || ss -ltnH </dev/null; end $?",
        "else cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; end 1; fi",
        "sec tmux",
        'if [ "$USER_EXISTS" = yes ]; then',
        "  as_server tmux list-sessions -F '#{session_name}' </dev/null 2>/dev/null; end $?",
        "else end 1; fi",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Section:
    text: str
    rc: int | None


def parse_sections(stdout: str) -> dict[str, Section]:
    """Split the script's output into its sections. Text before the first one (a login banner,
    a noisy ~/.bashrc) is ignored."""
    out: dict[str, Section] = {}
    name: str | None = None
    buf: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(SECTION):
            tag = line[len(SECTION) :].strip()
            if tag.startswith("rc ") and name is not None:
                rc = parse_int(tag[3:])
                out[name] = Section("\n".join(buf).strip("\n"), rc)
                name, buf = None, []
            else:
                if name is not None:
                    out[name] = Section("\n".join(buf).strip("\n"), None)
                name, buf = tag, []
        elif name is not None:
            buf.append(line)
    if name is not None:
        out[name] = Section("\n".join(buf).strip("\n"), None)
    return out


def parse_df_free_kib(text: str) -> int | None:
    """`df -Pk PATH`: the Available column of the last line."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        return None
    parts = lines[-1].split()
    return parse_int(parts[3]) if len(parts) >= 4 else None


@dataclass(frozen=True)
class Listener:
    port: int
    process: str | None = None  # from `ss -p` where we may see it


def parse_listeners(text: str) -> tuple[Listener, ...]:
    """`ss -ltnH` / `ss -ltnpH` lines, or /proc/net/tcp{,6} when ss is missing."""
    out: list[Listener] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "LISTEN" and len(parts) >= 4:
            local = parts[3]
            port = parse_int(local.rsplit(":", 1)[-1])
            proc = re.search(r'users:\(\("([^"]+)"', line)
            if port is not None:
                out.append(Listener(port, proc.group(1) if proc else None))
        elif len(parts) >= 4 and parts[0].endswith(":") and parts[0][:-1].isdigit():
            # /proc/net/tcp: "sl local_address rem_address st ..." (hex), st 0A = LISTEN
            if parts[3] == "0A" and ":" in parts[1]:
                out.append(Listener(int(parts[1].rsplit(":", 1)[1], 16)))
    return tuple(out)


@dataclass(frozen=True)
class BoxFacts:
    """What one ssh round trip told us about a box."""

    gpu: GpuReport
    uid: int | None = None
    login_user: str | None = None
    server_user: str | None = None  # who runs the server: the login user, or server.user as root
    server_user_exists: bool | None = None
    icd_files: tuple[str, ...] = ()
    vulkaninfo: bool | None = None
    vulkan_lines: tuple[str, ...] = ()
    package_root: str | None = None
    free_kib: int | None = None
    marker: dict[str, str] | None = None  # deploy's marker (key=value lines); None: no marker
    launcher: bool = False
    listeners: tuple[Listener, ...] = ()
    tmux_sessions: tuple[str, ...] = ()
    ps: dict[int, ProcInfo] = field(default_factory=dict)


def parse_box(stdout: str, where: str = "the box", server_user: str | None = None) -> BoxFacts:
    """The output of `box_script` -> BoxFacts. Missing sections leave fields unknown (None).
    CARLA processes count as ours when the login user or `server_user` runs them."""
    s = parse_sections(stdout)
    g = s.get("gpus", Section("", None))
    glines = g.text.splitlines()
    fields: tuple[str, ...] = GPU_FIELDS
    if glines and glines[0].startswith("fields="):
        fields = tuple(glines[0][len("fields=") :].split(","))
        glines = glines[1:]
    apps = s.get("apps", Section("", None))
    ps = parse_ps(s["ps"].text) if "ps" in s else {}
    report = smi_report(
        g.rc if g.rc is not None else 1, "\n".join(glines), apps.rc, apps.text, fields, where
    )

    uid = login = None
    server_user_exists: bool | None = None
    if "id" in s:
        idl = s["id"].text.splitlines()
        uid = parse_int(idl[0]) if idl else None
        login = idl[1].strip() if len(idl) > 1 else None
        for ln in idl:
            if ln.startswith("server_user="):
                name, _, exists = ln[len("server_user=") :].partition(" ")
                server_user_exists = exists.strip() == "yes"
                server_user = name or server_user
    owners = frozenset(u for u in (login, server_user) if u) or None
    report = with_roles(report, ps, owners=owners, agent_users=None)
    icd: list[str] = []
    vk: bool | None = None
    vk_lines: list[str] = []
    if "vulkan" in s:
        for ln in s["vulkan"].text.splitlines():
            ln = ln.strip()
            if ln.endswith(".json"):
                icd.append(ln)
            elif ln.startswith("vulkaninfo="):
                vk = ln.endswith("yes")
            elif ln:
                vk_lines.append(ln)
    root = free = None
    if "disk" in s:
        dl = s["disk"].text.splitlines()
        if dl and dl[0].startswith("root="):
            root = dl[0][5:]
            dl = dl[1:]
        free = parse_df_free_kib("\n".join(dl)) if s["disk"].rc == 0 else None
    marker: dict[str, str] | None = None
    launcher = False
    if "package" in s:
        for ln in s["package"].text.splitlines():
            ln = ln.strip()
            if ln == "marker=yes":
                marker = {}
            elif ln == "launcher=yes":
                launcher = True
            elif marker is not None and "=" in ln:
                k, _, v = ln.partition("=")
                marker[k.strip()] = v.strip()
    listeners = parse_listeners(s["ports"].text) if "ports" in s else ()
    tmux = (
        tuple(ln.strip() for ln in s["tmux"].text.splitlines() if ln.strip())
        if "tmux" in s and s["tmux"].rc == 0
        else ()
    )
    return BoxFacts(
        gpu=report,
        uid=uid,
        login_user=login,
        server_user=server_user,
        server_user_exists=server_user_exists,
        icd_files=tuple(icd),
        vulkaninfo=vk,
        vulkan_lines=tuple(vk_lines),
        package_root=root,
        free_kib=free,
        marker=marker,
        launcher=launcher,
        listeners=listeners,
        tmux_sessions=tmux,
        ps=ps,
    )


# -- ssh's own failures ---------------------------------------------------------------------------
SshKind = Literal[
    "ok",
    "host-key",
    "host-key-changed",
    "dns",
    "refused",
    "timeout",
    "unreachable",
    "auth",
    "other",
]


@dataclass(frozen=True)
class SshOutcome:
    kind: SshKind
    line: str = ""  # ssh's own words, one line
    new_key: bool = False  # accept-new added the box's key on this run


_SSH_PATTERNS: tuple[tuple[str, SshKind], ...] = (
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "host-key-changed"),
    ("Host key verification failed", "host-key"),
    ("host key is known for", "host-key"),
    ("Could not resolve hostname", "dns"),
    ("Connection refused", "refused"),
    ("timed out", "timeout"),
    ("No route to host", "unreachable"),
    ("Network is unreachable", "unreachable"),
    ("Permission denied", "auth"),
    ("Too many authentication failures", "auth"),
)


def classify_ssh(rc: int, stderr: str) -> SshOutcome:
    """What an `ssh` run says about the box: exit 255 is ssh's own failure (any other code is
    the remote command's). Host-key problems are told apart from an unreachable box."""
    new_key = "Permanently added" in stderr
    if rc != 255:
        return SshOutcome("ok", new_key=new_key)
    lines = [
        ln.strip()
        for ln in stderr.splitlines()
        if ln.strip() and not ln.startswith(("Warning: Permanently added", "@@@"))
    ]
    for needle, kind in _SSH_PATTERNS:
        for ln in lines:
            if needle in ln:
                return SshOutcome(kind, ln, new_key)
    return SshOutcome(
        "other", lines[-1] if lines else "ssh failed (exit 255) without a message", new_key
    )


#: One-line fixes for each way nvidia-smi can fail.
SMI_FIXES: dict[str, str] = {
    "missing": "install the NVIDIA driver (Ubuntu: `sudo ubuntu-drivers install`), or run the server on a GPU box",
    "no-devices": "check `lspci | grep -i nvidia`: the GPU may be off, unseated or passed through to a VM",
    "mismatch": "reboot: the driver was upgraded and the loaded kernel module is the old one",
    "no-driver": "load the driver (`sudo modprobe nvidia`, or reboot; with Secure Boot, enrol the module key)",
    "error": "run `nvidia-smi` by hand to see the full error",
    "unreachable": "fix the ssh connection first (see the box checks)",
}
