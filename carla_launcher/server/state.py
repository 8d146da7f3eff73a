"""What a server's status means: the status script's answer as data, in words, and what to do. Pure.

`server/control.py` asks the box with `status_script` (here, beside its reader); this module
reads the answer (`parse_status`), says a server that does not run in words (`state_words`)
and lists what the user should do about it (`notes`). `status`, `server status` and the
deploy's readiness wait share these, so a state means the same everywhere.
"""

from __future__ import annotations

from typing import Any

from carla_launcher.box import sections
from carla_launcher.box.shell import PORT_FUNCTIONS, STOPPED_FILE
from carla_launcher.jsonout import iso
from carla_launcher.server.drift import changed_since_deploy
from carla_launcher.server.launch import ORIGIN_PREFIX, parse_origin
from carla_launcher.server.slurm import job_words, parse_job, status_items

LOOP_GONE = "loop gone"  # CARLA runs, its launch loop does not (no restarts, no clean stop)
#: Not running, not stopped on purpose, and nothing said why: the tmux session and processes
#: are gone (the box rebooted, or someone killed them) while the status file says otherwise.
DIED = "died"
NOT_STARTED = "not started"  # deployed, never started (no status file)


def status_script(mode: str = "package") -> str:
    """Body after `prologue(...)`: prints the facts `state.parse_status` reads (`mode`: the
    profile's `server.mode`; Slurm's adds the job's sections, `server/slurm.py`)."""
    compose = mode == "compose"
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
    if mode == "slurm":
        items += status_items()
    return PORT_FUNCTIONS + sections.script(items)


def parse_status(stdout: str) -> dict[str, Any]:
    """The status script's output -> {running, state, pid, since, restarts, port, ...}.

    `origin` is what the launch script was made from (None: unknown), `foreign_ports` the
    listeners of other users on N..N+2 as [port, uid] pairs (never in compose mode: there
    docker-proxy, uid 0, listens for the server), `stopped` who stopped the server on purpose
    and when ({by, at}; None while it runs or when nobody asked for the stop).
    """
    s = {name: section.lines for name, section in sections.parse(stdout).items()}
    kv: dict[str, str] = {}
    for line in s.get("status", []):
        k, sep, v = line.partition("=")
        if sep:
            kv[k.strip()] = v.strip()
    first = {k: (v[0].strip() if v else "") for k, v in s.items()}
    session = first.get("session") == "yes"
    alive = first.get("alive") == "yes"
    job = parse_job(kv, s) if "job" in s else None  # server.mode: slurm
    if "job" in s:  # the server runs while its job does (on a node, not here)
        alive = job is not None and job["state"] == "RUNNING"
    loop = first.get("loop") == "yes"
    state = kv.get("state") or (
        "unknown" if session else "not deployed" if first.get("deployed") != "yes" else "stopped"
    )
    marker = _pairs(s.get("stopped"))
    compose = s.get("compose")
    common = {
        "deployed": first.get("deployed") == "yes",
        "ports_busy": _ints(first.get("busy")),
        "foreign_ports": [] if compose is not None else _foreign(s.get("foreign", [])),
    }
    if compose is not None:
        states = [line.split("|", 1)[0].strip() for line in compose]
        running = bool(states) and all(x == "running" for x in states)
        state = states[0] if states else "stopped"
        crash = None
        if not running and states:
            crash = compose[0].split("|", 1)[-1].strip()
        stopped = _stopped(marker) if not running else None
        if stopped is not None:
            state = "stopped"
        return {
            "running": running,
            "state": state,
            "pid": None,
            "since": None,
            "uptime_s": None,
            "restarts": None,
            "port": _int(first.get("port")),
            "last_crash_line": crash,
            "last_exit": None,
            "session": False,
            "loop": None,
            "origin": None,
            "log": None,
            "stopped": stopped,
            **common,
        }
    started = _int(kv.get("started"))
    now = _int(first.get("now"))
    stopped = _stopped(marker) if not alive else None
    if alive and not loop:  # the loop was killed by hand (or crashed): CARLA still serves
        state = LOOP_GONE
    elif stopped is not None and not session:
        state = "stopped"
    elif not session and state not in ("exited", "failed", "not deployed"):
        # gone without a word (a reboot, a kill): the loop's own "stopped" on SIGHUP counts too
        state = DIED if kv.get("state") else NOT_STARTED
    running = alive and (state == LOOP_GONE or (session and state == "running"))
    origin = parse_origin(first.get("config"))
    more = {"job": job} if "job" in s else {}
    return {
        "running": running,
        "state": state,
        "pid": _int(kv.get("pid")),
        "since": iso(started) if started else None,
        "uptime_s": (now - started) if running and now and started else None,
        "restarts": _int(kv.get("restarts")) or 0,
        "port": _int(kv.get("port")) or _int(first.get("port")),
        "last_crash_line": kv.get("last_crash") or None,
        "last_exit": _int(kv.get("last_exit")),
        "session": session,
        "loop": loop,
        "origin": origin,
        "log": first.get("log"),
        "stopped": stopped,
        **common,
        **more,
    }


def _foreign(lines: list[str]) -> list[list[int]]:
    """`PORT UID` lines -> [[port, uid], ...]."""
    pairs = (line.split()[:2] for line in lines if len(line.split()) >= 2)
    return [[int(a), int(b)] for a, b in pairs if a.isdigit() and b.isdigit()]


def _pairs(lines: list[str] | None) -> dict[str, str] | None:
    """`key=value` lines as a dict; None when the section is missing (no such file)."""
    if not lines:
        return None
    return {k.strip(): v.strip() for k, sep, v in (ln.partition("=") for ln in lines) if sep}


def _stopped(marker: dict[str, str] | None) -> dict[str, Any] | None:
    """The stop-on-purpose marker as {by, at (ISO 8601)}; None without one."""
    if marker is None:
        return None
    at = _int(marker.get("at"))
    return {"by": marker.get("by") or None, "at": iso(at) if at else None}


def state_words(st: dict[str, Any]) -> str:
    """A server that does not run, in words: on purpose (who, when) or what ended it."""
    stopped = st.get("stopped")
    if stopped:
        by = f"by {stopped['by']}" if stopped.get("by") else ""
        at = f"at {stopped['at']}" if stopped.get("at") else ""
        said = " ".join(x for x in (by, at) if x)
        return "stopped on purpose" + (f" ({said})" if said else "")
    if st.get("job") and st.get("state") in ("starting", "pending", "restarting", "running"):
        return job_words(st["job"])  # server.mode: slurm: its job says it ("job 8 pending ...")
    if st.get("state") == DIED:
        return "died unexpectedly (its tmux session and processes are gone: a reboot, or a kill)"
    state, crash = st.get("state") or "not running", st.get("last_crash_line")
    return f"{state} ({crash})" if crash else str(state)


def notes(st: dict[str, Any], profile_name: str) -> list[str]:
    """What a status asks the user to do, one line each (loop gone, drift, a foreign port)."""
    restart = f"run `carla-launch server restart {profile_name}`"
    out = []
    if st.get("state") == LOOP_GONE:
        out.append(f"running, restart loop gone: {restart}")
    if st.get("drift"):
        out.append(f"{changed_since_deploy(st['drift'])}: {restart}")
    for port, uid in (st.get("foreign_ports") or [])[:1]:
        out.append(foreign_port_line(port, uid))
    return out


def foreign_port_line(port: object, uid: object) -> str:
    """As the box scripts' `start_server` says it."""
    return f"port {port} is held by another user's process (uid {uid}): choose another server.port"


def _int(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def _ints(text: str | None) -> list[int]:
    return [int(x) for x in (text or "").split() if x.isdigit()]
