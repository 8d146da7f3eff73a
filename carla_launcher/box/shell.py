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
#: below STATE_DIR: the deploy made the server user (useradd), so `server uninstall --user` may
#: remove it; never a user without this file
USER_CREATED = "user-created-by-carla-launch"
#: The deploy's lock of the install root $ROOT, a shell word (deploy/boxlib.py: lock_install;
#: `server uninstall` holds it while removing)
INSTALL_LOCK = f'"$SHOME/{STATE_DIR}/install-$(printf %s "$ROOT" | cksum | cut -d\' \' -f1).lock"'
#: The lock of the archive $A in the server user's download cache, a shell word (deploy/boxlib.py:
#: lock_archive, shared by every install root of the user; `server uninstall` removes it with
#: the archive)
DOWNLOAD_LOCK = f'"$SHOME/{STATE_DIR}/download-$A.lock"'


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
# A read of /proc/N/stat is wrapped in `{ ...; } 2>/dev/null`: the process may vanish between
# the glob and the read, and a failed `<` redirection complains before a `2>/dev/null` written
# after it applies ("sh: cannot open /proc/N/stat").
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
port_users() {  # port_users PORT ours|foreign: "PORT UID" lines of the listeners on
  # PORT..PORT+2 whose owner is (ours) or is not (foreign) the server user
  [ -n "${1:-}" ] || return 1
  _uid=$(id -u "$SU" 2>/dev/null) || _uid=-1
  _pf=$(awk -v p0="$(hexport "$1")" -v p1="$(hexport $(($1 + 1)))" \
    -v p2="$(hexport $(($1 + 2)))" -v uid="$_uid" -v mode="$2" 'FNR > 1 && $4 == "0A" {
      n = split($2, a, ":"); h = a[n]
      if ((h == p0 || h == p1 || h == p2) && (($8 == uid) == (mode == "ours"))) print h, $8 }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u)
  [ -n "$_pf" ] || return 1
  printf '%s\n' "$_pf" | while read -r _h _u; do printf '%d %s\n' "0x$_h" "$_u"; done
}
ports_foreign() { port_users "${1:-}" foreign; }
user_pids() {  # the live processes of the server user, from /proc (busybox ps has no -u)
  for _d in /proc/[0-9]*; do
    proc_alive "${_d#/proc/}" && printf '%s ' "${_d#/proc/}"
  done
  return 0
}
proc_start() {  # field 22 of /proc/$1/stat: when $1 started (clock ticks since boot)
  { read -r _ps < "/proc/$1/stat"; } 2>/dev/null || return 1
  set -- ${_ps##*) }
  [ $# -ge 20 ] || return 1
  echo "${20}"
}
proc_alive() {  # is $1 a live (non-zombie) process of the server user? (zombies linger
  # where nothing reaps them, e.g. in containers whose pid 1 is not an init)
  case ${1:-} in ''|*[!0-9]*) return 1 ;; esac
  { read -r _line < "/proc/$1/stat"; } 2>/dev/null || return 1
  _rest=${_line##*) }
  [ "${_rest%% *}" != Z ] && [ "$(stat -c %U "/proc/$1" 2>/dev/null)" = "$SU" ]
}
proc_ours() {  # proc_ours PID START WORD: $1 is alive, the server user's, and the process we
  # recorded: started at START (field 22), or, with no START recorded, running WORD
  proc_alive "$1" || return 1
  if [ -n "${2:-}" ]; then
    [ "$(proc_start "$1")" = "$2" ]
  else
    tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$3"
  fi
}
group_alive() {  # is a live (non-zombie) process of the server user left in group $1?
  _ga=${1:-}
  [ -n "$_ga" ] || return 1
  for _f in /proc/[0-9]*/stat; do
    { read -r _line < "$_f"; } 2>/dev/null || continue
    _rest=${_line##*) }
    set -- $_rest
    if [ "$1" != Z ] && [ "$3" = "$_ga" ]; then
      _d=${_f%/stat}
      [ "$(stat -c %U "$_d" 2>/dev/null)" = "$SU" ] && return 0
    fi
  done
  return 1
}
group_ours() {  # group_ours PGID START: is group $1 still the one the launch loop started?
  # Its leader must have the recorded start time (a group number can be reused by any later
  # process of the server user). A group whose leader is gone keeps its number reserved, so
  # its members are the server's when one of them runs CARLA.
  group_alive "${1:-}" || return 1
  if [ -r "/proc/$1/stat" ]; then
    proc_ours "$1" "${2:-}" CarlaUE4
    return
  fi
  for _f in /proc/[0-9]*/stat; do
    { read -r _line < "$_f"; } 2>/dev/null || continue
    set -- "$1" ${_line##*) }
    [ "$4" = "$1" ] && [ "$2" != Z ] || continue  # $2: state, $4: process group
    _d=${_f%/stat}
    [ "$(stat -c %U "$_d" 2>/dev/null)" = "$SU" ] || continue
    tr '\0' ' ' < "$_d/cmdline" 2>/dev/null | grep -qF CarlaUE4 && return 0
  done
  return 1
}
status_value() { sed -n "s/^$1=//p" "$SDIR/status" 2>/dev/null | head -n 1; }
loop_ours() {  # is the launch loop the status file names still running?
  proc_ours "$(status_value loop)" "$(status_value loop_start)" "$SDIR/launch.sh"
}
server_group_ours() {  # is the server's process group the status file names still running?
  group_ours "$(status_value pid)" "$(status_value pgid_start)"
}
"""


STOP_FUNCTION = r"""
stop_server() {  # tmux session, launch loop and the server's whole process group; then ports.
  # Only what the status file recorded, checked by start time: never a recycled pid or group.
  _loop=$(status_value loop)
  _pg=$(status_value pid)
  _pg_start=$(status_value pgid_start)
  _port=$(cat "$SDIR/port" 2>/dev/null || true)
  _had=no
  if as_server tmux kill-session -t "=$CL_SESSION" 2>/dev/null; then _had=yes; fi
  if loop_ours; then
    kill -TERM "$_loop" 2>/dev/null; _had=yes
  fi
  if [ -n "$_pg" ] && group_ours "$_pg" "$_pg_start"; then
    _had=yes
    kill -TERM "-$_pg" 2>/dev/null
    _i=0
    while group_alive "$_pg" && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i + 1)); done
    group_alive "$_pg" && { kill -KILL "-$_pg" 2>/dev/null; sleep 0.2; }
  fi
  if [ $_had = yes ]; then  # wait for our ports; another user's listeners are not ours
    _i=0
    while port_users "$_port" ours >/dev/null && [ $_i -lt 200 ]; do
      sleep 0.1; _i=$((_i + 1))
    done
    if port_users "$_port" ours >/dev/null; then
      die "ports still in use after stopping the server: $(ports_busy "$_port")"
    fi
  fi
  FOREIGN=$(ports_foreign "$_port" | head -n 1)
  if [ -f "$SDIR/status" ]; then
    sed 's/^state=.*/state=stopped/' "$SDIR/status" > "$SDIR/status.tmp" 2>/dev/null &&
      cat "$SDIR/status.tmp" > "$SDIR/status"; rm -f "$SDIR/status.tmp"
  fi
  STOPPED=$_had
  return 0
}
"""


START_FUNCTION = r"""
start_failed() {  # start_failed WHY WHAT-TO-DO: the status file keeps WHY (`status` says
  # "failed (WHY)", not "died" or a stop on purpose); then dies with both
  if [ -f "$SDIR/status" ]; then
    { sed -e 's/^state=.*/state=failed/' -e '/^last_crash=/d' "$SDIR/status"
      printf 'last_crash=%s\n' "$1"; } > "$SDIR/status.tmp" 2>/dev/null &&
      cat "$SDIR/status.tmp" > "$SDIR/status"; rm -f "$SDIR/status.tmp"
  fi
  die "$1: $2"
}
start_server() {  # the launch loop in a detached tmux session, as the server user
  rm -f "$SDIR/stopped"  # asked to run: no longer stopped on purpose, even if this fails
  [ -f "$SDIR/launch.sh" ] || die "no launch script in $SDIR: run carla-launch deploy first"
  if as_server tmux has-session -t "=$CL_SESSION" 2>/dev/null; then return 0; fi
  if _fp=$(ports_foreign "$(cat "$SDIR/port" 2>/dev/null)"); then
    set -- $(printf '%s\n' "$_fp" | head -n 1)
    start_failed "port $1 is held by another user's process (uid $2)" "choose another server.port"
  fi
  as_server tmux new-session -d -s "$CL_SESSION" -x 200 -y 50 sh "$SDIR/launch.sh" ||
    start_failed "tmux could not start session $CL_SESSION" "run carla-launch doctor"
}
"""

#: `$SDIR/stopped`: the server was stopped on purpose (`by=WHO`, `at=EPOCH`); written by
#: `mark_stopped` (server stop, down --server; not restart), removed by every start (first thing:
#: a start that fails is a failure, not a stop on purpose).
STOPPED_FILE = "stopped"

MARK_STOPPED_FUNCTION = r"""
mark_stopped() {  # a stop someone asked for ($1: by whom): status says "stopped on purpose"
  [ -d "$SDIR" ] || return 0
  { printf 'by=%s\n' "$1"; echo "at=$(date +%s)"; } > "$SDIR/stopped.tmp" 2>/dev/null &&
    mv -f "$SDIR/stopped.tmp" "$SDIR/stopped"
  return 0
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
