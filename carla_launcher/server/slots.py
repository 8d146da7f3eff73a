"""Which servers a profile runs on one box: one per GPU of `server.gpus`. Pure.

Each server is a *slot*: its number K (the position in `server.gpus`, 0 for a profile with one
server), its GPU (`-graphicsadapter`), its tmux session and state folder on the box, and its
port window (N, N+1, N+2, from `server.port + 3K` upwards). Slot 0 keeps the session name of
a one-server profile, so switching a profile to `server.gpus` keeps its running server.

The box has a state folder per server ($SDIR-K beside server 0's $SDIR); `each_server` runs
one script in each, in one round trip, for `server status`, `server stop` and the rest.

Why a tmux session per server and not a window of one session: tmux's current window belongs
to the session, so two read-only clients of one session cannot show two servers side by side
(`attach` tiles them); separate sessions also keep stop, status and logs of one server apart.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from carla_launcher.box.facts import BoxFacts, SlotFacts
from carla_launcher.box.ports import STRIDE, choose_port, triple
from carla_launcher.box.shell import q
from carla_launcher.nvidia.smi import GpuReport

if TYPE_CHECKING:
    from carla_launcher.profile import Server


@dataclass(frozen=True)
class Slot:
    index: int  # K: `server stop P --only K`, the agent's compose project NAME-K
    gpu: int | None  # -graphicsadapter; None: the box's default GPU
    session: str  # the tmux session on the box, and its state folder ~/.carla-launch/SESSION


def session_name(base: str, index: int) -> str:
    """The box's tmux session of server K: the profile's `server.tmux_session` for K = 0.

    >>> session_name("carla", 0), session_name("carla", 2)
    ('carla', 'carla-2')
    """
    return base if index == 0 else f"{base}-{index}"


def slot_index(base: str, session: str) -> int | None:
    """K of a session name on the box (None: not one of this profile's servers).

    >>> slot_index("carla", "carla"), slot_index("carla", "carla-3"), slot_index("carla", "x")
    (0, 3, None)
    """
    if session == base:
        return 0
    rest = session.removeprefix(f"{base}-")
    return int(rest) if rest != session and rest.isdigit() and rest[0] != "0" else None


def count(server: Server) -> int | None:
    """How many servers the profile asks for on each box (None: `gpus: all`, the box's GPUs
    decide): one per GPU of `server.gpus`, one per job of `server.slurm.jobs`, else one."""
    if server.mode == "slurm":
        return server.slurm.jobs
    if isinstance(server.gpus, tuple):
        return len(server.gpus)
    return None if server.gpus == "all" else 1


def declared(server: Server, box_gpus: Sequence[int] | None = None) -> list[Slot]:
    """The servers the profile asks for on a box whose GPU indexes are `box_gpus` (None: not
    known). `gpus: all` on a box whose GPUs are not known is one server on the default GPU.
    In `server.mode: slurm` the box is the login node and Slurm picks each job's GPU."""
    base = server.tmux_session
    if server.mode == "slurm":
        return [Slot(k, None, session_name(base, k)) for k in range(server.slurm.jobs)]
    if server.gpus is None:
        return [Slot(0, server.gpu, base)]
    gpus = list(box_gpus or []) if isinstance(server.gpus, str) else list(server.gpus)
    if not gpus:
        return [Slot(0, None, base)]
    return [Slot(k, g, session_name(base, k)) for k, g in enumerate(gpus)]


def busy(report: GpuReport) -> dict[int, str]:
    """GPU index -> whose processes hold memory there, in words, for the GPUs where a process
    that is not ours runs (`nvidia/roles.py`: role None; ours are our CARLA servers).

    >>> from carla_launcher.nvidia.smi import Gpu, GpuProcess
    >>> gpu = Gpu(1, "T4", "G1", 15360, 13000, 2360, 90, "535")
    >>> theirs = GpuProcess(4242, "G1", "python3", 30000, user="alice")
    >>> busy(GpuReport("ok", (gpu,), (theirs,)))
    {1: 'alice (pid 4242, 30000 MiB)'}
    """
    out: dict[int, str] = {}
    for gpu in report.gpus:
        theirs = [
            p
            for p in report.processes_on(gpu)
            if p.role is None and (p.used_mib is None or p.used_mib > 0)
        ]
        if theirs:
            first = theirs[0]
            mib = f", {first.used_mib} MiB" if first.used_mib is not None else ""
            words = f"{first.user or 'another user'} (pid {first.pid}{mib})"
            more = len(theirs) - 1
            out[gpu.index] = words + (f" and {more} more process(es)" if more else "")
    return out


def usable(
    slots: Sequence[Slot],
    busy: Mapping[int, str],
    running: Collection[int] = (),
    box_gpus: Sequence[int] | None = None,
) -> tuple[list[Slot], list[str]]:
    """The slots that get a server on this box, and a line for each one left out: its GPU is
    in use by someone else (`busy`: GPU index -> whose process, in words), or the box has no
    such GPU (`box_gpus`; None: not known). A server of ours that runs (`running`: K) keeps
    its GPU even when someone else started using it too.

    >>> s = [Slot(0, 0, "c"), Slot(1, 1, "c-1"), Slot(2, 2, "c-2")]
    >>> kept, lines = usable(s, {1: "alice (pid 7)"}, box_gpus=[0, 1])
    >>> [k.index for k in kept]
    [0]
    >>> print("\\n".join(lines))
    GPU 1 is in use by alice (pid 7): no server 1 there
    the box has no GPU 2 (its GPUs: 0, 1): no server 2 there
    this box runs 1 of the 3 servers the profile asks for; deploy again when GPU 1 is free
    """
    known = set(box_gpus) if box_gpus else None
    kept: list[Slot] = []
    lines: list[str] = []
    waiting: list[str] = []  # GPUs someone else holds: free later, a deploy then uses them
    for s in slots:
        if s.gpu is None:
            kept.append(s)
        elif known is not None and s.gpu not in known:
            listed = ", ".join(str(g) for g in sorted(known))
            lines.append(
                f"the box has no GPU {s.gpu} (its GPUs: {listed}): no server {s.index} there"
            )
        elif s.gpu in busy and s.index not in running:
            lines.append(f"GPU {s.gpu} is in use by {busy[s.gpu]}: no server {s.index} there")
            waiting.append(str(s.gpu))
        else:
            if s.gpu in busy:
                shared = f"GPU {s.gpu} is also used by {busy[s.gpu]}"
                lines.append(f"{shared}: server {s.index} keeps running there")
            kept.append(s)
    if len(kept) < len(slots):
        gpus = " or ".join(waiting)
        later = f"; deploy again when GPU {gpus} is free" if waiting else ""
        lines.append(
            f"this box runs {len(kept)} of the {len(slots)} servers the profile asks for{later}"
        )
    return kept, lines


def described(slot: Slot) -> str:
    """ "server 1 (GPU 1)", "server 0" (no GPU chosen)."""
    return f"server {slot.index}" + (f" (GPU {slot.gpu})" if slot.gpu is not None else "")


def ports(
    base: int,
    slots: Sequence[Slot],
    listening: set[int],
    ours: Mapping[int, int] | None = None,
) -> dict[int, int]:
    """Each slot's world port: from `base + 3K` upwards, the first triple that is free and not
    given to another slot; a running server of ours keeps its port (`ours`: K -> port). Raises
    `box.ports.NoFreePort`.

    >>> ports(2000, [Slot(0, 0, "c"), Slot(1, 1, "c-1")], {2004})
    {0: 2000, 1: 2006}
    """
    ours = ours or {}
    taken: set[int] = set()
    chosen: dict[int, int] = {}
    for s in slots:
        # another slot's running server listens on its ports: busy for this one
        port = choose_port(base + STRIDE * s.index, listening | taken, ours.get(s.index))
        chosen[s.index] = port
        taken |= triple(port)
    return chosen


# -- the profile's servers on a box, in one round trip -----------------------------------------
SERVER_MARK = "##carla-launch-server## "  # before each server's answer: its session's name
SERVER_RC = "##carla-launch-server-rc## "  # after it: the exit code of its part

#: `cl_servers`: the profile's servers on the box, after server 0's prologue: the names of
#: $SDIR and of the $SDIR-K folders beside it that hold launch files (launch.sh, or
#: compose.yaml), K a number; $CL_SESSION alone when none does (nothing deployed). The names
#: are tokens (`server.tmux_session` allows [A-Za-z0-9_-]): a word list is safe.
SERVERS_FUNCTION = r"""
cl_servers() {
  _cs_all=
  for _cs_d in "$SDIR" "$SDIR"-[1-9]*; do
    _cs_n=${_cs_d##*/}
    if [ "$_cs_n" != "$CL_SESSION" ]; then
      case ${_cs_n#"$CL_SESSION"-} in *[!0-9]*|0*) continue ;; esac
    fi
    if [ -f "$_cs_d/launch.sh" ] || [ -f "$_cs_d/compose.yaml" ]; then
      _cs_all="$_cs_all $_cs_n"
    fi
  done
  echo "${_cs_all:-$CL_SESSION}"
}
"""


def each_server(body: str, only: str | None = None) -> str:
    """After server 0's prologue: `body` once per server of the profile on the box (or for
    session `only`), each in a subshell with that server's CL_SESSION and SDIR, all at the
    same time (a box's servers are independent: own session, folder and ports), so asking a
    box of N servers costs about what one costs. Each part's output goes to a file of its own;
    when all are done they are printed in the box's order, each after a `SERVER_MARK NAME`
    line and followed by its exit code (`parse_servers` reads them). Every server is named,
    also those not asked for, so that a caller can say which there are."""
    mark, rc = q(SERVER_MARK), q(SERVER_RC)
    return (
        SERVERS_FUNCTION
        + "CL_TOP=${SDIR%/*}; _cl_all=$(cl_servers)\n"
        + '_cl_tmp=$(mktemp -d) || die "cannot create a temporary folder on the box"\n'
        + "for _cl_n in $_cl_all; do\n"
        + (f'  [ "$_cl_n" = {q(only)} ] || continue\n' if only is not None else "")
        + '  ( (\nCL_SESSION=$_cl_n; SDIR="$CL_TOP/$_cl_n"\n'
        + body
        + '\n  ) > "$_cl_tmp/$_cl_n" 2>&1; echo "$?" > "$_cl_tmp/$_cl_n.rc" ) &\n'
        + "done\nwait\n"
        + "for _cl_n in $_cl_all; do\n"
        + f"  printf '\\n%s%s\\n' {mark} \"$_cl_n\"\n"
        + '  [ -f "$_cl_tmp/$_cl_n.rc" ] || continue\n'
        + f'  cat "$_cl_tmp/$_cl_n"; printf \'\\n%s%s\\n\' {rc} "$(cat "$_cl_tmp/$_cl_n.rc")"\n'
        + 'done\nrm -rf "$_cl_tmp"\nexit 0\n'
    )


def parse_servers(stdout: str) -> list[tuple[str, str, int | None]]:
    """`each_server`'s answer: (session, what its part printed, its exit code (None: not run
    or cut short)) per server, in the box's order.

    >>> parse_servers("banner\\n" + SERVER_MARK + "carla\\nok\\n" + SERVER_RC + "0\\n"
    ...               + SERVER_MARK + "carla-1\\n")
    [('carla', 'ok', 0), ('carla-1', '', None)]
    """
    out: list[tuple[str, str, int | None]] = []
    name: str | None = None
    buf: list[str] = []
    rc: int | None = None
    for line in stdout.splitlines():
        if line.startswith(SERVER_MARK):
            if name is not None:
                out.append((name, "\n".join(buf).strip("\n"), rc))
            name, buf, rc = line[len(SERVER_MARK) :].strip(), [], None
        elif line.startswith(SERVER_RC) and name is not None:
            code = line[len(SERVER_RC) :].strip()
            rc = int(code) if code.lstrip("-").isdigit() else None
        elif name is not None and rc is None:
            buf.append(line)
    if name is not None:
        out.append((name, "\n".join(buf).strip("\n"), rc))
    return out


# -- which servers a deploy leaves on one box ------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    """What `choose` decided for one box."""

    kept: list[Slot] = field(default_factory=list)  # get a server here, by slot
    on_box: dict[int, SlotFacts] = field(default_factory=dict)  # the box's folders, by slot
    stale: dict[int, str] = field(default_factory=dict)  # K -> why the box's server K stops
    lines: list[str] = field(default_factory=list)  # for the user: GPUs in use, servers left out
    error: str | None = None  # no server at all can run here

    @property
    def ours(self) -> dict[int, int]:
        """K -> the port of our server K that runs (it keeps its port)."""
        return {
            k: sf.port
            for k, sf in self.on_box.items()
            if sf.port is not None and (sf.running or sf.state in ("running", "restarting"))
        }


def choose(server: Server, facts: BoxFacts) -> Choice:
    """The servers a deploy leaves on a box: those the profile asks for (`declared`) whose GPU
    is the box's and free (`usable`); those the box has and no longer gets are `stale`.
    `gpus: all` needs the box's GPUs: when nvidia-smi does not answer, a box that has none of
    the other servers gets one on its default GPU; one that has them is an error, not a stop
    of its servers for a tool's hiccup."""
    on_box = boxed(server.tmux_session, facts)
    gpus = box_gpus(facts)
    lines: list[str] = []
    if server.gpus == "all" and gpus is None:
        why = facts.gpu.message or f"nvidia-smi: {facts.gpu.status}"
        if any(k and (sf.launch_sha or sf.running) for k, sf in on_box.items()):
            return Choice(
                on_box=on_box,
                error=f"server.gpus is all, but the box's GPUs could not be read ({why}); "
                "fix nvidia-smi on the box or list the GPUs in server.gpus",
            )
        lines.append(
            f"server.gpus is all, but the box's GPUs could not be read ({why}): one server, "
            "on the default GPU"
        )
    wanted = declared(server, gpus)
    running = {k for k, sf in on_box.items() if sf.running}
    kept, more = usable(wanted, busy(facts.gpu), running, gpus)
    lines += more
    if not kept:
        return Choice(on_box=on_box, lines=lines, error="no GPU for a server: " + more[0])
    asked = {s.index for s in wanted}
    stale = {
        k: "its GPU is not free" if k in asked else "the profile no longer asks for it"
        for k, sf in on_box.items()
        if k not in {s.index for s in kept} and (sf.launch_sha is not None or sf.running)
    }
    return Choice(kept, on_box, stale, lines)


def boxed(base: str, facts: BoxFacts) -> dict[int, SlotFacts]:
    """The profile's servers the box has a folder of, by slot. Server 0's from the facts of
    $SDIR itself (`launch`, `status`, `tmux`), the others' from `slots`."""
    found = {k: sf for sf in facts.slots if (k := slot_index(base, sf.session)) is not None}
    found[0] = SlotFacts(
        base, facts.launch_sha, facts.deployed_port, facts.status.get("state"), False
    )
    # `tmux` lists the server user's sessions: the same answer as `slots` gives per folder
    return {
        k: replace(sf, running=sf.running or sf.session in facts.tmux_sessions)
        for k, sf in sorted(found.items())
    }


def box_gpus(facts: BoxFacts) -> list[int] | None:
    """The box's GPU indexes; None when nvidia-smi did not say (no driver, no tool)."""
    return [g.index for g in facts.gpus] if facts.gpu.status == "ok" and facts.gpus else None
