"""The local tmux session: the remote server's pane beside the agent's pane (libtmux), one
window per server and agent pair (`stack/pairs.py` says why).

`layout` decides what runs where (pure); `ensure_session` makes one window of tmux match it
without touching a pane that is still running; `attach` hands the terminal to tmux.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import libtmux

SOCKET_ENV = "CARLA_LAUNCH_TMUX_SOCKET"  # a private tmux socket (-L NAME), for tests and CI
ROLE_OPTION = "@carla_role"
WINDOW = "carla"
#: How much of the pane it splits a pane below the server takes (the agent takes half).
SPLIT_SIZE = {"gpu": "30%", "tunnel": "20%"}
# Passed into panes explicitly: a tmux server started earlier has its own, older environment.
PASS_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "TERM",
    "SSH_AUTH_SOCK",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "DOCKER_CONTEXT",
    "COMPOSE_PROJECT_NAME",
    "XDG_STATE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_RUNTIME_DIR",
    SOCKET_ENV,
)


_ENDED = (
    'status=0; "$@" || status=$?; '
    'printf "\\n[%s ended: exit status %d]\\n" "$0" "$status"; exit "$status"'
)


@dataclass(frozen=True)
class PaneSpec:
    role: str  # server | agent | tunnel | gpu
    title: str
    argv: tuple[str, ...]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def shell(self) -> str:
        """The command, followed by a line saying how it ended (tmux's own "Pane is dead"
        line is missing when the pane's output closes before its exit status is known)."""
        return shlex.join(["sh", "-c", _ENDED, self.argv[0], *self.argv])


def session_name(profile_key: str) -> str:
    """tmux turns '.' and ':' in session names into '_'; the key has neither."""
    return f"carla-{profile_key}"


def layout(
    server_argv: Sequence[str],
    agent_argv: Sequence[str] | None,
    cwd: Path,
    *,
    gpu_argv: Sequence[str] | None = None,
    env: dict[str, str] | None = None,
    server_title: str = "server",
    agent_title: str = "agent",
    agent_env: dict[str, str] | None = None,
    tunnel_argv: Sequence[str] | None = None,
    tunnel_title: str = "tunnel",
) -> list[PaneSpec]:
    """The panes of the session, in order: server, agent, the server's SSH tunnel, then the
    optional GPU watch. `agent_env` goes to the agent pane only (e.g. the box's address for
    env-mode variants)."""
    env = dict(env or {})
    panes = [PaneSpec("server", server_title, tuple(server_argv), cwd, env)]
    if agent_argv:
        agent = {**env, **(agent_env or {})}
        panes.append(PaneSpec("agent", agent_title, tuple(agent_argv), cwd, agent))
    if tunnel_argv:
        panes.append(PaneSpec("tunnel", tunnel_title, tuple(tunnel_argv), cwd, env))
    if gpu_argv:
        panes.append(PaneSpec("gpu", "gpu", tuple(gpu_argv), cwd, env))
    return panes


def pane_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASS_ENV if os.environ.get(k)}
    env.update(extra or {})
    return env


# -- tmux ----------------------------------------------------------------------------------------
def tmux_server() -> libtmux.Server:
    sock = os.environ.get(SOCKET_ENV)
    return libtmux.Server(socket_name=sock) if sock else libtmux.Server()


def find_session(server: libtmux.Server, name: str) -> libtmux.Session | None:
    if not server.is_alive():
        return None
    return server.sessions.get(session_name=name, default=None)


def _role(pane: libtmux.Pane) -> str:
    """The role we stored on the pane, or "" for a pane we did not make."""
    role = pane.show_option(ROLE_OPTION, ignore_errors=True)
    return str(role) if role else ""


class PaneState(TypedDict):
    """What `status` and `ensure_session` need to know about one of our panes."""

    alive: bool
    exit_status: int | None
    pid: int | None
    command: str
    pane_id: str | None


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _state(pane: libtmux.Pane) -> PaneState:
    return {
        "alive": pane.pane_dead != "1",
        "exit_status": _int(pane.pane_dead_status),
        "pid": _int(pane.pane_pid),
        "command": pane.pane_start_command or "",
        "pane_id": pane.pane_id,
    }


def pane_states(session: libtmux.Session, window: str | None = None) -> dict[str, PaneState]:
    """role -> {alive, exit_status, pid, command, pane_id} for the panes we made, in `window`
    (None: every window; a role of a later window then hides the earlier one's)."""
    states: dict[str, PaneState] = {}
    for win in session.windows:
        if window is not None and win.window_name != window:
            continue
        for pane in win.panes:  # list-panes: the pane_* fields are fresh
            role = _role(pane)
            if role:
                states[role] = _state(pane)
    return states


def window_states(session: libtmux.Session) -> dict[str, dict[str, PaneState]]:
    """window name -> its panes' states (`pane_states`), in the session's order."""
    out: dict[str, dict[str, PaneState]] = {}
    for win in session.windows:
        roles = {r: _state(p) for p in win.panes if (r := _role(p))}
        if roles:
            out[str(win.window_name)] = roles
    return out


@dataclass
class EnsureResult:
    created: list[str] = field(default_factory=list)
    respawned: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.respawned or self.closed)


def ensure_session(
    server: libtmux.Server,
    name: str,
    panes: list[PaneSpec],
    restart: set[str] | frozenset[str] = frozenset(),
    window: str = WINDOW,
    close: set[str] | frozenset[str] = frozenset(),
) -> EnsureResult:
    """Make the session's `window` hold these panes (the session and the window are made when
    missing). Running panes are kept as they are (unless their role is in `restart`); dead
    ones are started again with their (possibly new) command; missing ones are added; those
    of a role in `close` are closed. At most three tmux calls (a window of `up` costs about
    what one costs): what is there, the window when missing, then every change at once."""
    rows = _rows(server, name)
    win = _window_id(rows, window)
    result = EnsureResult()
    existing: dict[str, tuple[str, bool]] = {}  # role -> (pane id, alive)
    if win is None:
        first = panes[0]
        make = (
            ["new-window", "-d", "-t", f"={name}:"]
            if rows
            else ["new-session", "-d", "-s", name, "-x", "200", "-y", "50"]
        )
        # one command list: remain-on-exit is on before tmux notices that a command which
        # fails at once has exited (its pane and message stay)
        target = f"={name}:{window}"
        made = _tmux(
            server,
            [*make, "-n", window, "-P", "-F", "#{pane_id}", *_start(first)],
            _remain(name, window),
            ["set-option", "-w", "-t", target, "pane-border-status", "top"],
            ["set-option", "-w", "-t", target, "pane-border-format", " #{pane_title} "],
            *_marked(target, first),
        )
        existing[first.role] = (made[0].strip(), True)
        result.created.append(first.role)
    else:
        existing = {r[3]: (r[2], r[4]) for r in rows if r[0] == win and r[3]}
    server_pane = existing.get("server", (None,))[0] or next(
        (r[2] for r in rows if r[0] == win and r[5]), f"={name}:{window}"
    )
    todo: list[list[str]] = []
    for spec in panes:
        pane, alive = existing.get(spec.role, (None, False))
        if pane is None:  # split beside the server (it is the active pane until it ends)
            size = ["-l", SPLIT_SIZE[spec.role]] if spec.role in SPLIT_SIZE else []
            side = "-h" if spec.role == "agent" else "-v"
            todo += [["split-window", "-t", server_pane, side, *size, *_start(spec)]]
            todo += [*_marked(f"={name}:{window}", spec), ["select-pane", "-t", server_pane]]
            result.created.append(spec.role)
        elif spec.role in result.created:
            continue
        elif alive and spec.role not in restart:
            result.kept.append(spec.role)
        else:
            todo += [["respawn-pane", "-k", "-t", pane, *_start(spec)], *_marked(pane, spec)]
            result.respawned.append(spec.role)
    for role in sorted(close - {s.role for s in panes}):
        if role in existing:
            todo.append(["kill-pane", "-t", existing[role][0]])
            result.closed.append(role)
    if todo:
        _tmux(server, *todo)
    return result


def _rows(server: libtmux.Server, name: str) -> list[tuple[str, str, str, str, bool, bool]]:
    """(window id, window name, pane id, role, alive, active) of each pane of the session, in
    one tmux call; [] when there is no such session (or no tmux server)."""
    fmt = "#{window_id} #{window_name} #{pane_id} #{pane_dead} #{pane_active} #{@carla_role}"
    got = server.cmd("list-panes", "-s", "-t", f"={name}", "-F", fmt)
    rows = [line.split(" ", 5) for line in got.stdout if line.count(" ") >= 5]
    return [(w, n, p, role, dead != "1", act == "1") for w, n, p, dead, act, role in rows]


def _window_id(rows: list[tuple[str, str, str, str, bool, bool]], window: str) -> str | None:
    """The id of the session's window of that name; for the one window of a session made
    before windows had names that matter, that window."""
    found = next((r[0] for r in rows if r[1] == window), None)
    if found is None and window == WINDOW and len({r[0] for r in rows}) == 1:
        return rows[0][0] if {r[3] for r in rows} & {"server", "agent"} else None
    return found


def _tmux(server: libtmux.Server, *commands: list[str]) -> list[str]:
    """Several tmux commands in one tmux call (`;` between them); their output. A failure
    stops the list and raises, with tmux's words."""
    argv = [a for c in commands for a in (";", *c)][1:]
    got = server.cmd(*argv)
    if got.stderr:
        raise libtmux.exc.LibTmuxException(f"tmux {commands[0][0]}: {' '.join(got.stderr)}")
    return list(got.stdout)


def _start(first: PaneSpec) -> list[str]:
    env_args = [a for k, v in first.env.items() for a in ("-e", f"{k}={v}")]
    return ["-c", str(first.cwd), *env_args, first.shell]


def _remain(name: str, window: str) -> list[str]:
    """remain-on-exit for the window, by name: names are `[A-Za-z0-9_-]` (`stack/pairs.py`),
    nothing tmux reads as a separator in a target."""
    return ["set-option", "-w", "-t", f"={name}:{window}", "remain-on-exit", "on"]


def _marked(target: str, spec: PaneSpec) -> list[list[str]]:
    """The commands that store the pane's role on it and give it its title."""
    return [
        ["set-option", "-p", "-t", target, ROLE_OPTION, spec.role],
        ["select-pane", "-t", target, "-T", spec.title],
    ]


def _window(session: libtmux.Session, window: str) -> libtmux.Window | None:
    """The session's window of that name; for the one window of a session made before
    windows had names that matter, its active window."""
    found = session.windows.get(window_name=window, default=None)
    if found is None and window == WINDOW and len(session.windows) == 1:
        roles = {_role(p) for p in session.windows[0].panes}
        return session.windows[0] if roles & {"server", "agent"} else None
    return found


def kill_window(server: libtmux.Server, name: str, window: str) -> bool:
    """Close one window of the session (the session goes with its last window)."""
    session = find_session(server, name)
    found = _window(session, window) if session is not None else None
    if found is None:
        return False
    found.kill()
    return True


def _pane(server: libtmux.Server, name: str, window: str, role: str) -> libtmux.Pane | None:
    session = find_session(server, name)
    found = _window(session, window) if session is not None else None
    if found is None:
        return None
    return next((p for p in found.panes if _role(p) == role), None)


def pane_text(server: libtmux.Server, name: str, window: str, role: str) -> str:
    """What the pane of that role shows (its scroll-back too); "" when there is none."""
    pane = _pane(server, name, window, role)
    if pane is None:
        return ""
    return "\n".join(pane.capture_pane(start="-") or [])


def kill_pane(server: libtmux.Server, name: str, window: str, role: str) -> bool:
    """Close the window's pane of that role (its processes get SIGHUP, as when the session
    closes); False when there is none."""
    pane = _pane(server, name, window, role)
    if pane is None:
        return False
    pane.kill()
    return True


def kill_session(server: libtmux.Server, name: str) -> bool:
    session = find_session(server, name)
    if session is None:
        return False
    session.kill()
    return True


def attach_argv(server: libtmux.Server, name: str) -> list[str]:
    """What to exec: `switch-client` from inside tmux, else `attach-session`."""
    base = ["tmux"]
    if server.socket_name:
        base += ["-L", server.socket_name]
    elif server.socket_path:
        base += ["-S", str(server.socket_path)]
    if os.environ.get("TMUX"):
        return [*base, "switch-client", "-t", name]
    return [*base, "attach-session", "-t", name]


def attach(server: libtmux.Server, name: str) -> None:
    """Replace this process with tmux: no Python process lingers while you watch."""
    argv = attach_argv(server, name)
    os.execvp(argv[0], argv)  # noqa: S606  exec is the point: tmux takes over this terminal
