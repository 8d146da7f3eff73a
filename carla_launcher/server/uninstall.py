"""`server uninstall`: take a profile's server off a box, leaving the box as before the deploy.

What goes: the install root (only with the install marker in it: never a tree carla-launch did
not unpack, wherever it is, nor one another profile's launch script still runs from: two
profiles may share a root), what an interrupted deploy left beside it, the launch files (the
state folder of every server of the profile: SESSION, and SESSION-K of server K, also one a
deploy retired that holds only its log), the profile's package in the box's download cache (only
when no other install root of the server user was installed from it: the cache is shared, and
the next deploy of that root would fetch it again; nor while a deploy uses it) and the deploy's
lock; with `remove_user`, the server user and its home (only when the deploy created it: the
`USER_CREATED` file; never root or the login user). Every server is stopped first, under the
deploy's install lock: a deploy of the same root that runs makes uninstall stop with one line,
and one that starts meanwhile waits, so an unpack is never removed half-way.

One script does both the listing (`--dry-run`, the question on a terminal) and the removal,
so that the removal decides again on the box what is safe instead of trusting a list. Scripts
and parsing are pure; `inspect` and `uninstall` are the SSH round trips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from carla_launcher.box.progress import size
from carla_launcher.box.shell import (
    DOWNLOAD_LOCK,
    INSTALL_LOCK,
    MARKER,
    PORT_FUNCTIONS,
    STATE_DIR,
    STOP_FUNCTION,
    USER_CREATED,
    prologue,
    q,
)
from carla_launcher.box.snippets import LEFTOVERS_FUNCTION

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

_FUNCTIONS = rf"""
un_item() {{  # un_item PATH WHAT: list it (show) or remove it (remove)
  [ -e "$1" ] || [ -L "$1" ] || return 0
  if [ "$UN_MODE" = show ]; then
    printf 'remove\t%s\t%s\t%s\n' "$(du -sk -- "$1" 2>/dev/null | cut -f1)" "$2" "$1"
  else
    rm -rf -- "$1" || die "could not remove $1"
    printf 'removed\t0\t%s\t%s\n' "$2" "$1"
  fi
}}
root_ours() {{  # may $ROOT go? Only a tree with our marker, never / or above the home (WHY)
  _real=$(readlink -f -- "$ROOT" 2>/dev/null || echo "$ROOT")
  _home=$(readlink -f -- "$SHOME" 2>/dev/null || echo "$SHOME")
  case "$_home/" in "${{_real%/}}/"*) WHY="it holds the home folder of $SU"; return 1 ;; esac
  [ -f "$ROOT/{MARKER}" ] || {{
    WHY="not installed by carla-launch (no {MARKER} in it)"; return 1; }}
  for _l in "$SHOME/{STATE_DIR}"/*/launch.sh; do  # another profile's server runs from it?
    [ -f "$_l" ] && ! own_dir "${{_l%/launch.sh}}" || continue
    [ "$(launch_root "$_l")" = "$_real" ] || continue
    _s=${{_l%/launch.sh}}; WHY="used by session ${{_s##*/}}"; SHARED=yes; return 1
  done
}}
own_dir() {{  # is folder $1 one of this profile's servers': $SDIR, or $SDIR-K (K: digits)?
  [ "$1" = "$SDIR" ] && return 0
  case ${{1#"$SDIR"-}} in "$1"|''|0*|*[!0-9]*) return 1 ;; esac
}}
launch_root() {{  # the install root a launch script runs from, as a real path
  _o=$(sed -n "s/^ROOT=//p" "$1" | head -n 1)
  case $_o in "'"*"'") _o=$(printf '%s\n' "$_o" | sed -e "s/^'//; s/'\$//" \
    -e "s/'\"'\"'/'/g") ;; esac  # undo shlex.quote (server/launch.py writes ROOT=...)
  readlink -f -- "$_o" 2>/dev/null || printf '%s\n' "$_o"
}}
cache_user() {{  # another install root of the server user installed from the cached $A (its
  # marker names the archive and its sha256): the archive stays in the download cache for it
  _cu_sum=$(head -n 1 "$DLDIR/$A.sha256" 2>/dev/null)
  for _l in "$SHOME/{STATE_DIR}"/*/launch.sh; do
    [ -f "$_l" ] && ! own_dir "${{_l%/launch.sh}}" || continue
    _o=$(launch_root "$_l")
    [ -f "$_o/{MARKER}" ] && grep -qxF "archive=$A" "$_o/{MARKER}" || continue
    [ -z "$_cu_sum" ] || grep -qxF "sha256=$_cu_sum" "$_o/{MARKER}" || continue
    printf '%s\n' "$_o"; return 0
  done
  return 1
}}
cache_busy() {{  # does a deploy fetch or unpack $A now? (deploy/boxlib.py: lock_archive; a
  # removal holds that lock till the end, so a deploy that starts meanwhile waits)
  [ -e "$1" ] && command -v flock > /dev/null 2>&1 || return 1
  exec 7>> "$1" || return 1
  ! flock -n 7
}}
lock_root() {{  # hold the deploy's lock of $ROOT (deploy/boxlib.py: lock_install) till the end
  command -v flock > /dev/null 2>&1 && [ -d "$SHOME/{STATE_DIR}" ] || return 0
  _lk={INSTALL_LOCK}
  [ -e "$_lk" ] || as_server touch "$_lk" 2>/dev/null || touch "$_lk" 2>/dev/null
  exec 9>> "$_lk" || return 0
  flock -n 9 || die "a deploy of $ROOT runs on this box (pid $(cat "$_lk" 2>/dev/null)): \
let it finish, then uninstall again"
}}
user_ours() {{  # may the server user go? Only one the deploy created, never root or us (WHY)
  [ "$USER_EXISTS" = yes ] || {{ WHY="no such user"; return 1; }}
  [ "$SU" != root ] && [ "$SU" != "$(id -un)" ] || {{ WHY="it is the login user"; return 1; }}
  [ -f "$SHOME/{STATE_DIR}/{USER_CREATED}" ] || {{
    WHY="not created by carla-launch"; return 1; }}
}}
remove_user() {{  # userdel -r, once the user's last processes (tmux, a log tail) are gone
  _i=0
  while [ -n "$(user_pids)" ] && [ $_i -lt 50 ]; do
    sleep 0.1; _i=$((_i + 1))
  done
  _left=$(user_pids); _left=${{_left% }}
  [ -z "$_left" ] || die "the user $SU still runs processes ($_left): stop them, or \
uninstall without --user"
  _uid=$(id -u "$SU")
  _err=$(userdel -r "$SU" 2>&1) || die "could not remove the user $SU: \
$(printf '%s\n' "$_err" | tail -n 1)"
  if [ -d "/tmp/tmux-$_uid" ] && [ "$(stat -c %u "/tmp/tmux-$_uid")" = "$_uid" ]; then
    rm -rf "/tmp/tmux-$_uid"
  fi
}}
"""

_MAIN = rf"""
SHARED=no
if [ "$UN_MODE" = remove ]; then
  lock_root
  if [ "$UN_COMPOSE" = yes ]; then
    if [ -f "$SDIR/compose.yaml" ]; then
      docker compose -p "$CL_PROJECT" -f "$SDIR/compose.yaml" down -t 10 >&2 ||
        die "docker compose down failed"
    fi
  else  # every server of the profile: $SDIR, and $SDIR-K of server K (server.gpus)
    for _d in "$SDIR" "$SDIR"-[1-9]*; do
      [ "$_d" = "$SDIR" ] || {{ [ -d "$_d" ] && own_dir "$_d"; }} || continue
      ( CL_SESSION=${{_d##*/}}; SDIR=$_d; stop_server ) || exit 1
    done
  fi
fi
if root_ours; then un_item "$ROOT" "the CARLA install"
elif [ -e "$ROOT" ]; then printf 'keep\t%s\t%s\n' "$WHY" "$ROOT"; fi
_lo=$(leftovers)
set -f; _ifs=$IFS; IFS='
'
for _d in $_lo; do un_item "$_d" "left by an interrupted deploy"; done
IFS=$_ifs; set +f
for _d in "$SDIR" "$SDIR"-[1-9]*; do  # also the folders of servers a deploy retired (logs)
  own_dir "$_d" && un_item "$_d" "the launch files and the server log"
done
if [ -n "$A" ]; then  # the download cache, which every install root of $SU shares
  _al={DOWNLOAD_LOCK}  # deploy/boxlib.py: lock_archive
  if _for=$(cache_user); then
    [ ! -f "$DLDIR/$A" ] ||
      printf 'keep\t%s\t%s\n' "for $_for, installed from the same archive" "$DLDIR/$A"
  elif cache_busy "$_al"; then
    [ ! -f "$DLDIR/$A" ] || printf 'keep\t%s\t%s\n' \
      "a deploy on this box uses it now (pid $(cat "$_al" 2>/dev/null))" "$DLDIR/$A"
  else
    for _f in "$DLDIR/$A" "$DLDIR/$A".*; do un_item "$_f" "the download cache"; done
    un_item "$_al" "the download cache's lock"
  fi
fi
# the deploy's lock of this install root (deploy/boxlib.py: lock_install); the other
# session's while it shares the root
[ "$SHARED" = yes ] || un_item {INSTALL_LOCK} "the deploy lock"
[ "$UN_MODE" = remove ] && rmdir "$DLDIR" "$SHOME/{STATE_DIR}" 2>/dev/null
if [ "$UN_USER" = yes ]; then
  if ! user_ours; then printf 'user\tkeep\t%s\t%s\n' "$SU" "$WHY"
  elif [ "$UN_MODE" = show ]; then printf 'user\tremove\t%s\t%s\n' "$SU" "$SHOME"
  else remove_user; printf 'user\tremoved\t%s\t%s\n' "$SU" "$SHOME"; fi
fi
:
"""


def script(archive: str | None, remove_user: bool, compose: bool, remove: bool) -> str:
    """The body after `prologue(user, session, root)`: lists (remove=False) or removes."""
    settings = (
        f"A={q(archive or '')}\n"
        f"UN_USER={'yes' if remove_user else 'no'}\n"
        f"UN_COMPOSE={'yes' if compose else 'no'}\n"
        f"UN_MODE={'remove' if remove else 'show'}\n"
    )
    return settings + PORT_FUNCTIONS + STOP_FUNCTION + LEFTOVERS_FUNCTION + _FUNCTIONS + _MAIN


@dataclass(frozen=True)
class Item:
    path: str
    what: str
    kib: int = 0


@dataclass
class Uninstall:
    """What a box said: items to remove (or removed), paths kept and why, the server user."""

    items: list[Item] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    user: tuple[str, str, str] | None = None  # (action: remove|removed|keep, name, home|why)


def parse(stdout: str) -> Uninstall:
    """The script's tab-separated lines -> Uninstall (paths come last: they may hold tabs)."""
    out = Uninstall()
    for line in stdout.splitlines():
        kind = line.split("\t", 1)[0]
        if kind in ("remove", "removed"):
            parts = line.split("\t", 3)
            if len(parts) == 4:
                kib = int(parts[1]) if parts[1].isdigit() else 0
                out.items.append(Item(parts[3], parts[2], kib))
        elif kind == "keep":
            parts = line.split("\t", 2)
            if len(parts) == 3:
                out.kept.append((parts[2], parts[1]))
        elif kind == "user":
            parts = line.split("\t", 3)
            if len(parts) == 4:
                out.user = (parts[1], parts[2], parts[3])
    return out


def _kib(kib: int) -> str:
    return size(kib * 1024)


def render(host: str, found: Uninstall, dry_run: bool) -> list[str]:
    """Lines for the user: what goes (with sizes when listing), what stays and why."""
    lines = []
    verb = "would remove" if dry_run else "removed"
    if found.items:
        if dry_run:
            total = _kib(sum(i.kib for i in found.items))
            lines.append(f"{host}: would remove {total}:")
            lines += [f"  {_kib(i.kib):>9}  {i.path} ({i.what})" for i in found.items]
        else:
            lines += [f"{host}: removed {i.path} ({i.what})" for i in found.items]
    for path, why in found.kept:
        lines.append(f"{host}: {'would keep' if dry_run else 'kept'} {path}: {why}")
    if found.user is not None:
        action, name, detail = found.user
        if action == "keep":
            lines.append(f"{host}: {'would keep' if dry_run else 'kept'} the user {name}: {detail}")
        else:
            lines.append(f"{host}: {verb} the user {name} and its home {detail}")
    if not found.items and (found.user is None or found.user[0] == "keep"):
        lines.append(f"{host}: nothing of this profile's server to remove")
    return lines


# -- over SSH ------------------------------------------------------------------------------------
def _run(profile: Profile, host: str, body: str, timeout: float) -> Uninstall:
    from carla_launcher.box.transport import check

    srv = profile.server
    head = prologue(srv.user, srv.tmux_session, srv.package.root)
    return parse(check(profile, host, head + body, profile.remote.connect_timeout + timeout))


def inspect(
    profile: Profile, host: str, archive: str | None, remove_user: bool = False
) -> Uninstall:
    """What `uninstall` would remove on `host` (sizes included); removes nothing."""
    compose = profile.server.mode == "compose"
    return _run(profile, host, script(archive, remove_user, compose, remove=False), 120)


def uninstall(
    profile: Profile, host: str, archive: str | None, remove_user: bool = False
) -> Uninstall:
    """Stop the server, then remove what `inspect` lists; what was removed."""
    compose = profile.server.mode == "compose"
    return _run(profile, host, script(archive, remove_user, compose, remove=True), 300)
