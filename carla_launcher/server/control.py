"""Start, stop, restart, status and logs of the server on a box, over plain OpenSSH.

One SSH round trip per action (no pyinfra, no gevent: `carla-launch status` and the daemon may
call these). The scripts share the shell functions of the deploy (`box/shell.py`), so stop
means the same everywhere: tmux session, launch loop and the server's whole process group go
(only those the status file recorded, checked by their start times), and the call returns only
when ports N..N+2 are free of the server user's listeners. Another user's listener there is
reported at once, not waited for.

The status also says whether the launch loop still runs (CARLA may outlive it: "loop gone")
and, from the launch script's config line, what the profile changed since the deploy (`drift`).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from carla_launcher import parallel
from carla_launcher.box import sections
from carla_launcher.box.shell import (
    MARK_STOPPED_FUNCTION,
    PORT_FUNCTIONS,
    START_FUNCTION,
    STOP_FUNCTION,
    STOPPED_FILE,
    prologue,
    q,
)
from carla_launcher.server.launch import ORIGIN_PREFIX
from carla_launcher.server.state import foreign_port_line, parse_status

if TYPE_CHECKING:
    from carla_launcher.profile import Profile


# -- scripts (pure) ------------------------------------------------------------------------------
def status_script(compose: bool = False) -> str:
    """Body after `prologue(...)`: prints the facts `state.parse_status` reads."""
    items = [
        (
            "session",
            '[ "$USER_EXISTS" = yes ] && as_server tmux has-session -t "=$CL_SESSION" && echo yes',
        ),
        ("deployed", '[ -f "$SDIR/launch.sh" ] || [ -f "$SDIR/compose.yaml" ] && echo yes'),
        ("status", 'cat "$SDIR/status"'),
        ("stopped", f'cat "$SDIR/{STOPPED_FILE}"'),
        ("alive", "server_group_ours && echo yes"),
        ("loop", "loop_ours && echo yes"),
        ("config", f'sed -n "s/^{ORIGIN_PREFIX}//p" "$SDIR/launch.sh" | head -n 1'),
        ("port", 'cat "$SDIR/port"'),
        ("busy", 'ports_busy "$(cat "$SDIR/port")"'),
        ("log", 'echo "$SDIR/server.log"'),
        ("now", "date +%s"),
    ]
    if not compose:  # in compose mode docker-proxy (root) holds the ports for our container
        items.append(("foreign", 'ports_foreign "$(cat "$SDIR/port")"'))
    else:
        items.append(
            (
                "compose",
                'docker compose -p "$CL_PROJECT" -f '
                '"$SDIR/compose.yaml" ps -a --format "{{.State}}|{{.Status}}"',
            )
        )
    return PORT_FUNCTIONS + sections.script(items)


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


# -- actions over SSH ----------------------------------------------------------------------------
def _head(profile: Profile, slot: int = 0) -> str:
    """The prologue of server `slot` (its session and state folder, `server/slots.py`)."""
    from carla_launcher.server.slots import session_name

    srv = profile.server
    return prologue(srv.user, session_name(srv.tmux_session, slot))


def _timeout(profile: Profile, extra: float = 30) -> float:
    return profile.remote.connect_timeout + extra


def server_status(profile: Profile, host: str | None = None, slot: int = 0) -> dict[str, Any]:
    """{host, running, state, pid, since, uptime_s, restarts, port, last_crash_line, drift, ...}.

    `drift`: what the profile changed since the deploy, in words (None: unknown, e.g. a launch
    script older than the config line, or server.mode: compose).
    """
    from carla_launcher.box.transport import check
    from carla_launcher.server.drift import drift, profile_origin

    host = host or profile.remote.host
    compose = profile.server.mode == "compose"
    out = check(profile, host, _head(profile, slot) + status_script(compose), _timeout(profile))
    st = {"host": host, "slot": slot, **parse_status(out)}
    origin = st.pop("origin")
    st["origin"] = dataclasses.asdict(origin) if origin is not None else None
    st["drift"] = drift(profile_origin(profile), origin) if origin is not None else None
    return st


def server_statuses(profile: Profile) -> list[dict[str, Any]]:
    """`server_status` of every host of the profile, in parallel; failures as `error`."""
    from carla_launcher.errors import LauncherError

    def one(h: str) -> dict[str, Any]:
        try:
            return server_status(profile, h)
        except LauncherError as e:
            return {
                "host": h,
                "running": False,
                "state": "unknown",
                "error": str(e).removeprefix(f"{h}: "),
            }

    return parallel.each(profile.remote.hosts, one)


def start(profile: Profile, host: str | None = None, slot: int = 0) -> bool:
    """Start the deployed server (no-op when running); True when it was started now."""
    from carla_launcher.box.transport import check

    script = compose_start_script() if profile.server.mode == "compose" else start_script()
    out = check(profile, host, _head(profile, slot) + script, _timeout(profile, 60))
    return "started=yes" in out


def stop(
    profile: Profile, host: str | None = None, by: str | None = "carla-launch", slot: int = 0
) -> bool:
    """Stop the server and wait until its ports are free; True when something was running.
    `by` (the command that asked) is noted on the box: `status` reports a stop on purpose
    (None: not on purpose, a start follows)."""
    return stop_report(profile, host, by, slot)[0]


def stop_report(
    profile: Profile, host: str | None = None, by: str | None = "carla-launch", slot: int = 0
) -> tuple[bool, str | None]:
    """`stop`, and what stands in the way of the next start: another user's listener on
    N..N+2, as a one-line warning (None: nothing)."""
    from carla_launcher.box.transport import check

    compose = profile.server.mode == "compose"
    script = compose_stop_script(by) if compose else stop_script(by)
    out = check(profile, host, _head(profile, slot) + script, _timeout(profile, 60))
    foreign = next((ln[8:].split() for ln in out.splitlines() if ln.startswith("foreign=")), [])
    warning = foreign_port_line(*foreign) if len(foreign) == 2 else None
    return "stopped=yes" in out, warning


def restart(profile: Profile, host: str | None = None, slot: int = 0) -> bool:
    """Stop, then start; never noted as a stop on purpose (a failed start is a failure)."""
    stop(profile, host, by=None, slot=slot)
    return start(profile, host, slot)


def wait_started(
    profile: Profile,
    host: str | None,
    address: str,
    port: int,
    on_progress: Callable[[float, str], None] | None = None,
    slot: int = 0,
) -> str:
    """Probe until CARLA answers (the version), giving up early when the server died."""
    from carla_launcher.errors import LauncherError
    from carla_launcher.server.probe import wait_ready

    def abort() -> str | None:
        try:
            st = server_status(profile, host, slot)
        except LauncherError:
            return None
        if not st["running"] and st.get("state") != "restarting":
            return f"the server is not running ({st.get('last_crash_line') or st.get('state')})"
        if (st.get("restarts") or 0) >= 3:
            return f"the server keeps crashing (last: {st.get('last_crash_line')})"
        return None

    return wait_ready(
        address,
        port,
        profile.server.ready_timeout,
        on_progress,
        should_abort=abort,
        abort_every=5.0,
    )


def logs_command(
    profile: Profile,
    host: str | None = None,
    lines: int = 50,
    follow: bool = False,
    slot: int = 0,
) -> list[str]:
    """The command line that shows (or follows) the server log of a box."""
    from carla_launcher.box.ssh import ssh_argv

    if profile.server.mode == "compose":
        body = (
            f'exec docker compose -p "$CL_PROJECT" -f "$SDIR/compose.yaml" logs '
            f"--tail {int(lines)}{' -f' if follow else ''}"
        )
    else:
        body = (
            f'[ -f "$SDIR/server.log" ] || die "no server log in $SDIR (not deployed?)"\n'
            f'exec tail -n {int(lines)}{" -F" if follow else ""} "$SDIR/server.log"'
        )
    script = _head(profile, slot) + body
    return ssh_argv(profile, host, command=f"sh -c {shlex.quote(script)}")


def attach_command(profile: Profile, slot: int = 0) -> str:
    """Remote command that attaches read-only to the server's tmux session, as the server user.

    For `ssh_argv(profile, tty=True, command=attach_command(profile))`.
    """
    script = (
        _head(profile, slot) + 'exec_as() { if [ "$(id -u)" = 0 ] && [ "$SU" != root ]; then '
        'exec runuser -u "$SU" -- "$@"; else exec "$@"; fi; }\n'
        'exec_as tmux attach-session -r -t "=$CL_SESSION"\n'
    )
    return f"sh -c {shlex.quote(script)}"
