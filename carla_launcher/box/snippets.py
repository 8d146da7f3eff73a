"""The shell snippets of the box's facts (pure data): one per fact, by name.

Each runs as one section of `box/sections.py`'s script, after `box/shell.prologue` (so "who
runs the server" and "where is the package" mean what deploy means); `box/facts.py` picks the
ones a caller names and reads their sections. The shell functions here are shared with the
deploy (`deploy/boxlib.py`) and `server uninstall`, so that all three mean the same leftovers
and uploads.
"""

from __future__ import annotations

from carla_launcher.box.shell import MARKER, q
from carla_launcher.nvidia.smi import APP_FIELDS, GPU_FIELDS, MIG_FIELD

#: The Vulkan loader's ICD folders; NVIDIA's driver installs `nvidia_icd.json` into one of them.
VULKAN_ICD_DIRS = ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d")

#: What a login shell adds to PATH (~/.local/bin, ~/bin) and NVIDIA's /usr/local/nvidia/bin,
#: which non-interactive ssh commands miss; C locale for stable tool output.
ENV = (
    'PATH="$HOME/.local/bin:$HOME/bin:$PATH:/usr/local/nvidia/bin:/usr/sbin:/sbin"; export PATH\n'
    "LC_ALL=C; export LC_ALL\n"
)

#: `leftovers`: what an interrupted unpack or upgrade of $ROOT left beside it, one a line: the
#: unpack folder (`.carla-launch-unpack.BASENAME.XXXXXX`, or without BASENAME as older versions
#: named it) and an old tree moved aside (`$ROOT.old.PID`, ours when it holds our marker).
#: Deploy's unpack script makes these names; a deploy removes them (`deploy/boxlib.py`).
LEFTOVERS_FUNCTION = f"""
leftovers() {{  # no programs run: the facts script stays one quick round trip
  _lo_r=${{ROOT%/}}
  _lo_p=${{_lo_r%/*}} _lo_b=${{_lo_r##*/}}
  for _lo_d in "$_lo_p/.carla-launch-unpack.$_lo_b."?????? \\
      "$_lo_p/.carla-launch-unpack."?????? "$_lo_r".old.[0-9]*; do
    [ -d "$_lo_d" ] && [ ! -L "$_lo_d" ] || continue
    case $_lo_d in "$_lo_r".old.*) [ -f "$_lo_d/{MARKER}" ] || continue ;; esac
    printf '%s\\n' "$_lo_d"
  done
}}
"""

#: Who uploads: each deploy uploads a local archive to a name of its own,
#: `NAME.upload-OWNER.part` (`deploy/package.py`), OWNER being `PID.START` of the process that
#: lives as long as the deploy's connection to the box (`deploy_owner`: the first sshd or
#: dropbear above this shell, or the deploy itself, a python, with `connector: local`), or
#: `tTOKEN` (a token of the deploy) when there is none. `dead_uploads` prints the uploads whose
#: deploy is gone: its process ended (or its pid now names another), or, for a token, an hour
#: without a write. Reads /proc only: no programs run, except `find` for a token's age.
UPLOADS_FUNCTION = r"""
pid_born() {  # field 22 of /proc/$1/stat: when $1 started (clock ticks since boot)
  { read -r _pb_l < "/proc/$1/stat"; } 2>/dev/null || return 1
  set -- ${_pb_l##*) }
  [ $# -ge 20 ] && echo "${20}"
}
deploy_owner() {
  _do_p=$$ _do_n=0
  while [ "$_do_p" -gt 1 ] && [ $_do_n -lt 16 ]; do
    { read -r _do_l < "/proc/$_do_p/stat"; } 2>/dev/null || return 1
    _do_c=${_do_l#*\(}; _do_c=${_do_c%\)*}
    case $_do_c in sshd*|dropbear*|python*) echo "$_do_p.$(pid_born "$_do_p")"; return ;; esac
    set -- ${_do_l##*) }
    _do_p=$2 _do_n=$((_do_n + 1))
  done
  return 1
}
dead_uploads() {
  for _du_f in "$DLDIR"/*.upload-*.part; do
    [ -f "$_du_f" ] && [ ! -L "$_du_f" ] || continue
    _du_o=${_du_f##*.upload-}; _du_o=${_du_o%.part}
    case $_du_o in
      [0-9]*.[0-9]*) [ "$(pid_born "${_du_o%%.*}")" = "${_du_o#*.}" ] && continue ;;
      *) [ -n "$(find "$_du_f" -mmin +60 2>/dev/null)" ] || continue ;;
    esac
    printf '%s\n' "$_du_f"
  done
}
"""

#: Every server of the profile on the box (`server/slots.py`): its state folder $SDIR (server
#: 0) and $SDIR-K beside it, one `slot=NAME` line each, then what is there: the launch
#: script's sha256, the port, the status file's state, whether its tmux session runs.
SLOTS_SNIPPET = """for _sl_d in "$SDIR" "$SDIR"-[1-9]*; do
  [ -d "$_sl_d" ] || continue
  _sl_n=${_sl_d##*/}
  if [ "$_sl_n" != "$CL_SESSION" ]; then
    case ${_sl_n#"$CL_SESSION"-} in *[!0-9]*|0*) continue ;; esac
  fi
  echo "slot=$_sl_n"
  [ -f "$_sl_d/launch.sh" ] && echo "launch=$(sha256sum "$_sl_d/launch.sh" | cut -c1-64)"
  [ -f "$_sl_d/port" ] && echo "port=$(cat "$_sl_d/port")"
  [ -f "$_sl_d/status" ] && sed -n 's/^state=/state=/p' "$_sl_d/status" | head -n 1
  [ "$USER_EXISTS" = yes ] && as_server tmux has-session -t "=$_sl_n" && echo session=yes
done; :"""

#: Where Slurm's commands live when a non-interactive login's PATH lacks them: the loop of
#: `server.mode: slurm` (`server/slurm.py`) and the `slurm` fact look there both.
SLURM_PATH = 'PATH="$PATH:/usr/local/bin:/opt/slurm/bin:/usr/local/slurm/bin"'
#: What the loop runs (sbatch, squeue, scancel, scontrol), and sinfo, which lists the partitions.
SLURM_TOOLS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo")
#: sinfo's line per partition (and kind of node): name (`*`: the default), up/down/drain/inact,
#: time limit, nodes, gres (`gpu:a100:4(S:0-1)`).
SINFO_FORMAT = "%P|%a|%l|%D|%G"

#: `slurm`: in a subshell, so that its PATH stays its own; prints nothing where Slurm is absent.
#: sbatch --version reads slurm.conf (configless: asks the controller) and sinfo asks the
#: controller: 5 s and 8 s at most, well within the doctor's 20 s for the whole round trip.
SLURM_SNIPPET = f"""(
{SLURM_PATH}
for c in {" ".join(SLURM_TOOLS)}; do command -v "$c" >/dev/null 2>&1 && echo "found=$c"; done
v=$(timeout 5 sbatch --version 2>/dev/null) && printf 'version=%s\\n' "$v" | head -n 1
command -v sinfo >/dev/null 2>&1 || exit 0
out=$(timeout 8 sinfo -h -o {q(SINFO_FORMAT)} 2>&1); rc=$?
if [ $rc = 0 ]; then printf '%s\\n' "$out" | head -n 500 | sed 's/^/partition=/'
elif [ $rc = 124 ]; then echo 'sinfo_error=no answer within 8 s'
else e=$(printf '%s\\n' "$out" | grep . | tail -n 1); echo "sinfo_error=${{e:-exit $rc}}"; fi
)"""

_GQ = ",".join(GPU_FIELDS)
_ICD = " ".join(q(d) for d in VULKAN_ICD_DIRS)

#: name -> snippet. `{packages}` and `{archive}` are filled in by `facts.facts_script`.
SNIPPETS: dict[str, str] = {
    "id": "id -u; id -un",
    "user": 'printf "%s\\n%s\\n%s\\n" "$SU" "$SHOME" "$USER_EXISTS"',
    "paths": 'printf "%s\\n%s\\n" "$ROOT" "$SDIR"',
    "ssh": 'printf "%s\\n" "${SSH_CONNECTION:-}"',
    "ip": "ip -o addr show",
    "hostname": "hostname -I",
    "gpus": f"""if command -v nvidia-smi >/dev/null 2>&1; then
  f='{_GQ},{MIG_FIELD}'
  out=$(nvidia-smi --query-gpu=$f --format=csv,noheader,nounits 2>&1); rc=$?
  case $out in *'not a valid field'*)
    f='{_GQ}'
    out=$(nvidia-smi --query-gpu=$f --format=csv,noheader,nounits 2>&1); rc=$?;;
  esac
  echo "fields=$f"; printf '%s\\n' "$out"; (exit $rc)
else
  echo 'nvidia-smi: not found'; (exit 127)
fi""",
    "apps": f"""if command -v nvidia-smi >/dev/null 2>&1; then
  CL_APPS=$(nvidia-smi --query-compute-apps={",".join(APP_FIELDS)} \\
    --format=csv,noheader,nounits 2>&1); rc=$?
  printf '%s\\n' "$CL_APPS"; (exit $rc)
else CL_APPS=; (exit 127); fi""",
    "ps": """pids=$(printf '%s\\n' "${CL_APPS:-}" | awk -F', *' '$2 ~ /^[0-9]+$/ {print $2}')
for p in $pids; do
  c=0; grep -qE 'docker|containerd|libpod|kubepods|/lxc/' /proc/$p/cgroup 2>/dev/null && c=1
  ps -o pid=,user=,args= -p $p 2>/dev/null | awk -v c=$c '{ $1 = $1 " " c; print }'
done; :""",
    "vulkan": f"""for d in {_ICD}; do ls -1 "$d"/*.json 2>/dev/null; done
for f in $(printf %s "${{VK_ICD_FILENAMES:-}}:${{VK_DRIVER_FILES:-}}" | tr : " "); do
  [ -f "$f" ] && echo "$f"; done
if command -v vulkaninfo >/dev/null 2>&1; then
  echo vulkaninfo=yes
  timeout 8 vulkaninfo --summary 2>&1 | grep -E 'deviceName|driverName|ERROR' | head -n 8
else echo vulkaninfo=no; fi; :""",
    "disk": """d=$ROOT; while [ ! -e "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done
df -Pk "$d" 2>&1""",
    "ports": """if command -v ss >/dev/null 2>&1 && { ss -ltnpH 2>/dev/null || ss -ltnH; }; then :
else cat /proc/net/tcp /proc/net/tcp6; fi""",
    "privilege": 'if [ "$(id -u)" = 0 ]; then echo root; '
    "elif sudo -n true 2>/dev/null; then echo sudo; else echo none; fi",
    "packages": "{packages}",
    "root": '[ -e "$ROOT" ] && echo exists; [ -f "$ROOT/CarlaUE4.sh" ] && echo carla; :',
    "marker": f'head -c 2000 "$ROOT/{MARKER}"',
    "download": 'a={archive}; [ -n "$a" ] && cat "$DLDIR/$a.sha256"',
    "tmux": '[ "$USER_EXISTS" = yes ] && as_server tmux list-sessions -F "#{session_name}"',
    "leftovers": LEFTOVERS_FUNCTION + UPLOADS_FUNCTION + "leftovers; dead_uploads",
    "owner": UPLOADS_FUNCTION + "deploy_owner",
    "launch": 'sha256sum "$SDIR/launch.sh" | cut -c1-64',
    "slots": SLOTS_SNIPPET,
    "slurm": SLURM_SNIPPET,
    "status": 'cat "$SDIR/status"; echo; echo "deployed_port=$(cat "$SDIR/port")"',
    "compose": 'echo "compose_sha=$(cat "$SDIR/.compose.sha256")"; '
    'echo "compose_state=$(docker compose -p "$CL_PROJECT" '
    '-f "$SDIR/compose.yaml" ps --format "{{.State}}" | head -n 1)"',
}
#: Facts whose snippet reads $ROOT (the prologue then needs the install root).
NEED_ROOT = frozenset({"paths", "disk", "root", "marker", "leftovers"})
#: Facts another one reads a shell variable of (`ps` reads what `apps` printed).
NEEDS = {"ps": ("apps",)}
