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
from libtmux.constants import PaneDirection

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
    session: libtmux.Session
    created: list[str] = field(default_factory=list)
    respawned: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.respawned)


def ensure_session(
    server: libtmux.Server,
    name: str,
    panes: list[PaneSpec],
    restart: set[str] | frozenset[str] = frozenset(),
    window: str = WINDOW,
) -> EnsureResult:
    """Make the session's `window` hold these panes (the session and the window are made when
    missing). Running panes are kept as they are (unless their role is in `restart`); dead
    ones are started again with their (possibly new) command; missing ones are added."""
    session = find_session(server, name)
    found_window = _window(session, window) if session is not None else None
    if session is None or found_window is None:
        first = panes[0]
        if session is None:
            session = _new_session(server, name, first, window)
        else:
            _new_window(server, name, window, first)
        win = _window(session, window)
        if win is None:  # tmux made it a moment ago
            raise LookupError(f"tmux window {window!r} of {name!r} was not created")
        _configure(win)
        pane = _active_pane(win)
        _mark(pane, first)
        result = EnsureResult(session, created=[first.role])
        existing = {first.role: pane}
    else:
        win = found_window
        result = EnsureResult(session)
        existing = {}
        for listed in win.panes:
            role = _role(listed)
            if role:
                existing[role] = listed
    states = pane_states(session, str(win.window_name))
    for spec in panes:
        found = existing.get(spec.role)
        if found is None:
            target = existing.get("server") or _active_pane(win)
            direction = PaneDirection.Right if spec.role == "agent" else PaneDirection.Below
            pane = target.split(  # remain-on-exit is already on for this window
                direction=direction,
                shell=spec.shell,
                start_directory=str(spec.cwd),
                environment=spec.env or None,
                size=SPLIT_SIZE.get(spec.role),
            )
            _mark(pane, spec)
            existing[spec.role] = pane
            result.created.append(spec.role)
        elif spec.role in result.created:
            continue
        elif _alive(states, spec.role) and spec.role not in restart:
            result.kept.append(spec.role)
        else:
            _respawn(found, spec)
            result.respawned.append(spec.role)
    return result


def _window(session: libtmux.Session, window: str) -> libtmux.Window | None:
    """The session's window of that name; for the one window of a session made before
    windows had names that matter, its active window."""
    found = session.windows.get(window_name=window, default=None)
    if found is None and window == WINDOW and len(session.windows) == 1:
        roles = {_role(p) for p in session.windows[0].panes}
        return session.windows[0] if roles & {"server", "agent"} else None
    return found


def _new_session(
    server: libtmux.Server, name: str, first: PaneSpec, window: str = WINDOW
) -> libtmux.Session:
    """Start the session with the first pane's command, remain-on-exit already on."""
    # Raw tmux on purpose: Server.new_session cannot chain a command, and only one tmux
    # command list turns remain-on-exit on before the server notices that a command which
    # fails at once has exited (its pane and message stay).
    server.cmd(
        "new-session",
        "-d",
        "-s",
        name,
        "-n",
        window,
        "-x",
        "200",
        "-y",
        "50",
        *_start(first),
        ";",
        *_remain(name, window),
    )
    session = server.sessions.get(session_name=name)  # raises if tmux did not make it
    if session is None:  # for the type checker: get() without a default never returns None
        raise LookupError(f"tmux session {name!r} was not created")
    return session


def _new_window(server: libtmux.Server, name: str, window: str, first: PaneSpec) -> None:
    """Add a window to the session, as `_new_session` starts one (not selected: `attach`
    opens the session on the window it had)."""
    server.cmd(
        "new-window",
        "-d",
        "-t",
        f"={name}:",
        "-n",
        window,
        *_start(first),
        ";",
        *_remain(name, window),
    )


def _start(first: PaneSpec) -> list[str]:
    env_args = [a for k, v in first.env.items() for a in ("-e", f"{k}={v}")]
    return ["-c", str(first.cwd), *env_args, first.shell]


def _remain(name: str, window: str) -> list[str]:
    """remain-on-exit for the window, by name: names are `[A-Za-z0-9_-]` (`stack/pairs.py`),
    nothing tmux reads as a separator in a target."""
    return ["set-option", "-w", "-t", f"={name}:{window}", "remain-on-exit", "on"]


def _active_pane(window: libtmux.Window) -> libtmux.Pane:
    pane = window.active_pane
    if pane is None:  # tmux keeps an active pane in every live window
        raise LookupError(f"tmux window {window.window_id} has no active pane")
    return pane


def _alive(states: dict[str, PaneState], role: str) -> bool:
    """A pane tmux did not report on counts as running: it is kept, not restarted."""
    state = states.get(role)
    return state is None or state["alive"]


def _configure(window: libtmux.Window) -> None:
    window.set_option("remain-on-exit", "on")  # a finished pane keeps its output and says why
    window.set_option("pane-border-status", "top")
    window.set_option("pane-border-format", " #{pane_title} ")


def _respawn(pane: libtmux.Pane, spec: PaneSpec) -> None:
    pane.respawn(
        kill=True, start_directory=spec.cwd, environment=spec.env or None, shell=spec.shell
    )
    _mark(pane, spec)


def _mark(pane: libtmux.Pane, spec: PaneSpec) -> None:
    pane.set_option(ROLE_OPTION, spec.role)
    pane.set_title(spec.title)


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
