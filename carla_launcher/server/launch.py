"""The launch script: the loop that runs CARLA inside the tmux session on the box. Pure.

Why a loop of our own: `CarlaUE4.sh` does not pass signals on (it starts the binary without
exec) and CARLA crashes now and then (Signal 11). So the loop starts the server in its own
process group (`setsid`), records that group, its start time, restarts and the last crash line
in a status file (with the start times of the group's leader and of the loop itself, field 22 of
/proc/PID/stat, so that a stop never kills a recycled pid or group), appends everything to a
log file (and shows it in the pane), restarts after a crash with exponential backoff when
`server.restart` says so, and on SIGHUP/SIGTERM (tmux kill-session, `carla-launch server stop`)
takes the whole group down.

The script's second comment line records what it was made from (`LaunchOrigin`: the profile's
args, GPU, port and restart policy, the settings file's sha256, and `server.gpus` when set), so
that `server status` can tell in the same round trip whether the profile changed since the
deploy (`server/drift.py`). With `server.gpus` each server (slot) has a launch script of its
own, in its own state folder; its GPU is the slot's.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from carla_launcher.box.shell import q

if TYPE_CHECKING:
    from carla_launcher.profile import Server
    from carla_launcher.server.slots import Slot

Gpus = tuple[int, ...] | str | None  # server.gpus: GPU indexes, "all", or None (one server)

PORT_FLAGS = ("-carla-rpc-port", "-world-port", "-carla-port", "-carla-world-port")
FIRST_DELAY = 1  # seconds before the first restart; doubles up to MAX_DELAY
MAX_DELAY = 60
STABLE_AFTER = 60  # a run that lasted this long resets the delay
ORIGIN_PREFIX = "# carla-launch-config: "  # the launch script's line that says what made it


@dataclass(frozen=True)
class LaunchOrigin:
    """What a launch script was made from, as the profile said it (not the final command line:
    the port the deploy chose may differ from the one asked for when that one was taken)."""

    args: tuple[str, ...]  # server.args as given
    gpu: int | None
    port: int  # server.port, the port asked for
    restart: str
    settings_sha256: str | None  # of the settings file's text; None: no settings file
    gpus: Gpus = None  # server.gpus as given; `gpu` is then this server's (its slot's) GPU
    slurm: tuple[str, ...] | None = None  # server.mode: slurm: each job's sbatch options

    def line(self) -> str:
        """The one comment line of the launch script (JSON cannot hold a raw newline). `gpus`
        only when set: the line of a one-server profile stays as it was (no restart for it).

        >>> line = LaunchOrigin(("-nosound",), None, 2000, "always", None).line()
        >>> line[:49], parse_origin(line).args
        ('# carla-launch-config: {"args":["-nosound"],"gpu"', ('-nosound',))
        >>> parse_origin(LaunchOrigin((), 1, 2000, "always", None, (0, 1)).line()).gpus
        (0, 1)
        """
        data: dict[str, Any] = {
            "args": list(self.args),
            "gpu": self.gpu,
            "port": self.port,
            "restart": self.restart,
            "settings_sha256": self.settings_sha256,
        }
        if self.gpus is not None:
            data["gpus"] = self.gpus if isinstance(self.gpus, str) else list(self.gpus)
        if self.slurm is not None:
            data["slurm"] = list(self.slurm)
        return ORIGIN_PREFIX + json.dumps(data, separators=(",", ":"), sort_keys=True)


def launch_origin(
    server: Server, settings_text: str | None, slot: Slot | None = None
) -> LaunchOrigin:
    """The profile's side: what a deploy made now would record (for server `slot`: its GPU)."""
    sha = hashlib.sha256(settings_text.encode()).hexdigest() if settings_text is not None else None
    gpu = slot.gpu if slot is not None else server.gpu
    origin = LaunchOrigin(server.args, gpu, server.port, server.restart, sha, server.gpus)
    if server.mode != "slurm":
        return origin
    from carla_launcher.server.slurm import sbatch_options  # it renders from this module

    options = tuple(sbatch_options(server.slurm))
    return replace(origin, slurm=options)


def parse_origin(text: str | None) -> LaunchOrigin | None:
    """The box's side: the JSON of the config line (prefix optional); None when absent or not
    what we write (an older launch script, or an edited one)."""
    text = (text or "").strip().removeprefix(ORIGIN_PREFIX.strip()).strip()
    if not text:
        return None
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    args, gpu, port = data.get("args"), data.get("gpu"), data.get("port")
    restart, sha = data.get("restart"), data.get("settings_sha256")
    if not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
        return None
    if not (gpu is None or (isinstance(gpu, int) and not isinstance(gpu, bool))):
        return None
    if not (isinstance(port, int) and not isinstance(port, bool)) or not isinstance(restart, str):
        return None
    if sha is not None and not isinstance(sha, str):
        return None
    raw = data.get("gpus")
    gpus: Gpus = "all" if raw == "all" else None
    if isinstance(raw, list) and all(isinstance(g, int) and not isinstance(g, bool) for g in raw):
        gpus = tuple(raw)
    elif raw not in (None, "all"):
        return None
    slurm = data.get("slurm")
    if slurm is not None and not (
        isinstance(slurm, list) and all(isinstance(o, str) for o in slurm)
    ):
        return None
    options = tuple(slurm) if slurm is not None else None
    return LaunchOrigin(tuple(args), gpu, port, restart, sha, gpus, options)


@dataclass(frozen=True)
class LaunchConfig:
    root: str  # absolute install root on the box (holds CarlaUE4.sh)
    session_dir: str  # absolute: launch.sh, server.log, status, pgid, port
    args: tuple[str, ...]  # final CARLA arguments (see `server_args`)
    port: int
    restart: str  # no | on-failure | always
    package_id: str  # what is installed; a new package changes the script, so it restarts
    origin: LaunchOrigin | None = None  # what the profile said; recorded for drift checks


def _flag_name(arg: str) -> str:
    return arg.split("=", 1)[0].lower().replace("--", "-", 1) if arg.startswith("-") else ""


def server_args(
    args: tuple[str, ...],
    port: int,
    gpu: int | None = None,
    settings_remote: str | None = None,
) -> tuple[str, ...]:
    """The profile's args with our port (and GPU and settings file) put in, once each."""
    drop = set(PORT_FLAGS)
    if gpu is not None:
        drop.add("-graphicsadapter")
    if settings_remote is not None:
        drop.add("-carla-settings")
    kept = [a for a in args if _flag_name(a) not in drop]
    extra = [f"-carla-rpc-port={port}"]
    if gpu is not None:
        extra.append(f"-graphicsadapter={gpu}")
    if settings_remote is not None:
        extra.append(f"-carla-settings={settings_remote}")
    return tuple(kept + extra)


def without_port(args: tuple[str, ...]) -> tuple[str, ...]:
    """`args` without their port flags (a Slurm job adds the port it chose on its node).

    >>> without_port(("-nosound", "-carla-rpc-port=2000", "--world-port=2000"))
    ('-nosound',)
    """
    return tuple(a for a in args if _flag_name(a) not in PORT_FLAGS)


def settings_arg(args: tuple[str, ...]) -> str | None:
    """The file a `-carla-settings=FILE` argument names, if any."""
    for a in args:
        if _flag_name(a) == "-carla-settings":
            return a.split("=", 1)[1] if "=" in a else None
    return None


CRASH_PATTERN = r"Signal [0-9]+ caught|Refusing to run|bind: |Fatal error|Assertion failed"
SHELL_CRASH_PATTERN = r"Segmentation fault|Killed|Aborted|core dumped|[Ee]rror:"


#: Shell text of both loops, this one and Slurm's job loop (`server/slurm.py`): when a process
#: started (field 22 of /proc/PID/stat), the loop's own lines in the log, and the log shown in
#: the pane (rotated past 50 MB). launch.sh is hashed: changing these restarts deployed servers.
START_OF = r"""start_of() {  # field 22 of /proc/$1/stat: when $1 started (clock ticks since boot)
  { read -r line < "/proc/$1/stat"; } 2>/dev/null || return 0
  set -- ${line##*) }
  [ $# -ge 20 ] && echo "${20}"
}
loop_start=$(start_of $$)
"""
NOTE = r"""note() { echo "$(date '+%Y-%m-%d %H:%M:%S') carla-launch: $*" >> "$LOG"; }
"""
LOG_IN_PANE = r"""mkdir -p "$DIR"
if [ -f "$LOG" ] && [ "$(wc -c < "$LOG")" -gt 52428800 ]; then mv -f "$LOG" "$LOG.1"; fi
touch "$LOG"
tail -n 0 -F --pid=$$ "$LOG" 2>/dev/null &
tailpid=$!
"""


def render_launch_script(cfg: LaunchConfig) -> str:
    args = " ".join(q(a) for a in cfg.args)
    origin = f"{cfg.origin.line()}\n" if cfg.origin is not None else ""
    return f"""#!/bin/sh
{origin}# carla-launch: runs the CARLA server and restarts it after a crash (restart: {cfg.restart}).
# Generated by `carla-launch deploy`; edits are overwritten. Package: {_comment(cfg.package_id)}
set -u
ROOT={q(cfg.root)}
DIR={q(cfg.session_dir)}
PORT={int(cfg.port)}
RESTART={q(cfg.restart)}
LOG="$DIR/server.log"
STATUS="$DIR/status"
restarts=0
delay={FIRST_DELAY}
last_exit=
last_crash=
pgid=
pgid_start=
started=
tailpid=

{START_OF}status() {{
  {{
    echo "state=$1"; echo "pid=$pgid"; echo "pgid_start=$pgid_start"; echo "started=$started"
    echo "restarts=$restarts"; echo "last_exit=$last_exit"; echo "last_crash=$last_crash"
    echo "port=$PORT"; echo "loop=$$"; echo "loop_start=$loop_start"
  }} > "$STATUS.tmp" && mv -f "$STATUS.tmp" "$STATUS"
}}
{NOTE}group_alive() {{  # a live (non-zombie) process left in group $1?
  g=$1
  for f in /proc/[0-9]*/stat; do
    {{ read -r line < "$f"; }} 2>/dev/null || continue
    rest=${{line##*) }}
    set -- $rest
    [ "$1" != Z ] && [ "$3" = "$g" ] && return 0
  done
  return 1
}}
finish() {{
  trap - HUP INT TERM
  if [ -n "$pgid" ]; then
    kill -TERM "-$pgid" 2>/dev/null
    i=0; while group_alive "$pgid" && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "-$pgid" 2>/dev/null
  fi
  note "stopped"
  status stopped
  [ -n "$tailpid" ] && kill "$tailpid" 2>/dev/null
  exit 0
}}
trap finish HUP INT TERM

{LOG_IN_PANE}cd "$ROOT" || {{ note "no such folder: $ROOT"; last_crash="no such folder: $ROOT"; status failed; exit 1; }}

while :; do
  started=$(date +%s)
  note "starting CARLA on port $PORT (restarts so far: $restarts)"
  rm -f "$DIR/pgid"
  setsid -w sh -c 'echo $$ > "$0"; exec "$@"' "$DIR/pgid" ./CarlaUE4.sh {args} \\
    >> "$LOG" 2>&1 < /dev/null &
  child=$!
  i=0; while [ ! -s "$DIR/pgid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  pgid=$(cat "$DIR/pgid" 2>/dev/null || true)
  pgid_start=$(start_of "$pgid")
  status running
  wait "$child"
  rc=$?
  kill -KILL "-$pgid" 2>/dev/null
  last_exit=$rc
  if [ "$rc" -gt 128 ]; then how="signal $((rc - 128))"; else how="code $rc"; fi
  crash=$(tail -n 3000 "$LOG" | awk -v pat={q(CRASH_PATTERN)} -v shpat={q(SHELL_CRASH_PATTERN)} '
    /carla-launch: starting/ {{ c = ""; s = "" }}
    /carla-launch:/ {{ next }}
    $0 ~ pat && c == "" {{ c = $0 }}
    $0 ~ shpat {{ s = $0 }}
    END {{ if (c != "") print c; else print s }}')
  last_crash=${{crash:-"exited with $how"}}
  note "CARLA exited with $how: $last_crash"
  case $RESTART in
    no) pgid=; pgid_start=; status exited; break ;;
    on-failure) if [ "$rc" -eq 0 ]; then pgid=; pgid_start=; status exited; break; fi ;;
  esac
  if [ $(($(date +%s) - started)) -ge {STABLE_AFTER} ]; then delay={FIRST_DELAY}; fi
  restarts=$((restarts + 1))
  pgid=
  pgid_start=
  status restarting
  note "restarting in $delay s"
  sleep "$delay" &
  wait $!
  delay=$((delay * 2)); [ "$delay" -gt {MAX_DELAY} ] && delay={MAX_DELAY}
done
[ -n "$tailpid" ] && kill "$tailpid" 2>/dev/null
exit 0
"""  # noqa: E501  launch.sh is hashed: changing its text restarts deployed servers


def _comment(text: str) -> str:
    return re.sub(r"[\r\n]", " ", text)
