"""The shell scripts that start, stop and retire a server on a box (pure).

Each is the body that follows `box/shell.prologue` (it sets `$SU`, `$CL_SESSION`, `$SDIR`);
`server/control.py` sends them over SSH, the deploy (`deploy/plan.py`) puts them in its own
scripts. They share the shell functions of `box/shell.py`, so stop means the same everywhere:
tmux session, launch loop and the server's whole process group go, and the script returns only
when ports N..N+2 are free of the server user's listeners.
"""

from __future__ import annotations

from carla_launcher.box.shell import (
    MARK_STOPPED_FUNCTION,
    PORT_FUNCTIONS,
    START_FUNCTION,
    STOP_FUNCTION,
    STOPPED_FILE,
    q,
)
from carla_launcher.server.slurm import cancel_script
from carla_launcher.server.state import status_script

__all__ = [
    "compose_start_script",
    "compose_stop_script",
    "restart_body",
    "retire_script",
    "start_body",
    "start_script",
    "status_script",  # with its reader in state.py; callers of the scripts ask here
    "stop_body",
    "stop_script",
]


def start_script() -> str:
    return (
        PORT_FUNCTIONS
        + STOP_FUNCTION
        + START_FUNCTION
        + (
            'if as_server tmux has-session -t "=$CL_SESSION" 2>/dev/null; then echo already=yes; '
            "else stop_server; start_server; echo started=yes; fi\n"
        )
    )


def _mark(by: str | None) -> str:
    """Note who stopped the server on purpose (`by`); None: a stop on the way to a start
    (restart), which must not read as "stopped on purpose" when that start fails."""
    return "" if by is None else MARK_STOPPED_FUNCTION + f"mark_stopped {q(by)}\n"


def stop_script(by: str | None = "carla-launch") -> str:
    """Stop the server, first noting who asked (`by`): a stop on purpose, not a crash."""
    return (
        PORT_FUNCTIONS
        + STOP_FUNCTION
        + _mark(by)
        + 'stop_server\necho "stopped=$STOPPED"\necho "foreign=$FOREIGN"\n'
    )


def start_body(mode: str) -> str:
    """Start one server of a profile whose `server.mode` is `mode`."""
    return compose_start_script() if mode == "compose" else start_script()


def stop_body(mode: str, by: str | None = "carla-launch") -> str:
    """Stop one server (`by`: as `stop_script`); Slurm's also cancels every job of it."""
    if mode == "compose":
        return compose_stop_script(by)
    return stop_script(by) + (cancel_script() if mode == "slurm" else "")


def restart_body(mode: str) -> str:
    """Stop, then start; never noted as a stop on purpose (a failed start is a failure)."""
    return stop_body(mode, None) + start_body(mode)


def compose_start_script() -> str:
    from carla_launcher.server.compose import compose_up_script

    return (
        f'rm -f "$SDIR/{STOPPED_FILE}"  # asked to run: not stopped on purpose, even if it fails\n'
        '[ -f "$SDIR/compose.yaml" ] || die "no compose file in $SDIR: run carla-launch '
        'deploy first"\n' + compose_up_script() + "echo started=yes\n"
    )


def compose_stop_script(by: str | None = "carla-launch") -> str:
    return (
        PORT_FUNCTIONS + _mark(by) + 'P="$CL_PROJECT"\n'
        'docker compose -p "$P" -f "$SDIR/compose.yaml" down -t 10 >&2 || '
        'die "docker compose down failed"\n_port=$(cat "$SDIR/port")\n_i=0\n'
        'while ports_busy "$_port" >/dev/null && [ $_i -lt 200 ]; do sleep 0.1;'
        " _i=$((_i + 1)); done\necho stopped=yes\n"
    )


def retire_script(why: str) -> str:
    """A server the profile no longer asks for on this box: stopped, its launch files removed
    (`host_servers` no longer lists it; a later deploy may bring it back); its log stays."""
    return (
        PORT_FUNCTIONS
        + STOP_FUNCTION
        + f"echo {q('stopping ' + why)}\nstop_server\n"
        + 'as_server rm -f "$SDIR/launch.sh" "$SDIR/port" "$SDIR/status" '
        f'"$SDIR/{STOPPED_FILE}" "$SDIR/CarlaSettings.ini"\n'
    )
