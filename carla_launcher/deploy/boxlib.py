"""Shell functions the deploy's box scripts share (apt, download, upload, unpack). Pure text.

They run after the prologue (`box/shell.prologue`: SU, SHOME, DLDIR, ROOT, as_server, die).
Two locks (flock): one per install root (`lock_install`, fd 9) and one per archive of the
server user's download cache (`lock_archive`, fd 7), which every install root of the box shares.
Long work prints `carla-launch-progress PHASE DONE TOTAL` lines (`box/progress.py`) every
couple of seconds from a background loop (`every`), which this machine renders; the human
lines are one at the start and one at the end of each phase. Reads of /proc keep quiet when
a process vanishes between two looks: a box script prints our lines, never a shell's noise.
"""

from __future__ import annotations

from carla_launcher.box.progress import PROGRESS_FUNCTION
from carla_launcher.box.shell import DOWNLOAD_LOCK, MARKER
from carla_launcher.box.snippets import LEFTOVERS_FUNCTION, UPLOADS_FUNCTION

EVERY = 2  # seconds between two progress lines of one phase
UNPACK_FACTOR = 3  # room for the unpacked tree, as a multiple of the archive (xz packs ~2-3x)

_FUNCTIONS = r"""
case ${ROOT:-} in ?*/) ROOT=${ROOT%/} ;; esac  # "~/CARLA/": the same root, lock and names
human() { awk -v b="${1:-0}" 'BEGIN { split("B KB MB GB TB", u); i = 1;
  while (b >= 1024 && i < 5) { b /= 1024; i++ } printf "%.1f %s", b, u[i] }'; }
size_of() { stat -c %s "$1" 2>/dev/null || echo 0; }
since() { echo $(( $(date +%s) - $1 )); }
every() {  # every SECONDS PHASE TOTAL CMD...: `progress PHASE $(CMD...) TOTAL` until killed
  _ev_s=$1 _ev_ph=$2 _ev_tot=$3; shift 3
  while :; do
    progress "$_ev_ph" "$("$@" 2>/dev/null)" "$_ev_tot"
    # sleep outlives a killed loop: it must not hold our stdout or a lock (fds 9 and 7)
    sleep "$_ev_s" > /dev/null 2>&1 9>&- 7>&- || return 0
  done
}
stop_every() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; return 0; }
read_pos() {  # read_pos FILE PID: how far PID (or a process below it) has read FILE, from the
  # "pos:" of the open file in /proc/N/fdinfo; FILE as `readlink -f` prints it
  _rp_todo=$2 _rp_depth=0
  while [ -n "$_rp_todo" ] && [ $_rp_depth -lt 4 ]; do
    _rp_next=
    for _rp_p in $_rp_todo; do
      for _rp_fd in "/proc/$_rp_p/fd/"*; do
        if [ "$(readlink "$_rp_fd" 2>/dev/null)" = "$1" ]; then
          sed -n 's/^pos:[[:space:]]*//p' "/proc/$_rp_p/fdinfo/${_rp_fd##*/}" 2>/dev/null
          return 0
        fi
      done
      _rp_next="$_rp_next $(cat "/proc/$_rp_p/task/"*/children 2>/dev/null)"
    done
    _rp_todo=$_rp_next _rp_depth=$((_rp_depth + 1))
  done
  echo 0
}
free_kb() { d=$1; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
  df -Pk "$d" | awk 'NR == 2 { print $4 }'; }
same_fs() { a=$1; while [ ! -d "$a" ]; do a=$(dirname "$a"); done
  b=$2; while [ ! -d "$b" ]; do b=$(dirname "$b"); done
  [ "$(stat -c %d "$a")" = "$(stat -c %d "$b")" ]; }
check_disk() {  # $1 bytes still to download (0: the archive is in the cache), $2 its size
  _dl_kb=$(( ${1:-0} / 1024 + 1 )); _un_kb=$(( ${2:-0} / 1024 * UNPACK_FACTOR + 1 ))
  _parent=$(dirname "$ROOT")
  if same_fs "$DLDIR" "$_parent"; then
    _need=$((_dl_kb + _un_kb)); _free=$(free_kb "$DLDIR")
    [ "$_free" -ge "$_need" ] || die "not enough disk space for the CARLA package at $_parent: \
need $(human $((_need * 1024))), have $(human $((_free * 1024)))$(cache_spare)"
  else
    _free=$(free_kb "$DLDIR")
    [ "$_free" -ge "$_dl_kb" ] || die "not enough disk space for the download at $DLDIR: \
need $(human $((_dl_kb * 1024))), have $(human $((_free * 1024)))$(cache_spare)"
    _free=$(free_kb "$_parent")
    [ "$_free" -ge "$_un_kb" ] || die "not enough disk space to unpack at $_parent: \
need $(human $((_un_kb * 1024))), have $(human $((_free * 1024)))"
  fi
}
lock_install() {  # one deploy of $ROOT at a time on this box: the next one waits, and says so
  command -v flock > /dev/null 2>&1 || return 0
  _lk="$SHOME/.carla-launch/install-$(printf %s "$ROOT" | cksum | cut -d' ' -f1).lock"
  as_server mkdir -p "$SHOME/.carla-launch" 2>/dev/null
  [ -e "$_lk" ] || as_server touch "$_lk" 2>/dev/null || touch "$_lk" 2>/dev/null
  [ -w "$_lk" ] || return 0
  exec 9>> "$_lk"
  if ! flock -n 9; then
    echo "waiting for another deploy of $ROOT on this box (pid $(cat "$_lk" 2>/dev/null))"
    flock 9 || die "could not lock $_lk"
  fi
  echo $$ > "$_lk"
}
cache_spare() {  # the other archives in the download cache that no deploy uses now, with their
  # sizes: the room a user may free ("; the download cache ... holds ...", or nothing)
  _cs=
  for _cs_r in "$DLDIR"/*.sha256; do
    _cs_f=${_cs_r%.sha256}
    [ -f "$_cs_f" ] && [ "${_cs_f##*/}" != "${A:-}" ] || continue
    _cs_l=$(A=${_cs_f##*/}; echo DOWNLOAD_LOCK)
    [ ! -e "$_cs_l" ] || ! command -v flock > /dev/null 2>&1 ||
      flock -n "$_cs_l" true 2> /dev/null || continue
    _cs="$_cs${_cs:+, }${_cs_f##*/} ($(human "$(size_of "$_cs_f")"))"
  done
  [ -z "$_cs" ] || printf '; the download cache %s holds other archives: %s (%s)' "$DLDIR" "$_cs" \
    "remove them with carla-launch server uninstall of the profiles that installed them, or rm"
}
lock_archive() {  # lock_archive -s|-x: the lock of $A in the box's download cache, which every
  # install root of the server user shares: shared to unpack it, exclusive to fetch or replace
  # it; a deploy that must wait says so
  command -v flock > /dev/null 2>&1 || return 0
  _al=DOWNLOAD_LOCK
  while :; do
    [ -e "$_al" ] || as_server touch "$_al" 2>/dev/null || touch "$_al" 2>/dev/null
    [ -w "$_al" ] || return 0
    exec 7>> "$_al"
    if ! flock -n "$1" 7; then
      echo "waiting for another deploy of $A on this box (pid $(cat "$_al" 2>/dev/null))"
      flock "$1" 7 || die "could not lock $_al"
    fi
    # `server uninstall` removes the lock with the archive, and a lock on a removed file locks
    # nothing: then take the file that is there now
    _al_fd=$(stat -L -c %i "/proc/$$/fd/7" 2>/dev/null) || break
    [ "$_al_fd" = "$(stat -c %i "$_al" 2>/dev/null)" ] && break
  done
  echo $$ > "$_al"
}
take_archive() {  # true when $A is in the download cache for us already (a deploy we waited for
  # put it there); else holds the archive's lock, exclusive, to fetch or replace it
  lock_archive -s
  verified_here && return 0
  lock_archive -x
  verified_here
}
private_downloads() {  # the download folder: the server user's, closed to everyone else
  as_server mkdir -p "$DLDIR" || die "cannot create $DLDIR"
  chmod 700 "$DLDIR" 2>/dev/null
  umask 077
}
installed_here() {  # does the marker at $ROOT say this very package ($SHA, else $URL) is there?
  [ -f "$ROOT/CarlaUE4.sh" ] && [ -f "$ROOT/MARKER" ] || return 1
  if [ -n "$SHA" ]; then grep -qx "sha256=$SHA" "$ROOT/MARKER"
  else grep -qxF "url=$URL" "$ROOT/MARKER"; fi
}
verified_here() {  # is $A in the download cache, checked, and ours: the same sha256 ($SHA),
  # or without one from the same place ($ORIGIN; a record older than `from=` is trusted)
  [ -f "$DLDIR/$A" ] && [ -f "$DLDIR/$A.sha256" ] || return 1
  if [ -n "$SHA" ]; then [ "$(head -n 1 "$DLDIR/$A.sha256")" = "$SHA" ]; return; fi
  _vh_from=$(sed -n 's/^from=//p' "$DLDIR/$A.sha256")
  [ -z "$_vh_from" ] || [ "$_vh_from" = "${ORIGIN:-}" ]
}
verify_archive() {  # the sha256 of $1 (default $DLDIR/$A.part, with progress); then it
  # becomes $DLDIR/$A, recorded in $DLDIR/$A.sha256: the sum, then `from=` where it came from
  _va_f=${1:-$DLDIR/$A.part}
  _va_size=$(size_of "$_va_f")
  echo "checking the sha256 of $A ($(human "$_va_size"))"
  rm -f "$DLDIR/.sha256.$A".*  # a killed check's (we hold the archive's lock)
  _va_out="$DLDIR/.sha256.$A.$$"
  sha256sum < "$_va_f" > "$_va_out" 2>/dev/null &
  _va_w=$!
  every EVERY checksum "$_va_size" read_pos "$(readlink -f "$_va_f")" "$_va_w" &
  _va_m=$!
  wait "$_va_w"; _va_rc=$?
  stop_every "$_va_m"
  sum=$(cut -c1-64 "$_va_out" 2>/dev/null); rm -f "$_va_out"
  [ "$_va_rc" = 0 ] && [ -n "$sum" ] || die "could not read $_va_f to check its sha256"
  progress checksum "$_va_size" "$_va_size"
  if [ -n "$SHA" ] && [ "$sum" != "$SHA" ]; then
    rm -f "$_va_f"
    die "checksum mismatch for $A: expected $SHA, got $sum; nothing was unpacked and the \
download was deleted (check server.package.sha256 and the URL)"
  fi
  [ -n "$SHA" ] || echo "warning: no server.package.sha256 in the profile; this archive has sha256 $sum"
  rm -f "$DLDIR/$A.sha256"  # the record of an archive this one replaces
  as_server mv -f "$_va_f" "$DLDIR/$A" || mv -f "$_va_f" "$DLDIR/$A"
  printf '%s\nfrom=%s\n' "$sum" "${ORIGIN:-}" | as_server sh -c 'cat > "$1"' sh "$DLDIR/$A.sha256"
  echo "checked the sha256 of $A"
}
clean_uploads() {  # uploads of deploys that are gone (killed, or their connection lost)
  dead_uploads | while IFS= read -r _cu_f; do
    echo "removing $_cu_f (left by an interrupted upload)"
    rm -f "$_cu_f" 2>/dev/null || as_server rm -f "$_cu_f" 2>/dev/null
  done
  return 0
}
clean_leftovers() {  # what an interrupted unpack or upgrade of $ROOT left beside it
  leftovers | while IFS= read -r _cl_d; do
    echo "removing $_cl_d (left by an interrupted deploy)"
    rm -rf "$_cl_d" 2>/dev/null || as_server rm -rf "$_cl_d" 2>/dev/null
  done
  return 0
}
"""  # noqa: E501  shell text run on the box: one message per line

FUNCTIONS = (
    PROGRESS_FUNCTION
    + LEFTOVERS_FUNCTION
    + UPLOADS_FUNCTION
    + _FUNCTIONS.replace("UNPACK_FACTOR", str(UNPACK_FACTOR))
    .replace("EVERY", str(EVERY))
    .replace("MARKER", MARKER)
    .replace("DOWNLOAD_LOCK", DOWNLOAD_LOCK)
)
