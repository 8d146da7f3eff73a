"""The systemd user unit: one template, one instance per project folder.

The instance name is the folder's path escaped as `systemd-escape --path` does, so `%f` in the
unit gives the folder back. The template holds the defaults; `install` adds a drop-in per
instance whose ExecStart names the interpreter, the folder and the profile by absolute paths
(user units get no login-shell PATH, and do not run in the folder the user ran install from).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from carla_launcher import proc
from carla_launcher.fsutil import atomic_write

TEMPLATE = "carla-launch@.service"
# what `pip install --user` / pipx give; `install` uses sys.executable instead
REPO_EXEC = "%h/.local/bin/carla-launch"

_UNIT = """\
# carla-launch: keep the distributed compose variants of one folder current.
# One instance per project folder; the instance name is the folder's path, escaped:
#   systemctl --user enable --now "carla-launch@$(systemd-escape --path /abs/project/build).service"
# `carla-launch daemon install --dir build` does that (and names the profile in a drop-in).
# Logs: journalctl --user -u 'carla-launch@*' -f
[Unit]
Description=carla-launch: distributed compose variants of %f
StartLimitIntervalSec=60
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
WorkingDirectory=%f
ExecStart={exec_start} daemon --dir %f
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
# exit code 2 is bad input (no profile, no address): restarting would not fix it
RestartPreventExitStatus=2
WatchdogSec=30
TimeoutStopSec=10
Environment=PYTHONUNBUFFERED=1

[Install]
WantedBy=default.target
"""


# -- pure parts -----------------------------------------------------------------------------------
def escape_path(path: str | os.PathLike[str]) -> str:
    """`systemd-escape --path`: /home/u/my proj/build -> home-u-my\\x20proj-build."""
    p = os.path.normpath(os.fspath(path)).strip("/")
    if not p:
        return "-"
    out = []
    for i, ch in enumerate(p):
        if ch == "/":
            out.append("-")
        elif (ch.isascii() and ch.isalnum()) or ch in ":_" or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


def absolute_folder(path: str | os.PathLike[str]) -> Path:
    """Absolute, `..` folded, symlinks kept: the folder as the user named it."""
    return Path(os.path.normpath(Path(path).absolute()))


def instance_name(folder: str | os.PathLike[str]) -> str:
    return f"carla-launch@{escape_path(absolute_folder(folder))}.service"


def _word(arg: str) -> str:
    """One ExecStart word: `%` doubled (specifiers), quoted when it holds spaces or quotes."""
    arg = arg.replace("%", "%%")
    if any(c.isspace() or c in "\"'\\;$" for c in arg):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$") + '"'
    return arg


def render_unit(exec_start: str = REPO_EXEC) -> str:
    """The template unit; exec_start is the command that runs carla-launch (already escaped)."""
    return _UNIT.format(exec_start=exec_start)


def exec_words(argv: list[str]) -> str:
    return " ".join(_word(a) for a in argv)


def this_interpreter() -> list[str]:
    """The command that runs this very installation (a venv's python stays the venv's)."""
    return [sys.executable, "-m", "carla_launcher"]


def render_dropin(command: list[str], daemon_args: list[str]) -> str:
    """The per-instance drop-in: the full ExecStart, absolute paths (replaces the template's)."""
    return (
        "# Written by `carla-launch daemon install`; removed by `carla-launch daemon uninstall`.\n"
        "[Service]\n"
        "ExecStart=\n"
        f"ExecStart={exec_words(command)} daemon --dir %f {exec_words(daemon_args)}".rstrip()
        + "\n"
    )


# -- the user's systemd folder --------------------------------------------------------------------
def user_unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


@dataclass
class Report:
    """What a command did: lines for stdout, lines for stderr, and the exit code."""

    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    code: int = 0


def _systemctl(*args: str, timeout: float = 30) -> proc.Result | None:
    """`systemctl --user ARGS`; None when there is no systemctl or it could not answer."""
    exe = shutil.which("systemctl")
    if exe is None:
        return None
    r = proc.run([exe, "--user", *args], timeout)
    return None if r.rc in (proc.NOT_FOUND, proc.CANNOT_RUN, proc.TIMED_OUT) else r


def user_manager() -> bool:
    """Is there a systemd user manager to talk to? (Not in most containers, nor in WSL1.)"""
    r = _systemctl("show-environment", timeout=5)
    return r is not None and r.rc == 0


def verify(unit: str, unit_dir: Path | None = None) -> tuple[bool, str]:
    """`systemd-analyze --user verify` offline; (ok, stderr). It exits 0 on some typos and only
    says so on stderr, so ok means: exit 0 AND nothing on stderr."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        return True, ""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="carla-launch-verify-") as runtime:
        Path(runtime).chmod(0o700)
        if not Path(env.get("XDG_RUNTIME_DIR") or "/nonexistent").is_dir():
            env["XDG_RUNTIME_DIR"] = runtime  # without it: "Failed to initialize manager"
        target = unit if unit_dir is None else str(unit_dir / unit)
        r = proc.run([exe, "--user", "verify", target], 60, env=env)
    return r.rc == 0 and not r.stderr.strip(), r.stderr.strip()


def _alternatives(folder: Path, daemon_args: list[str]) -> str:
    import shlex

    from carla_launcher.daemon.status import folder_key
    from carla_launcher.state import state_dir

    log = state_dir() / f"daemon-{folder_key(folder)}.log"
    cmd = shlex.join(["carla-launch", "daemon", "--dir", str(folder), *daemon_args])
    return f"run `{cmd}` in a tmux pane, or `nohup {cmd} >>{shlex.quote(str(log))} 2>&1 &`"


def install(folder: Path, daemon_args: list[str], command: list[str] | None = None) -> Report:
    """Write the template and this folder's drop-in, then reload, enable and start the instance."""
    rep = Report()
    folder = absolute_folder(folder)
    command = command or this_interpreter()
    unit_dir = user_unit_dir()
    unit_dir.mkdir(parents=True, exist_ok=True)
    name = instance_name(folder)
    template = unit_dir / TEMPLATE
    text = render_unit(exec_words(command))
    if not template.exists() or template.read_text() != text:
        atomic_write(template, text)
    dropin_dir = unit_dir / f"{name}.d"
    dropin_dir.mkdir(exist_ok=True)
    atomic_write(dropin_dir / "carla-launch.conf", render_dropin(command, daemon_args))
    rep.out.append(f"wrote {template} and {dropin_dir}/carla-launch.conf")
    ok, problems = verify(name)
    if not ok:
        rep.err += [f"warning: systemd-analyze: {line}" for line in problems.splitlines()]
    if not user_manager():
        rep.err.append(
            f"carla-launch: no systemd user manager here (a container or WSL?), so {name} was "
            f"written but not started: {_alternatives(folder, daemon_args)}"
        )
        rep.code = 1
        return rep
    for args in (("daemon-reload",), ("enable", "--now", name)):
        r = _systemctl(*args, timeout=120)
        if r is None or r.rc != 0:
            why = (r.stderr.strip().splitlines() or ["failed"])[-1] if r is not None else "failed"
            rep.err.append(f"carla-launch: systemctl --user {' '.join(args)}: {why}")
            rep.code = 1
            return rep
    rep.out.append(f"started {name} (it syncs at start, then on every change)")
    rep.out.append(f"logs: journalctl --user -u '{name}' -f")
    rep.out.append("to keep it running after you log out: loginctl enable-linger $USER")
    return rep


def uninstall(folder: Path) -> Report:
    """Stop and disable this folder's instance, remove its drop-in, and the template when unused."""
    rep = Report()
    folder = absolute_folder(folder)
    unit_dir = user_unit_dir()
    name = instance_name(folder)
    manager = user_manager()
    if manager:
        r = _systemctl("disable", "--now", name, timeout=120)
        if r is not None and r.rc == 0:
            rep.out.append(f"stopped and disabled {name}")
    dropin_dir = unit_dir / f"{name}.d"
    if dropin_dir.is_dir():
        shutil.rmtree(dropin_dir)
        rep.out.append(f"removed {dropin_dir}")
    others = [p for p in unit_dir.glob("carla-launch@?*.service.d") if p.is_dir()]
    others += list(unit_dir.glob("*.wants/carla-launch@?*.service"))
    template = unit_dir / TEMPLATE
    if template.exists() and not others:
        template.unlink()
        rep.out.append(f"removed {template}")
    if not rep.out:
        rep.out.append(f"{name} was not installed")
    if manager:
        _systemctl("daemon-reload")
    else:
        rep.err.append(
            "carla-launch: no systemd user manager here (a container or WSL?), so nothing ran "
            "under systemd; a daemon started by hand is stopped with `kill PID` "
            "(see `carla-launch daemon status`)"
        )
    return rep


def unit_status(folder: Path) -> dict[str, object]:
    """Keys: unit (instance name), path (template path), installed, manager, active (str|None)."""
    folder = absolute_folder(folder)
    unit_dir = user_unit_dir()
    name = instance_name(folder)
    installed = (unit_dir / TEMPLATE).exists() and (unit_dir / f"{name}.d").is_dir()
    manager = user_manager()
    active = None
    if manager and installed:
        r = _systemctl("is-active", name, timeout=10)
        active = r.stdout.strip() if r is not None else None
    return {
        "unit": name,
        "path": str(unit_dir / TEMPLATE),
        "installed": installed,
        "manager": manager,
        "active": active,
    }
