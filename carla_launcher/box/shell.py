"""Building blocks of the POSIX shell scripts we run on a box (deploy, `server`, facts). Pure.

Every value that comes from a profile enters a script through `q()` (shlex quoting), so that
spaces, quotes and `;` stay data. Scripts are sent as one argument of `sh -c` (pyinfra) or on
the standard input of `sh -s` (OpenSSH), never spliced into an ssh command line.
"""

from __future__ import annotations

import shlex

ERROR_PREFIX = "carla-launch: error: "
STATE_DIR = ".carla-launch"  # below the server user's home: one folder per tmux session
COMPOSE_PROJECT_PREFIX = "carla-launch-"  # the box-side compose project of server.mode: compose
MARKER = ".carla-launch-package"  # in the install root: what was installed, so reruns skip it
DOWNLOADS = "downloads"  # below STATE_DIR: partial and verified archives


def q(value: object) -> str:
    """One shell word, whatever the value holds."""
    return shlex.quote(str(value))


def prologue(server_user: str, session: str, root: str | None = None) -> str:
    """Who runs the server, where its files are, and `as_server CMD...` to run as that user.

    Logged in as root, the server runs as `server_user` (CARLA refuses root); logged in as
    anyone else, it runs as that user. `~` in the install root means the server user's home.
    """
    lines = [
        "set -u",
        "umask 022",
        f"CL_SERVER_USER={q(server_user)}",
        f"CL_SESSION={q(session)}",
        f"CL_PROJECT={q(COMPOSE_PROJECT_PREFIX + session.lower())}",  # server.mode: compose
        'if [ "$(id -u)" = 0 ]; then SU=$CL_SERVER_USER; else SU=$(id -un); fi',
        'SHOME=$(getent passwd "$SU" 2>/dev/null | cut -d: -f6)',
        'USER_EXISTS=yes; [ -n "$SHOME" ] || { USER_EXISTS=no; SHOME=/home/$SU; }',
        f'SDIR="$SHOME/{STATE_DIR}/$CL_SESSION"',
        f'DLDIR="$SHOME/{STATE_DIR}/{DOWNLOADS}"',
        "as_server() {",
        '  if [ "$(id -u)" = 0 ] && [ "$SU" != root ]; then',
        '    runuser -u "$SU" -- env HOME="$SHOME" USER="$SU" LOGNAME="$SU" "$@"',
        '  else "$@"; fi',
        "}",
        f'die() {{ echo "{ERROR_PREFIX}$*" >&2; exit 1; }}',
    ]
    if root is not None:
        lines += [
            f"CL_ROOT={q(root)}",
            "case $CL_ROOT in",
            '  "~") ROOT=$SHOME ;;',
            '  "~/"*) ROOT="$SHOME/${CL_ROOT#"~/"}" ;;',
            "  /*) ROOT=$CL_ROOT ;;",
            '  *) ROOT="$SHOME/$CL_ROOT" ;;',
            "esac",
        ]
    return "\n".join(lines) + "\n"


# Shell functions about listening ports and process groups, shared by deploy and `server`.
PORT_FUNCTIONS = r"""
hexport() { printf '%04X' "$1"; }
ports_busy() {  # prints the busy ports among $1..$1+2 (LISTEN sockets, v4 and v6)
  [ -n "${1:-}" ] || return 1
  _p0=$(hexport "$1"); _p1=$(hexport $(($1 + 1))); _p2=$(hexport $(($1 + 2)))
  _busy=$(awk 'FNR > 1 && $4 == "0A" { print $2 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    grep -E ":($_p0|$_p1|$_p2)\$" | sed 's/.*://' | sort -u)
  [ -n "$_busy" ] || return 1
  for _h in $_busy; do printf '%d ' "0x$_h"; done; echo
}
proc_alive() {  # is $1 a live (non-zombie) process of the server user? (zombies linger
  # where nothing reaps them, e.g. in containers whose pid 1 is not an init)
  read -r _line < "/proc/$1/stat" 2>/dev/null || return 1
  _rest=${_line##*) }
  [ "${_rest%% *}" != Z ] && [ "$(stat -c %U "/proc/$1" 2>/dev/null)" = "$SU" ]
}
group_alive() {  # is a live (non-zombie) process of the server user left in group $1?
  _ga=${1:-}
  [ -n "$_ga" ] || return 1
  for _f in /proc/[0-9]*/stat; do
    read -r _line < "$_f" 2>/dev/null || continue
    _rest=${_line##*) }
    set -- $_rest
    if [ "$1" != Z ] && [ "$3" = "$_ga" ]; then
      _d=${_f%/stat}
      [ "$(stat -c %U "$_d" 2>/dev/null)" = "$SU" ] && return 0
    fi
  done
  return 1
}
"""


STOP_FUNCTION = r"""
stop_server() {  # tmux session, launch loop and the server's whole process group; then ports
  _loop=$(sed -n 's/^loop=//p' "$SDIR/status" 2>/dev/null)
  _pg=$(cat "$SDIR/pgid" 2>/dev/null || true)
  _port=$(cat "$SDIR/port" 2>/dev/null || true)
  _had=no
  if as_server tmux kill-session -t "=$CL_SESSION" 2>/dev/null; then _had=yes; fi
  if [ -n "$_loop" ] && proc_alive "$_loop"; then
    kill -TERM "$_loop" 2>/dev/null; _had=yes
  fi
  if [ -n "$_pg" ] && group_alive "$_pg"; then  # never a recycled group of someone else
    _had=yes
    kill -TERM "-$_pg" 2>/dev/null
    _i=0
    while group_alive "$_pg" && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i + 1)); done
    group_alive "$_pg" && { kill -KILL "-$_pg" 2>/dev/null; sleep 0.2; }
  fi
  if [ $_had = yes ]; then
    _i=0
    while ports_busy "$_port" >/dev/null && [ $_i -lt 200 ]; do sleep 0.1; _i=$((_i + 1)); done
    if _b=$(ports_busy "$_port"); then die "ports still in use after stopping the server: $_b"; fi
  fi
  if [ -f "$SDIR/status" ]; then
    sed 's/^state=.*/state=stopped/' "$SDIR/status" > "$SDIR/status.tmp" 2>/dev/null &&
      cat "$SDIR/status.tmp" > "$SDIR/status"; rm -f "$SDIR/status.tmp"
  fi
  STOPPED=$_had
  return 0
}
"""


START_FUNCTION = r"""
start_server() {  # the launch loop in a detached tmux session, as the server user
  [ -f "$SDIR/launch.sh" ] || die "no launch script in $SDIR: run carla-launch deploy first"
  if as_server tmux has-session -t "=$CL_SESSION" 2>/dev/null; then return 0; fi
  as_server tmux new-session -d -s "$CL_SESSION" -x 200 -y 50 sh "$SDIR/launch.sh" ||
    die "tmux could not start session $CL_SESSION"
}
"""


def error_line(stdout: list[str], stderr: list[str]) -> str | None:
    """The one line that explains a failed script: our `die` message, else its last words."""
    for line in reversed(stderr + stdout):
        if ERROR_PREFIX in line:
            return line.split(ERROR_PREFIX, 1)[1].strip()
    for line in reversed(stderr):
        if line.strip():
            return line.strip()
    return None
