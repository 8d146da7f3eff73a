"""The shell around `resources`: ask nvidia-smi (or NVML) here or on a box, name the processes,
render the table, and refresh it in place for `gpu --watch`.

Locally, NVML (the `nvidia-ml-py` package, module `pynvml`) is used when it is installed and
the driver answers: it also lists graphics-only processes (a Vulkan CARLA can be one), which
nvidia-smi's `--query-compute-apps` does not, and a watcher keeps one NVML session open instead of
starting nvidia-smi every second. Everywhere else (boxes, no NVML, NVML failing) the CSV path
runs; `CARLA_LAUNCH_GPU_BACKEND=smi` forces the CSV path (the tests set it: no GPU here).
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO

from carla_launcher import resources as R
from carla_launcher.box import facts as box_facts
from carla_launcher.box import sections, transport
from carla_launcher.box.explain import SshOutcome, classify
from carla_launcher.errors import LauncherError
from carla_launcher.nvidia import roles, smi

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

SMI_TIMEOUT = 15.0  # nvidia-smi can take seconds when the driver wakes the GPU up


# -- running things -------------------------------------------------------------------------------
def run(
    argv: list[str], timeout: float = SMI_TIMEOUT, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """(rc, stdout, stderr); 127 when the program is not there, 124 on timeout (as coreutils)."""
    try:
        p = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: not found"
    except PermissionError as e:
        return 126, "", f"{argv[0]}: {e.strerror}"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]}: no answer within {timeout:.0f} s"
    return p.returncode, p.stdout, p.stderr


# -- this machine ---------------------------------------------------------------------------------
def smi_snapshot(where: str = "this machine") -> smi.GpuReport:
    """Both CSV queries through the nvidia-smi on PATH (real, or the tests' fake)."""
    rc, out, err = run(smi.smi_gpu_argv(with_mig=True))
    fields: tuple[str, ...] = smi.GPU_FIELDS + (smi.MIG_FIELD,)
    if rc != 0 and smi.unknown_field(out + err):
        rc, out, err = run(smi.smi_gpu_argv(with_mig=False))
        fields = smi.GPU_FIELDS
    if rc != 0 or smi.classify_smi_failure(rc, out + err):
        return smi.smi_report(rc, out + err, None, "", fields, where)
    arc, aout, _ = run(smi.smi_apps_argv())
    return smi.smi_report(rc, out, arc, aout, fields, where)


_nvml: Any = None  # the pynvml module once nvmlInit worked; the session stays open (see top)


def nvml_snapshot(where: str = "this machine") -> smi.GpuReport | None:
    """The same report through NVML; None when NVML is not installed or the driver does not
    answer (then nvidia-smi runs and says why in its own words)."""
    global _nvml
    if _nvml is None:
        try:
            import pynvml  # type: ignore[import-not-found]
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception:  # noqa: BLE001  NVMLError_LibraryNotFound, _DriverNotLoaded, _LibRmVersionMismatch...
            return None
        _nvml = pynvml
    n = _nvml

    def text(v: Any) -> str:
        return v.decode() if isinstance(v, bytes) else str(v)

    def mib(v: Any) -> int | None:
        return None if v is None or v >= 2**63 else int(v) // (1024 * 1024)

    try:
        driver = text(n.nvmlSystemGetDriverVersion())
        gpus: list[smi.Gpu] = []
        procs: dict[int, smi.GpuProcess] = {}
        for i in range(n.nvmlDeviceGetCount()):
            h = n.nvmlDeviceGetHandleByIndex(i)
            uuid = text(n.nvmlDeviceGetUUID(h))
            mem = n.nvmlDeviceGetMemoryInfo(h)
            try:
                util: int | None = int(n.nvmlDeviceGetUtilizationRates(h).gpu)
            except n.NVMLError:
                util = None
            try:
                mig: bool | None = n.nvmlDeviceGetMigMode(h)[0] == n.NVML_DEVICE_MIG_ENABLE
            except n.NVMLError:
                mig = None
            gpus.append(
                smi.Gpu(
                    i,
                    text(n.nvmlDeviceGetName(h)),
                    uuid,
                    mib(mem.total),
                    mib(mem.used),
                    mib(mem.free),
                    util,
                    driver,
                    mig,
                )
            )
            for fn in (
                n.nvmlDeviceGetComputeRunningProcesses,
                n.nvmlDeviceGetGraphicsRunningProcesses,
            ):
                try:
                    for p in fn(h):
                        prev = procs.get(p.pid)
                        used = mib(p.usedGpuMemory)
                        if prev is None or (used or 0) > (prev.used_mib or 0):
                            procs[p.pid] = smi.GpuProcess(int(p.pid), uuid, "?", used)
                except n.NVMLError:
                    pass
    except Exception:  # noqa: BLE001  a driver failing mid-way: let nvidia-smi tell
        _nvml = None
        return None
    return smi.GpuReport("ok", tuple(gpus), tuple(procs.values()), where=where, source="nvml")


def describe_local(pids: list[int]) -> dict[int, roles.ProcInfo]:
    """Name local pids through psutil: name, user, command line, started by a container?"""
    import psutil

    out: dict[int, roles.ProcInfo] = {}
    for pid in pids:
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                name = p.name()
                user = p.username()
                cmd = " ".join(p.cmdline())
            in_container = False
            try:
                with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
                    in_container = roles.cgroup_in_container(f.read())
            except OSError:
                pass
            if not in_container:
                in_container = any("containerd-shim" in a.name() for a in p.parents())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        out[pid] = roles.ProcInfo(name=name, user=user, cmdline=cmd, in_container=in_container)
    return out


def local_report() -> smi.GpuReport:
    """This machine's GPUs, processes named and marked."""
    backend = os.environ.get("CARLA_LAUNCH_GPU_BACKEND", "auto")
    report = None
    if backend in ("auto", "nvml"):
        report = nvml_snapshot()
    if report is None:
        report = smi_snapshot()
    me = getpass.getuser()
    table = describe_local([p.pid for p in report.processes])
    return roles.with_roles(report, table, owners=None, agent_users=frozenset({me}))


# -- a box ----------------------------------------------------------------------------------------
def box_label(profile: Profile, host: str | None) -> str:
    return "this machine (connector: local)" if profile.remote.connector == "local" else str(host)


def gpu_script(profile: Profile) -> str:
    return box_facts.facts_script(
        box_facts.GPU, server_user=profile.server.user, session=profile.server.tmux_session
    )


def box_report(profile: Profile, host: str | None, timeout: float = 20.0) -> smi.GpuReport:
    """A box's GPUs through one ssh round trip (the GPU sections of the box script)."""
    where = box_label(profile, host)
    r = transport.run(profile, host, gpu_script(profile), timeout)
    rc, out, err = r.rc, r.stdout, r.stderr
    if rc == 124:
        return smi.GpuReport(
            "unreachable", message=f"no answer from {host} within {timeout:.0f} s", where=where
        )
    ssh = classify(rc, err) if profile.remote.connector != "local" else SshOutcome("ok")
    if ssh.kind != "ok":
        return smi.GpuReport("unreachable", message=f"cannot reach {host}: {ssh.line}", where=where)
    return box_facts.parse_facts(out, where=where, server_user=profile.server.user).gpu


def reports(profile: Profile | None) -> list[smi.GpuReport]:
    """This machine's report, or one per host of the profile (asked in parallel)."""
    if profile is None:
        return [local_report()]
    hosts: list[str | None] = list(profile.remote.hosts) or [None]
    if len(hosts) == 1:
        return [box_report(profile, hosts[0])]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
        return list(pool.map(lambda h: box_report(profile, h), hosts))


# -- what a user sees -----------------------------------------------------------------------------
ROLE_LABEL: dict[str | None, str] = {"carla": "CARLA", "agent": "agent", None: "other"}


def _pct(used: int | None, total: int | None) -> str:
    return f"{100 * used / total:.0f}%" if used is not None and total else "?"


def render(report: smi.GpuReport, *, box: bool, need_mib: int = R.DEFAULT_NEED_MIB) -> str:
    """The table for one machine, and the line that says what it means for running CARLA."""
    lines: list[str] = []
    if report.status != "ok":
        lines.append(f"{report.where}: no usable NVIDIA GPU: {report.message}")
        fix = smi.SMI_FIXES.get(report.status)
        if fix:
            lines.append(f"  fix: {fix}")
    else:
        drivers = sorted({g.driver for g in report.gpus if g.driver})
        src = " via NVML" if report.source == "nvml" else ""
        lines.append(
            f"{report.where}: {len(report.gpus)} GPU{'s' if len(report.gpus) != 1 else ''}"
            f" · driver {', '.join(drivers) or '?'}{src}"
        )
        rows: list[tuple[str, ...]] = [("GPU", "NAME", "USED", "TOTAL", "FREE", "UTIL", "")]
        for g in report.gpus:
            note = "MIG on: no graphics for CARLA" if g.mig else ""
            rows.append(
                (
                    str(g.index),
                    g.name,
                    f"{R.gib(g.used_mib)} ({_pct(g.used_mib, g.total_mib)})",
                    R.gib(g.total_mib),
                    R.gib(g.free),
                    "?" if g.util_pct is None else f"{g.util_pct}%",
                    note,
                )
            )
        lines += _table(rows)
        lines.append("")
        if report.processes:
            prow: list[tuple[str, ...]] = [("WHO", "GPU", "VRAM", "PID", "USER", "PROCESS")]
            for p in sorted(
                report.processes,
                key=lambda p: (report.gpu_index(p.gpu_uuid) or 0, -(p.used_mib or 0)),
            ):
                idx = report.gpu_index(p.gpu_uuid)
                name = p.name.rsplit("/", 1)[-1] + (" (container)" if p.in_container else "")
                prow.append(
                    (
                        ROLE_LABEL[p.role],
                        "?" if idx is None else str(idx),
                        R.gib(p.used_mib),
                        str(p.pid),
                        p.user or "?",
                        name,
                    )
                )
            lines += _table(prow)
        else:
            lines.append("no process holds GPU memory (nvidia-smi lists compute processes only)")
        for g in report.gpus:
            on = report.processes_on(g)
            listed = sum(p.used_mib or 0 for p in on)
            known = bool(on) and all(p.used_mib is not None for p in on)
            if g.used_mib is not None and known and g.used_mib - listed >= 256:
                lines.append(
                    f"GPU {g.index}: {R.gib(g.used_mib - listed)} held by processes not listed "
                    "(graphics, other containers)"
                )
    lines.append("")
    if box:
        status, detail = R.box_vram(report)
        word = {
            "ok": "room for the CARLA server",
            "warning": "tight for the CARLA server",
            "failing": "no room for the CARLA server",
        }[status]
        lines.append(f"{word}: {detail}")
    else:
        v = R.local_verdict(report, need_mib)
        lines.append(f"verdict: {v.mode}: {v.reason}")
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {"USED", "TOTAL", "FREE", "UTIL", "VRAM", "PID", "GPU"}
    out = []
    for r in rows:
        cells = [
            c.rjust(w) if rows[0][i] in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths))
        ]
        out.append("  ".join(cells).rstrip())
    return out


def to_json(
    report: smi.GpuReport, *, box: bool, need_mib: int = R.DEFAULT_NEED_MIB
) -> dict[str, Any]:
    d = asdict(report)
    for p, src in zip(d["processes"], report.processes, strict=True):
        p["gpu"] = report.gpu_index(src.gpu_uuid)
    if box:
        status, detail = R.box_vram(report)
        d["server_room"] = {"status": status, "detail": detail}
    else:
        v = R.local_verdict(report, need_mib)
        d["verdict"] = {"mode": v.mode, "reason": v.reason, "gpu": v.gpu}
    return d


# -- --watch --------------------------------------------------------------------------------------
HOME, CLEAR_EOL, CLEAR_EOS = "\x1b[H", "\x1b[K", "\x1b[J"
HIDE, SHOW = "\x1b[?25l", "\x1b[?25h"


def fit(lines: list[str], width: int, height: int) -> list[str]:
    """Lines that fit a terminal (a tmux pane beside the server is narrow): prose is wrapped,
    table rows (columns set apart by two spaces) are cut, and at most height - 1 lines are
    kept, since a line feed on the last row would scroll and break the redraw in place."""
    import textwrap

    width = max(20, width)
    out: list[str] = []
    for ln in lines:
        if len(ln) <= width:
            out.append(ln)
        elif "  " in ln.strip():
            out.append(ln[: width - 1] + "…")
        else:
            out += textwrap.wrap(ln, width, subsequent_indent="  ") or [""]
    return out[: max(1, height - 1)]


def frame(
    text: str, title: str, now: float | None = None, size: tuple[int, int] = (500, 500)
) -> str:
    """One screen: the cursor goes home, each line clears what the last frame left to its right,
    and the rest of the screen is cleared: refresh in place, no flicker (as `watch` does)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    body = fit(
        [f"{title}  ·  every 1 s  ·  {stamp}  ·  Ctrl-C to quit", "", *text.splitlines()], *size
    )
    return HOME + "".join(f"{ln}{CLEAR_EOL}\n" for ln in body) + CLEAR_EOS


def watch(
    snapshot: Callable[[], str],
    title: str,
    interval: float = 1.0,
    out: TextIO | None = None,
    frames: int | None = None,
) -> None:
    """Redraw `snapshot()` every `interval` seconds until Ctrl-C (or `frames` frames)."""
    out = out or sys.stdout
    out.write(HIDE + "\x1b[2J")
    n = 0
    try:
        while frames is None or n < frames:
            start = time.monotonic()
            try:
                text = snapshot()
            except LauncherError as e:
                text = f"error: {e}"
            size = shutil.get_terminal_size((120, 40))
            out.write(frame(text, title, size=(size.columns, size.lines)))
            out.flush()
            n += 1
            if frames is not None and n >= frames:
                break
            time.sleep(max(0.05, interval - (time.monotonic() - start)))
    except KeyboardInterrupt:
        pass
    finally:
        out.write(SHOW)
        out.flush()


class BoxStream:
    """A box's GPU facts, streamed once a second over ONE ssh connection: the remote loop runs
    the GPU sections, prints a frame marker, sleeps. Cheaper than an ssh handshake per second.
    Restarts the connection after a failure, with the failure shown meanwhile."""

    MARK = sections.MARK + "frame"

    def __init__(self, profile: Profile, host: str | None, interval: float = 1.0) -> None:
        self.profile, self.host, self.interval = profile, host, interval
        self.latest = smi.GpuReport(
            "unreachable", message="connecting…", where=box_label(profile, host)
        )
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def argv(self) -> list[str]:
        loop = f"while :; do\n{gpu_script(self.profile)}printf '\\n%s\\n' '{self.MARK}'\nsleep {self.interval:g}\ndone"
        if self.profile.remote.connector == "local":
            return ["sh", "-c", loop]
        from carla_launcher.box.ssh import ssh_argv

        return ssh_argv(self.profile, self.host, command=f"sh -c {shlex.quote(loop)}")

    def _run(self) -> None:
        where = box_label(self.profile, self.host)
        while not self._stop.is_set():
            err = ""
            try:
                self._proc = subprocess.Popen(
                    self.argv(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                    text=True,
                    bufsize=1,
                )
                assert self._proc.stdout is not None
                buf: list[str] = []
                for line in self._proc.stdout:
                    if line.rstrip("\n") == self.MARK:
                        self.latest = box_facts.parse_facts(
                            "".join(buf), where=where, server_user=self.profile.server.user
                        ).gpu
                        buf = []
                    else:
                        buf.append(line)
                rc = self._proc.wait()
                err = self._proc.stderr.read() if self._proc.stderr else ""
            except (OSError, ImportError) as e:
                rc, err = 255, str(e)
            if self._stop.is_set():
                break
            ssh = classify(rc, err) if rc == 255 else SshOutcome("other", f"exit {rc}")
            self.latest = smi.GpuReport(
                "unreachable",
                message=f"lost {self.host}: {ssh.line or err.strip()}; retrying",
                where=where,
            )
            self._stop.wait(2.0)

    def close(self) -> None:
        self._stop.set()
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def watch_argv(profile_ref: str | None = None) -> list[str]:
    """The command line of `gpu --watch`, for a tmux pane (`attach` puts it next to the server)."""
    return [
        sys.executable,
        "-m",
        "carla_launcher",
        "gpu",
        *([profile_ref] if profile_ref else []),
        "--watch",
    ]


def server_vram(report: smi.GpuReport) -> tuple[int, int | None]:
    """(number of CARLA processes, MiB they hold) for `status`; MiB None when unknown."""
    carla = R.carla_usage(report)
    if not carla:
        return 0, None
    used = [p.used_mib for p in carla]
    return len(carla), None if any(u is None for u in used) else sum(
        u for u in used if u is not None
    )
