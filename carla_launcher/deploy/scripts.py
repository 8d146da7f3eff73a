"""The shell scripts of a deploy's steps on the box (pure): they follow `box/shell.prologue`.

`plan.py` decides which of them a box needs; these say how: write a server's launch files,
create the server user, (re)start a server under the install lock.
"""

from __future__ import annotations

import hashlib

from carla_launcher.box.shell import (
    PORT_FUNCTIONS,
    START_FUNCTION,
    STATE_DIR,
    STOP_FUNCTION,
    USER_CREATED,
    q,
)
from carla_launcher.deploy.boxlib import FUNCTIONS


def subshell(body: str, on_failure: str) -> str:
    """`body` in a subshell of its own: its `exit` ends only its part; then `on_failure`."""
    return f"(\n{body})" + f" || {on_failure}\n"


def sha256_text(text: str) -> str:
    """A launch script's (or compose file's) sha256, as `sha256sum` on the box prints it."""
    return hashlib.sha256(text.encode()).hexdigest()


def write_files(files: dict[str, str]) -> str:
    """Write a server's files (name -> text) into $SDIR, each one whole or not at all."""
    out = [
        'as_server mkdir -p "$SDIR" || die "cannot create $SDIR"',
        # a temporary name of our own: two deploys at once must not move each other's file
        'put() { as_server sh -c \'cat > "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"\' sh "$SDIR/$1"; }',
    ]
    for name, text in files.items():
        out.append(f"printf '%s' {q(text)} | put {q(name)} || die {q('cannot write ' + name)}")
    out.append('chmod 755 "$SDIR/launch.sh" 2>/dev/null')
    out.append('echo "wrote the launch files in $SDIR"')
    return "\n".join(out) + "\n"


def create_user_script() -> str:
    """useradd, and the marker that says carla-launch made the user; a user that another
    deploy made meanwhile is fine (and not ours to mark)."""
    return f"""echo "creating the user $SU for the server (CARLA refuses root)"
made=no tries=0
while :; do
  if msg=$(useradd -m -s /bin/bash "$SU" 2>&1); then made=yes; break; fi
  if getent passwd "$SU" > /dev/null 2>&1; then
    echo "the user $SU exists already (another deploy made it)"; break
  fi
  tries=$((tries + 1))  # /etc/passwd may be locked a moment by another useradd
  [ $tries -lt 5 ] || die "could not create the user $SU: $msg"
  sleep 1
done
if [ $made = yes ]; then
  SHOME=$(getent passwd "$SU" | cut -d: -f6)
  as_server mkdir -p "$SHOME/{STATE_DIR}" &&
    echo "carla-launch deploy created this user on $(date -u +%Y-%m-%dT%H:%M:%SZ)" |
    as_server sh -c 'cat > "$1"' sh "$SHOME/{STATE_DIR}/{USER_CREATED}" ||
    die "could not write $SHOME/{STATE_DIR}/{USER_CREATED}"
fi
"""


def start_under_lock(running: bool, launch_sha: str, what: str = "CARLA") -> str:
    """Stop what runs, start the launch loop; under the install lock, so that a second deploy
    at the same time finds the server it would start running (on the same launch script).
    `what` the loop runs, in the line it says (Slurm's submits a job)."""
    lines = [FUNCTIONS, PORT_FUNCTIONS, STOP_FUNCTION, START_FUNCTION, "lock_install"]
    if running:
        lines.append('echo "restarting the server: its launch script changed"')
    else:
        lines.append(
            'if as_server tmux has-session -t "=$CL_SESSION" 2>/dev/null && '
            f'[ "$(sha256sum "$SDIR/launch.sh" 2>/dev/null | cut -c1-64)" = {q(launch_sha)} ]; '
            'then echo "CARLA runs already in tmux session $CL_SESSION (another deploy '
            'started it)"; exit 0; fi'
        )
    lines.append("stop_server")
    lines.append(f'echo "starting {what} in tmux session $CL_SESSION as $SU"')
    # the tmux server outlives us: it must not inherit the lock (fd 9)
    lines.append("( exec 9>&-; start_server ) || exit 1")
    return "\n".join(lines) + "\n"
