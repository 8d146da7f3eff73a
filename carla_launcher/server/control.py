"""Start, stop, restart, status and logs of the server on a box, over plain OpenSSH.

One SSH round trip per action (no pyinfra, no gevent: `carla-launch status` and the daemon may
call these). The scripts share the shell functions of the deploy (`box/shell.py`), so stop
means the same everywhere: tmux session, launch loop and the server's whole process group go
(only those the status file recorded, checked by their start times), and the call returns only
when ports N..N+2 are free of the server user's listeners. Another user's listener there is
reported at once, not waited for.

The status also says whether the launch loop still runs (CARLA may outlive it: "loop gone")
and, from the launch script's config line, what the profile changed since the deploy (`drift`).

With `server.gpus` a box runs several servers of one profile, each in its own state folder
(`server/slots.py`). `host_servers` and the `*_servers` actions cover all of them in ONE round
trip: on the box (`slots.each_server`) the one-server script runs in each folder, all
at the same time.
The scripts themselves are pure, in `server/scripts.py`.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from carla_launcher import parallel
from carla_launcher.box.sections import MARK as SECTION_MARK
from carla_launcher.box.shell import error_line, prologue
from carla_launcher.server.launch import ORIGIN_PREFIX, parse_origin
from carla_launcher.server.scripts import restart_body, start_body, status_script, stop_body
from carla_launcher.server.slots import (
    SERVERS_FUNCTION,
    count,
    each_server,
    parse_servers,
    session_name,
    slot_index,
)
from carla_launcher.server.state import foreign_port_line, parse_status

if TYPE_CHECKING:
    from carla_launcher.profile import Profile


def _head(profile: Profile, slot: int = 0) -> str:
    """The prologue of server `slot` (its session and state folder, `server/slots.py`)."""
    srv = profile.server
    return prologue(srv.user, session_name(srv.tmux_session, slot))


def _timeout(profile: Profile, extra: float = 30) -> float:
    return profile.remote.connect_timeout + extra


def server_status(profile: Profile, host: str | None = None, slot: int = 0) -> dict[str, Any]:
    """{host, slot, gpu, tmux_session, running, state, pid, since, uptime_s, restarts, port,
    last_crash_line, drift, ...} of server `slot` on `host`.

    `drift`: what the profile changed since the deploy, in words (None: unknown, e.g. a launch
    script older than the config line, or server.mode: compose). `gpu`: the one its launch
    script was made for (None: the default GPU, or not known).
    """
    from carla_launcher.box.transport import check

    host = host or profile.remote.host or "localhost"
    script = _head(profile, slot) + status_script(profile.server.mode)
    out = check(profile, host, script, _timeout(profile))
    return _status(profile, host, slot, out)


def _status(profile: Profile, host: str, slot: int, out: str) -> dict[str, Any]:
    """One server's status-script answer as the dict `server_status` gives."""
    from carla_launcher.server.drift import drift, profile_origin

    session = session_name(profile.server.tmux_session, slot)
    st = {"host": host, "slot": slot, "tmux_session": session, **parse_status(out)}
    origin = st.pop("origin")
    st["gpu"] = origin.gpu if origin is not None else None
    st["origin"] = dataclasses.asdict(origin) if origin is not None else None
    st["drift"] = drift(profile_origin(profile, slot, origin), origin) if origin else None
    return st


def host_servers(profile: Profile, host: str | None = None) -> list[dict[str, Any]]:
    """Every server of the profile on the box, in ONE round trip, by slot: each as
    `server_status` gives it. The state folders that hold launch files count (a server the
    deploy left out, its GPU in use, is absent: slots may have gaps); a box with none gives
    one dict, server 0's, with `deployed` False (never an empty list)."""
    from carla_launcher.box.transport import check

    host = host or profile.remote.host or "localhost"
    script = _head(profile) + each_server(status_script(profile.server.mode))
    out = check(profile, host, script, _timeout(profile, 30 * _many(profile)))
    found = [
        _status(profile, host, k, text)
        for name, text, _ in parse_servers(out)
        if (k := slot_index(profile.server.tmux_session, name)) is not None
    ]
    return sorted(found, key=lambda st: int(st["slot"]))


def servers(profile: Profile, hosts: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """`host_servers` of every host of the profile (or `hosts`) at once, flattened in host
    order; a host that cannot be asked is one dict with its `error` (the others go on)."""
    from carla_launcher.errors import LauncherError

    def one(h: str) -> list[dict[str, Any]]:
        try:
            return host_servers(profile, h)
        except LauncherError as e:
            return [unreachable(h, e)]

    return [st for found in parallel.each(hosts or profile.remote.hosts, one) for st in found]


def unreachable(host: str, e: Exception) -> dict[str, Any]:
    """A host that could not be asked, as one server dict (`servers`)."""
    return {
        "host": host,
        "slot": None,
        "gpu": None,
        "tmux_session": None,
        "running": False,
        "state": "unknown",
        "error": str(e).removeprefix(f"{host}: "),
    }


def _many(profile: Profile) -> int:
    """How many servers a box may run for this profile, for time limits (`all`: up to 8)."""
    return count(profile.server) or 8


def _on_each(
    profile: Profile, host: str | None, body: str, only: int | None, seconds: float
) -> list[dict[str, Any]]:
    """`body` on every server of the box (or server `only`) in one round trip: per server
    {host, slot, gpu, tmux_session, text (its output), error (one line, None: it went well)}.
    Raises when the box cannot be asked, or `only` is not one of its servers."""
    from carla_launcher.box.transport import check
    from carla_launcher.errors import LauncherError

    host = host or profile.remote.host or "localhost"
    base = profile.server.tmux_session
    wanted = session_name(base, only) if only is not None else None
    many = 1 if only is not None else _many(profile)
    # its GPU first, from its launch script's config line (before a stop can say anything)
    gpu = f'sed -n "s/^{ORIGIN_PREFIX}/{_CONFIG}/p" "$SDIR/launch.sh" 2>/dev/null | head -n 1\n'
    script = _head(profile) + each_server(gpu + body, wanted)
    out = check(profile, host, script, _timeout(profile, seconds * many))
    found = [(slot_index(base, name), name, text, rc) for name, text, rc in parse_servers(out)]
    mine = [f for f in found if f[0] is not None and (only is None or f[0] == only)]
    if not mine:
        listed = ", ".join(str(k) for k, *_ in found if k is not None) or "none"
        raise LauncherError(f"{host}: no server {only} here (its servers: {listed})")
    return [
        {
            "host": host,
            "slot": k,
            "gpu": _gpu(text),
            "tmux_session": name,
            "text": text,
            "error": _failed(text, rc),
        }
        for k, name, text, rc in sorted(mine, key=lambda f: int(f[0] or 0))
    ]


_CONFIG = "carla-launch-config="


def _gpu(text: str) -> int | None:
    """The GPU a server's launch script was made for, from `_on_each`'s first line."""
    first = text.split("\n", 1)[0]
    origin = parse_origin(first[len(_CONFIG) :]) if first.startswith(_CONFIG) else None
    return origin.gpu if origin is not None else None


def _failed(text: str, rc: int | None) -> str | None:
    """Why one server's part failed, in one line (None: it did not)."""
    if rc == 0:
        return None
    return error_line(text.splitlines(), []) or (
        f"exit code {rc}" if rc is not None else "cut short"
    )


def _result(found: dict[str, Any], done: bool, warning: str | None = None) -> dict[str, Any]:
    """One server's part of an action as the caller gets it (its raw output left out)."""
    kept = {k: v for k, v in found.items() if k != "text"}
    return {**kept, "done": done and found["error"] is None, "warning": warning}


def stop_servers(
    profile: Profile,
    host: str | None = None,
    by: str | None = "carla-launch",
    only: int | None = None,
) -> list[dict[str, Any]]:
    """Stop every server of the box (or server `only`) and wait until its ports are free, in
    one round trip: [{host, slot, tmux_session, done (it ran and is stopped), warning (another
    user's listener on N..N+2, in words), error}]. `by` (the command that asked) is noted on
    the box, so `status` reports a stop on purpose (None: not on purpose, a start follows)."""
    body = stop_body(profile.server.mode, by)
    out = []
    for found in _on_each(profile, host, body, only, 60):
        done, warning = _stopped(found["text"])
        out.append(_result(found, done, warning))
    return out


def start_servers(
    profile: Profile, host: str | None = None, only: int | None = None, status: bool = False
) -> list[dict[str, Any]]:
    """Start every deployed server of the box (or server `only`), in one round trip:
    [{host, slot, tmux_session, done (started now; False: it ran), warning, error}]; with
    `status`, also each server's `status` after it, as `host_servers` gives it (one round trip
    fewer for `up`; a server just started may still say "stopped", its `session` runs)."""
    mode = profile.server.mode
    body = start_body(mode)
    if status:  # the status also of a server whose start failed; the start's exit code stays
        body = f"(\n{body}\n)\n_cl_rc=$?\n{status_script(mode)}exit $_cl_rc\n"
    out = []
    for f in _on_each(profile, host, body, only, 60):
        started = "started=yes" in f["text"].split(SECTION_MARK, 1)[0]
        got = _result(f, started)
        if status:
            got["status"] = _status(profile, f["host"], f["slot"], f["text"])
        out.append(got)
    return out


def restart_servers(
    profile: Profile, host: str | None = None, only: int | None = None
) -> list[dict[str, Any]]:
    """Stop, then start, every server of the box (or server `only`), in one round trip; never
    noted as a stop on purpose (a failed start is a failure)."""
    body = restart_body(profile.server.mode)
    return [_result(f, "started=yes" in f["text"]) for f in _on_each(profile, host, body, only, 90)]


def _stopped(out: str) -> tuple[bool, str | None]:
    """A stop script's answer: was something running, and another user's port, in words."""
    foreign = next((ln[8:].split() for ln in out.splitlines() if ln.startswith("foreign=")), [])
    warning = foreign_port_line(*foreign) if len(foreign) == 2 else None
    return "stopped=yes" in out, warning


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

    began: list[int] = []  # restarts when the wait began: a long-lived server has had some

    def abort() -> str | None:
        try:
            st = server_status(profile, host, slot)
        except LauncherError:
            return None
        if not st["running"] and st.get("state") != "restarting":
            return f"the server is not running ({st.get('last_crash_line') or st.get('state')})"
        restarts = int(st.get("restarts") or 0)
        began[:] = began or [restarts]
        if restarts - began[0] >= 3:
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


#: How often `wait_placed` asks the login node about a queued job (one status round trip, with
#: at most 3 squeue calls: not more often, a busy controller has many users).
PLACED_POLL_S = 2.0
#: The loop's states while a job is on its way (`server/slurm.py`): `wait_placed` waits on.
_WAITING = ("starting", "pending", "restarting", "running")


def wait_placed(
    profile: Profile,
    host: str,
    slot: int = 0,
    on_progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any] | None:
    """Until server `slot` has a place to run: a Slurm server's job must run first
    (`server.mode: slurm`; its status then). A box's server has its place: None at once,
    without asking. A job may queue for hours: the progress says why it waits and its place
    in line; Ctrl-C ends the wait, not the job. Raises when the server stops meanwhile, keeps
    failing, or its job is still queued after `server.slurm.queue_timeout` (it stays so)."""
    import time

    from carla_launcher.errors import LauncherError
    from carla_launcher.server.slurm import job_words

    if profile.server.mode != "slurm":
        return None
    start = time.monotonic()
    limit = profile.server.slurm.queue_timeout
    failures = 0
    while True:
        try:
            st = server_status(profile, host, slot)
        except LauncherError:  # a slow controller or a dropped connection: ask again, a few times
            failures += 1
            if failures >= 3:
                raise
            time.sleep(PLACED_POLL_S)
            continue
        failures = 0
        if st["running"] and st.get("job"):
            return st
        job = st.get("job")
        waited = time.monotonic() - start
        if job and job.get("state") == "PENDING" and waited > limit:
            raise LauncherError(
                f"{host}: {job_words(job)} after server.slurm.queue_timeout "
                f"({limit} s); it stays queued: `carla-launch up {profile.name}` again once "
                "it runs (`carla-launch status` shows it)"
            )
        state = str(st.get("state"))
        if st.get("session") and state not in _WAITING:
            state = "starting"  # its loop runs; the status file is an earlier one's until it writes
        if state not in _WAITING:  # the loop gave up (it says why) or was stopped
            why = st.get("last_crash_line") or state
            raise LauncherError(f"{host}: not running ({why})")
        if on_progress is not None:
            on_progress(waited, job_words(job) if job else state)
        time.sleep(PLACED_POLL_S)


def logs_command(
    profile: Profile,
    host: str | None = None,
    lines: int = 50,
    follow: bool = False,
    slot: int | None = 0,
) -> list[str]:
    """The command line that shows (or follows) the server log of a box: server `slot`'s, or
    with None every server's in one `tail` (its `==> FILE <==` headers tell them apart)."""
    from carla_launcher.box.ssh import ssh_argv

    tail = f"tail -n {int(lines)}{' -F' if follow else ''}"
    if profile.server.mode == "compose":
        body = (
            f'exec docker compose -p "$CL_PROJECT" -f "$SDIR/compose.yaml" logs '
            f"--tail {int(lines)}{' -f' if follow else ''}"
        )
    elif slot is None:
        body = (
            SERVERS_FUNCTION + "CL_TOP=${SDIR%/*}; set --\nfor _cl_n in $(cl_servers); do\n"
            '  [ -f "$CL_TOP/$_cl_n/server.log" ] && set -- "$@" "$CL_TOP/$_cl_n/server.log"\n'
            'done\n[ $# -gt 0 ] || die "no server log in $SDIR (not deployed?)"\n'
            f'exec {tail} "$@"'
        )
    else:
        body = (
            f'[ -f "$SDIR/server.log" ] || die "no server log in $SDIR (not deployed?)"\n'
            f'exec {tail} "$SDIR/server.log"'
        )
    script = _head(profile, slot or 0) + body
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


def follow_commands(profile: Profile, slot: int = 0) -> tuple[str, str]:
    """The remote commands a Slurm server's tunnel follows its job with (`box/tunnel.py`
    follow_argv): one prints "ADDRESS PORT" of the running job, the other returns when that
    changes (given ADDRESS PORT as its last two words)."""
    from carla_launcher.server.slurm import target_script, watch_script

    ask = _head(profile, slot) + target_script()
    watch = _head(profile, slot) + watch_script()
    return f"sh -c {shlex.quote(ask)}", f"sh -c {shlex.quote(watch)} _"
