"""CARLA servers as Slurm jobs (`server.mode: slurm`): the job, the loop that submits it, and
what the box says about it. Pure.

The "box" is the cluster's login node (`remote.host`). Each server K keeps what it has in
package mode there: a state folder and a tmux session that runs its launch script. That
script is a *job loop* rather than CARLA's loop: it submits the server as an sbatch job (the
job's script is inside the launch script, so the deploy's digest and the drift check cover
both), follows it with `squeue`, and learns where it runs: the job writes its node and the
port it chose (the first free triple from the server's port, on that node) into `job-target`
on the shared file system; the loop turns the node into the address Slurm itself reaches it at
(`scontrol show node`: NodeAddr) and writes `target` ("ADDRESS PORT"), which the agents' SSH
tunnels through the login node follow (`box/tunnel.py` follow_argv). When the job ends
(finished, failed, cancelled by hand, preempted, out of time), the loop submits it again as
`server.restart` says, with the package loop's backoff, and the tunnels follow the new job.

Why a loop on the login node and not here: it keeps resubmitting while this machine sleeps,
and stopping it (`server stop`: its tmux session goes) cancels its job. Slurm decides where and
when every job runs; nothing here picks a node.

Where the output goes: the job appends to the server's `server.log` (`--open-mode=append`), the
same file the loop notes its own lines in, so `server logs` and the server's pane read one log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from carla_launcher.box.shell import q
from carla_launcher.box.snippets import SLURM_PATH  # where Slurm's commands live
from carla_launcher.server.launch import (
    FIRST_DELAY,
    LOG_IN_PANE,
    MAX_DELAY,
    NOTE,
    STABLE_AFTER,
    START_OF,
    LaunchConfig,
    without_port,
)

if TYPE_CHECKING:
    from carla_launcher.profile.load import Slurm

JOB_PREFIX = "carla-launch-"  # + the server's session: how its jobs are named, found, cancelled
TARGET = "target"  # in the state folder: "ADDRESS PORT" of the running job (tunnels read it)
JOB_TARGET = "job-target"  # written by the job: "JOBID NODE PORT"
_EOF = "CARLA_LAUNCH_JOB_EOF"
#: What the login node needs of `server.os_packages`: it unpacks the package and runs the loop
#: in tmux; the compute nodes run CARLA with what the cluster gives them.
LOGIN_NODE_PACKAGES = ("tmux", "curl", "xz-utils", "unzip")
#: How often the loop asks squeue: every second while a job is new (`up` and the tunnels wait
#: for it to run), every POLL_SLOW_S once it runs or has queued a minute: a loop per server
#: must not flood a busy controller.
POLL_STARTING_S = 1
POLL_SLOW_S = 5
QUICK_FOR_S = 60
#: sbatch's words for a controller that did not answer in time: submitted again (at most
#: SUBMIT_TRIES times, with the backoff); any other refusal (a wrong partition, account or
#: option) fails the server at once, with sbatch's own line.
TRANSIENT = '*"imed out"*|*"nable to contact"*|*"ry again"*|*emporarily*|*ransient*'
SUBMIT_TRIES = 5
#: A job that ends this many times in a row within STABLE_AFTER s of running (a node without
#: CARLA's libraries, a crash at start) is not submitted again: the server fails, with why.
QUICK_ENDS = 5


def job_name(session: str) -> str:
    """The Slurm job name of the server whose tmux session is `session`.

    >>> job_name("carla-1")
    'carla-launch-carla-1'
    """
    return JOB_PREFIX + session


def sbatch_options(slurm: Slurm) -> list[str]:
    """The profile's options of each job, as `#SBATCH` lines take them (validated tokens,
    `profile/fields.py`; the extra ones are the user's own sbatch syntax, one per line).

    >>> from carla_launcher.profile.load import Slurm
    >>> sbatch_options(Slurm(1, "gpu", None, "1:00:00", "gpu:1", 600, ("--qos=high",)))
    ['--gres=gpu:1', '--ntasks=1', '--partition=gpu', '--time=1:00:00', '--qos=high']
    """
    out = [f"--gres={slurm.gres}", "--ntasks=1"]
    if slurm.partition:
        out.append(f"--partition={slurm.partition}")
    if slurm.account:
        out.append(f"--account={slurm.account}")
    if slurm.time:
        out.append(f"--time={slurm.time}")
    return out + [_directive(o) for o in slurm.sbatch]


def _directive(option: str) -> str:
    """An `--name=value` option as an #SBATCH line takes it: sbatch splits such lines at
    whitespace, so a value with a space is double-quoted (the profile refuses `"` in them).

    >>> _directive("--comment=carla eval run 7"), _directive("-p gpu")
    ('--comment="carla eval run 7"', '-p gpu')
    """
    name, sep, value = option.partition("=")
    if sep and any(c.isspace() for c in value):
        return f'{name}="{value}"'
    return option


def render_job_script(cfg: LaunchConfig, slurm: Slurm) -> str:
    """The job: pick the first free port triple from the server's port on the node Slurm
    chose, say where it runs (`job-target`), then become CARLA."""
    args = " ".join(q(a) for a in without_port(cfg.args))
    lines = "".join(f"#SBATCH {o}\n" for o in sbatch_options(slurm))
    return f"""#!/bin/sh
{lines}# carla-launch: one CARLA server, on the node and GPU Slurm chose.
set -u
DIR={q(cfg.session_dir)}
PORT={int(cfg.port)}
say() {{ echo "$(date '+%Y-%m-%d %H:%M:%S') carla-launch: $*"; }}
busy() {{  # a listener on $1..$1+2 on this node?
  awk -v a="$(printf '%04X' "$1")" -v b="$(printf '%04X' $(($1 + 1)))" \\
    -v c="$(printf '%04X' $(($1 + 2)))" 'FNR > 1 && $4 == "0A" {{
      n = split($2, x, ":"); if (x[n] == a || x[n] == b || x[n] == c) f = 1 }}
    END {{ exit !f }}' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}}
port=$PORT
n=0
while busy "$port" && [ $n -lt 100 ]; do port=$((port + 3)); n=$((n + 1)); done
node=${{SLURMD_NODENAME:-$(hostname)}}
echo "$SLURM_JOB_ID $node $port" > "$DIR/{JOB_TARGET}.$SLURM_JOB_ID" &&
  mv -f "$DIR/{JOB_TARGET}.$SLURM_JOB_ID" "$DIR/{JOB_TARGET}"
cd {q(cfg.root)} || {{ say "no such folder on $node: "{q(cfg.root)}; exit 1; }}
gpu=${{SLURM_JOB_GPUS:-${{CUDA_VISIBLE_DEVICES:-the node default}}}}
say "job $SLURM_JOB_ID on $node: starting CARLA on port $port (GPU $gpu)"
exec ./CarlaUE4.sh {args} "-carla-rpc-port=$port"
"""


def render_job_loop(cfg: LaunchConfig, slurm: Slurm, session: str) -> str:
    """The launch script of `server.mode: slurm`: submit, follow, learn where, submit again."""
    job = render_job_script(cfg, slurm)
    if _EOF in job:  # cannot happen: every value in it is a quoted word or a validated token
        raise ValueError("the job script holds its own end marker")
    origin = f"{cfg.origin.line()}\n" if cfg.origin is not None else ""
    return f"""#!/bin/sh
{origin}# carla-launch: submits the CARLA server as a Slurm job, and again when it ends (restart: {cfg.restart}).
# Generated by `carla-launch deploy`; edits are overwritten. Package: {cfg.package_id.replace(chr(10), " ")}
set -u
{SLURM_PATH}
DIR={q(cfg.session_dir)}
PORT={int(cfg.port)}
RESTART={q(cfg.restart)}
NAME={q(job_name(session))}
LOG="$DIR/server.log"
STATUS="$DIR/status"
ME=$(id -un)
restarts=0
quick=0
tries=0
delay={FIRST_DELAY}
last_exit=
last_crash=
started=
ran=
tailpid=
out=
job=
node=
addr=
jport=
jstate=

{START_OF}status() {{
  {{
    echo "state=$1"; echo "pid="; echo "pgid_start="; echo "started=$started"
    echo "restarts=$restarts"; echo "last_exit=$last_exit"; echo "last_crash=$last_crash"
    echo "port=$PORT"; echo "loop=$$"; echo "loop_start=$loop_start"
    echo "job=$job"; echo "node=$node"; echo "addr=$addr"; echo "job_port=$jport"
    echo "quick_ends=$quick"
  }} > "$STATUS.tmp" && mv -f "$STATUS.tmp" "$STATUS"
}}
{NOTE}nap() {{ sleep "$1" & wait $!; }}
poll() {{  # the pause before asking squeue again about a job submitted at $started
  if [ $(($(date +%s) - started)) -lt {QUICK_FOR_S} ]; then nap {POLL_STARTING_S}; else nap {POLL_SLOW_S}; fi
}}
job_of() {{  # the job id in what sbatch --parsable printed on stdout ("ID" or "ID;CLUSTER")
  printf '%s\\n' "$1" | sed -n 's/^\\([0-9][0-9]*\\)\\(;.*\\)\\{{0,1\\}}$/\\1/p' | tail -n 1
}}
finish() {{
  trap '' HUP INT TERM
  rm -f "$DIR/{TARGET}"
  # also a job sbatch accepted while the stop came (the trap runs once $(submit) returned)
  j=${{job:-$(job_of "$out")}}
  if [ -n "$j" ]; then scancel "$j" 2>/dev/null; note "cancelled job $j"; fi
  note "stopped"
  status stopped
  [ -n "$tailpid" ] && kill "$tailpid" 2>/dev/null
  exit 0
}}
trap finish HUP INT TERM
submit() {{  # stdout: sbatch's; its warnings and errors go to $DIR/sbatch.err
  sbatch --parsable --job-name="$NAME" --output="$LOG" --open-mode=append 2>"$DIR/sbatch.err" <<'{_EOF}'
{job}{_EOF}
}}
cancel_ours() {{  # every job of this server, and wait until Slurm has ended them
  scancel --name="$NAME" --user="$ME" 2>/dev/null
  i=0
  while [ -n "$(squeue -h -n "$NAME" -u "$ME" -o %i 2>/dev/null)" ] && [ $i -lt 60 ]; do
    nap 0.5; i=$((i + 1))
  done
}}

{LOG_IN_PANE}status starting
# a job an earlier loop left (it was killed outright) is cancelled: this loop owns the server
cancel_ours

while :; do
  rm -f "$DIR/{TARGET}" "$DIR/{JOB_TARGET}"
  job=; node=; addr=; jport=; jstate=; ran=; out=
  started=$(date +%s)
  out=$(submit)
  rc=$?
  said=$(tr '\\n' ' ' < "$DIR/sbatch.err" 2>/dev/null)
  id=$(job_of "$out")
  if [ $rc -ne 0 ] || [ -z "$id" ]; then
    tries=$((tries + 1))
    case $said in
      {TRANSIENT})
        if [ $tries -lt {SUBMIT_TRIES} ]; then
          note "sbatch: $said; submitting again in $delay s"; status restarting
          nap "$delay"; delay=$((delay * 2)); [ "$delay" -gt {MAX_DELAY} ] && delay={MAX_DELAY}
          cancel_ours  # a timed-out sbatch may have submitted it all the same
          continue
        fi ;;
    esac
    last_crash="sbatch refused the job: ${{said:-exit code $rc}}"
    note "$last_crash"; status failed; break
  fi
  [ -n "$said" ] && note "sbatch: $said"
  tries=0
  job=$id
  note "submitted job $job"
  status pending
  while :; do
    got=$(squeue -h -t all -j "$job" -o '%T|%N' 2>/dev/null)
    if [ $? -ne 0 ]; then  # purged (MinJobAge) or the controller did not answer
      if scontrol show job "$job" 2>&1 | grep -q 'nvalid job id'; then jstate=GONE; break; fi
      nap {POLL_SLOW_S}; continue  # ask again: never submit twice
    fi
    got=$(printf '%s\\n' "$got" | head -n 1 | tr -d ' ')
    jstate=${{got%%|*}}; jnode=${{got#*|}}
    case $jstate in
      RUNNING|COMPLETING|SIGNALING|RESIZING|STAGE_OUT)
        if [ -n "$addr" ] && [ "$jnode" != "$node" ] && [ "$jstate" = RUNNING ]; then
          rm -f "$DIR/{TARGET}"; addr=; note "job $job moved to $jnode"  # requeued meanwhile
        fi
        if [ "$jstate" = RUNNING ] && [ -z "$addr" ] && [ -s "$DIR/{JOB_TARGET}" ] &&
          read -r tj tn tp < "$DIR/{JOB_TARGET}" && [ "$tj" = "$job" ] && [ "$tn" = "$jnode" ]; then
          node=$tn; jport=$tp; ran=$(date +%s)
          addr=$(scontrol show node "$node" 2>/dev/null | sed -n 's/.*NodeAddr=\\([^ ]*\\).*/\\1/p' |
            head -n 1)
          addr=${{addr:-$node}}
          echo "$addr $jport" > "$DIR/{TARGET}.tmp" && mv -f "$DIR/{TARGET}.tmp" "$DIR/{TARGET}"
          note "job $job runs on $node ($addr), CARLA on port $jport"
          status running
        fi
        if [ -n "$addr" ]; then nap {POLL_SLOW_S}; else poll; fi ;;
      PENDING|CONFIGURING|REQUEUED|REQUEUE_HOLD|REQUEUE_FED|SUSPENDED|STOPPED|RESV_DEL_HOLD|SPECIAL_EXIT)
        if [ -n "$addr" ] || [ -s "$DIR/{JOB_TARGET}" ]; then  # requeued: not where it was
          rm -f "$DIR/{TARGET}" "$DIR/{JOB_TARGET}"; addr=; node=; jport=
          note "job $job is $jstate again"
        fi
        status pending; poll ;;
      *) break ;;
    esac
  done
  rm -f "$DIR/{TARGET}"
  info=$(scontrol show job -o "$job" 2>/dev/null)
  final=$(printf '%s' "$info" | sed -n 's/.*JobState=\\([^ ]*\\).*/\\1/p')
  final=${{final:-$jstate}}
  code=$(printf '%s' "$info" | sed -n 's/.* ExitCode=\\([0-9]*\\):.*/\\1/p')
  why=$(printf '%s' "$info" | sed -n 's/.* Reason=\\([^ ]*\\).*/\\1/p')
  last_exit=$code
  last_crash="job $job ended: $final${{code:+ (exit code $code)}}"
  case $why in ''|None) ;; *) last_crash="$last_crash, $why" ;; esac
  note "$last_crash"
  case $RESTART in
    no) status exited; break ;;
    on-failure) if [ "$final" = COMPLETED ] && [ "${{code:-1}}" = 0 ]; then status exited; break; fi ;;
  esac
  # the backoff counts from when CARLA ran, not from the submission (a queue wait is no run)
  if [ -n "$ran" ] && [ $(($(date +%s) - ran)) -ge {STABLE_AFTER} ]; then
    delay={FIRST_DELAY}; quick=0
  else
    quick=$((quick + 1))
  fi
  if [ $quick -ge {QUICK_ENDS} ]; then
    last_crash="$last_crash; it ended {QUICK_ENDS} times in a row within {STABLE_AFTER} s of running: not submitted again"
    note "$last_crash"; status failed; break
  fi
  restarts=$((restarts + 1))
  job=; node=; addr=; jport=
  status restarting
  note "submitting again in $delay s"
  nap "$delay"
  delay=$((delay * 2)); [ "$delay" -gt {MAX_DELAY} ] && delay={MAX_DELAY}
done
[ -n "$tailpid" ] && kill "$tailpid" 2>/dev/null
exit 0
"""  # noqa: E501  launch.sh is hashed: changing its text restarts deployed servers


# -- what the box says ----------------------------------------------------------------------------
#: The status script's sections of `server.mode: slurm` (after `status_script`'s own): the job
#: as squeue sees it, and its place among the partition's pending jobs.
_SQUEUE = "%i|%T|%r|%N|%L|%P"


def status_items() -> list[tuple[str, str]]:
    """`(name, snippet)` sections for `box/sections.script`, after PORT_FUNCTIONS. A section is
    a brace group of the whole script (no `exit` in it); each squeue gets at most 5 s, and the
    partition's queue is listed only for a job that waits."""
    job = f"{SLURM_PATH}; j=$(status_value job); "
    squeue = "timeout 5 squeue -h"
    return [
        ("job", job + f'if [ -n "$j" ]; then {squeue} -t all -j "$j" -o {q(_SQUEUE)}; fi'),
        (
            "queue",
            job + f'p=; [ -n "$j" ] && p=$({squeue} -t PENDING -j "$j" -o %P); '
            f'if [ -n "$p" ]; then {squeue} -r -t PENDING -p "$p" --sort=-p,i -o %i; fi',
        ),
        ("target", f'cat "$SDIR/{TARGET}"'),
    ]


def parse_job(
    kv: Mapping[str, str], sections: Mapping[str, Sequence[str]]
) -> dict[str, Any] | None:
    """The job of a server's status, as `status` shows it: {id, state, reason, node, address,
    port, time_left, partition, position (1: next in line), pending (in its partition)};
    None when no job was submitted. `kv` is the status file's, `sections` the answer's lines.

    >>> parse_job({"job": "7", "node": "n1", "addr": "10.0.0.5", "job_port": "2003"},
    ...           {"job": ["7|RUNNING|None|n1|3:58:02|gpu"], "queue": []})["time_left"]
    '3:58:02'
    >>> parse_job({"job": "8"}, {"job": ["8|PENDING|Resources||4:00:00|gpu"],
    ...                           "queue": ["5", "8", "9"]})["position"]
    2
    """
    jid = (kv.get("job") or "").strip()
    if not jid.isdigit():
        return None
    fields = next(
        (ln.split("|") for ln in sections.get("job", []) if ln.split("|", 1)[0].strip() == jid),
        None,
    )
    state = reason = node = left = part = None
    if fields is not None and len(fields) >= 6:
        state, reason, node, left, part = (f.strip() or None for f in fields[1:6])
    queue = [ln.strip() for ln in sections.get("queue", []) if ln.strip()]
    port = kv.get("job_port") or ""
    return {
        "id": int(jid),
        "state": state or "ENDED",  # squeue forgot it: it ended a while ago
        "reason": None if reason in (None, "None") else reason,
        "node": node or kv.get("node") or None,
        "address": kv.get("addr") or None,
        "port": int(port) if port.isdigit() else None,
        "time_left": None if left in (None, "INVALID", "NOT_SET") else left,
        "partition": part,
        "position": queue.index(jid) + 1 if jid in queue else None,
        "pending": len(queue) if state == "PENDING" else None,
    }


def job_words(job: Mapping[str, Any]) -> str:
    """A job in words, for `status` and `up`'s progress line.

    >>> job_words({"id": 8, "state": "PENDING", "reason": "Resources", "position": 2,
    ...            "pending": 3, "partition": "gpu", "node": None})
    'job 8 pending (Resources), 2nd of 3 in partition gpu'
    >>> job_words({"id": 7, "state": "RUNNING", "node": "n1", "time_left": "3:58:02"})
    'job 7 running on n1, 3:58:02 left'
    """
    state = str(job.get("state") or "").lower().replace("_", " ")
    out = f"job {job.get('id')} {state}"
    if job.get("reason"):
        out += f" ({job['reason']})"
    if job.get("position"):
        out += f", {_nth(int(job['position']))} of {job.get('pending')}"
        out += f" in partition {job['partition']}" if job.get("partition") else ""
    if job.get("node") and job.get("state") == "RUNNING":
        out += f" on {job['node']}"
    if job.get("time_left") and job.get("state") == "RUNNING":
        left = str(job["time_left"])
        out += ", no time limit" if left in ("UNLIMITED", "INFINITE") else f", {left} left"
    return out


def _nth(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# -- stop, and the tunnels' questions -------------------------------------------------------------
def cancel_script() -> str:
    """After `stop_server` (its loop cancels its job as it ends, waited for up to 10 s): every
    job of the server cancelled, also one a loop killed outright left, and waited for (at
    most 30 s). Needs PORT_FUNCTIONS (`loop_ours`)."""
    return (
        f"{SLURM_PATH}\n"
        f'_cl_job={q(JOB_PREFIX)}"$CL_SESSION"\n'
        "_i=0\n"  # its loop cancels its own job as it ends (also one sbatch just accepted)
        "while loop_ours && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i + 1)); done\n"
        'scancel --name="$_cl_job" --user="$SU" 2>/dev/null\n'
        "_i=0\n"
        'while [ -n "$(squeue -h -n "$_cl_job" -u "$SU" -o %i 2>/dev/null)" ] &&\n'
        "  [ $_i -lt 300 ]; do\n"
        "  sleep 0.1; _i=$((_i + 1))\n"
        "done\n"
        f'rm -f "$SDIR/{TARGET}"\n'
    )


#: Before the target in `target_script`'s answer: a login shell's own output is not a target.
TARGET_MARK = "carla-launch-target"


def target_script() -> str:
    """Prints `TARGET_MARK ADDRESS PORT` of the server's running job, waiting on the login
    node (up to 5 min: one connection, not one a second) until one runs."""
    return (
        f'_i=0; while [ ! -s "$SDIR/{TARGET}" ] && [ $_i -lt 300 ]; do\n'
        "  sleep 1; _i=$((_i + 1))\ndone\n"
        f'printf \'{TARGET_MARK} %s\\n\' "$(cat "$SDIR/{TARGET}" 2>/dev/null)"\n'
    )


def watch_script() -> str:
    """Returns when the target differs from "$1 $2" (the job the tunnel goes to ended or moved):
    the tunnel's ssh then ends, and its loop asks where to go next."""
    return f'while [ "$(cat "$SDIR/{TARGET}" 2>/dev/null)" = "$1 $2" ]; do sleep 1; done\n'
