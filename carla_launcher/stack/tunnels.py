"""The SSH tunnels of a profile's servers (`remote.tunnel`): whose agent goes through one, the
local ports each listens on (chosen once, recorded with the pair), its pane in the pair's
window, and that none is left listening after `down`.

The decisions and command lines are `box/tunnel.py` (pure: `route`, `why_tunnel`,
`reuse_port`), this machine's side `box/tunnel_local.py` (the docker bridge, free ports, a TCP
check). This module is the shell that strings them together for `up` (`decide`, `forwards`,
`open_panes`, `wait_listening`), `attach` (`forward_for_attach`), `status` (`facts`) and
`down` (`close_leftovers`). A tunnel lives in a pane beside its server and agent, so the
session owns it: closing the session (or the pane) sends its loop HUP, which ends its ssh.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from carla_launcher import session as sess
from carla_launcher.box.ports import STRIDE, triple
from carla_launcher.box.tunnel import Forward, Reach, reuse_port, route, why_tunnel
from carla_launcher.errors import LauncherError
from carla_launcher.profile import Profile
from carla_launcher.records import AgentRecord, TunnelRecord
from carla_launcher.stack.pairs import several, window_name
from carla_launcher.stack.panes import forward_of, session_panes

Key = tuple[str, int]  # (host, slot K): one server
Progress = Callable[[float, str], None] | None

#: How long `auto` waits before asking again when the address refuses the port and the box
#: says the server does not listen yet (it is starting: the refusal says nothing yet).
AUTO_PAUSE_S = 1.0
#: How often `wait_listening` and `close_leftovers` look at this machine's listening ports.
POLL_S = 0.1
#: Why a Slurm server's agent goes through a tunnel, in `up`'s words.
SLURM_WHY = "server.mode: slurm: compute nodes are reached through the login node"
#: How long `down` waits for the tunnels' ports to close after their panes went.
CLOSE_WAIT_S = 5.0


@dataclass(frozen=True)
class Routed:
    """How a server's agent reaches it: through a tunnel (`why`, in `up`'s words) or not."""

    tunnel: bool = False
    why: str = ""


def world_port(profile: Profile, st: Mapping[str, Any]) -> int:
    """A server's world port on its box: the one its status says, else the one asked for."""
    return int(st.get("port") or profile.server.port + STRIDE * int(st.get("slot") or 0))


def _listens(st: Mapping[str, Any], port: int) -> bool:
    busy = st.get("ports_busy")
    return isinstance(busy, list) and port in busy


def decide(
    profile: Profile,
    host: str,
    st: Mapping[str, Any],
    address: str | None,
    recorded: TunnelRecord | None,
    progress: Progress = None,
    reach: Callable[[str, int], Reach] | None = None,
) -> Routed | str:
    """How the agent of running server `st` reaches it (a line instead when that cannot be
    told: the server stopped meanwhile). A tunnel an earlier `up` opened for this server is
    kept (a second `up` changes nothing; `down` then `up` decides again). With `auto`, a TCP
    connect to the address's world port from here decides (`box/tunnel.py` route); a refusal
    before the box says the server listens is tried again a moment later."""
    from carla_launcher.server import control

    setting = profile.remote.tunnel
    port = world_port(profile, st)
    if route(setting, local=profile.remote.connector == "local") == "direct":
        return Routed()
    if profile.server.mode == "slurm":
        return Routed(True, SLURM_WHY)
    if recorded is not None and recorded.remote_port == port:
        return Routed(True, recorded.why or why_tunnel(setting))
    if setting is True or address is None:
        return Routed(True, why_tunnel(setting, address=address is not None))
    from carla_launcher.box import tunnel_local

    probe = reach or tunnel_local.reach
    slot = int(st.get("slot") or 0)
    listening = _listens(st, port)
    start = time.monotonic()
    while True:
        got = probe(address, port)
        chosen = route(setting, reach=got, box_listening=listening)
        if chosen == "direct":
            return Routed()
        if chosen == "tunnel":
            return Routed(True, why_tunnel(setting, reach=got))
        waited = time.monotonic() - start
        if waited > profile.server.ready_timeout:
            return (
                f"{host} server {slot}: {address}:{port} refuses, and the server did not "
                f"listen within server.ready_timeout ({profile.server.ready_timeout} s)"
            )
        if progress is not None:
            progress(waited, f"{address}:{port} refuses until the server listens")
        time.sleep(AUTO_PAUSE_S)
        try:
            fresh = control.server_status(profile, host, slot)
        except LauncherError as e:
            return f"{host} server {slot}: {str(e).removeprefix(f'{host}: ')}"
        if not fresh.get("running") and fresh.get("state") != "restarting":
            return f"{host} server {slot}: not running ({fresh.get('state')})"
        listening = _listens(fresh, port)


def early_targets(profile: Profile, known: Mapping[str, str | None]) -> list[tuple[str, int]]:
    """The (address, world port) pairs `auto` will ask about, as far as they are known before
    the boxes are asked: each host's known address, on the port recorded for each server it
    declares (else the one asked for). Pure but for reading the records."""
    from carla_launcher import records

    if profile.remote.tunnel != "auto" or profile.remote.connector == "local":
        return []
    from carla_launcher.server.slots import count

    out = []
    many = count(profile.server) or 1
    for host, address in known.items():
        if not address:
            continue
        for slot in range(many):
            port = records.server(profile, host, slot).port
            out.append((address, port or profile.server.port + STRIDE * slot))
    return out


class EarlyReach:
    """`auto`'s TCP checks, started when `up` begins: a silent address costs the check's whole
    time-out, which then overlaps the work on the boxes (status, deploy, start). Only a
    definite answer is taken from it (open, silent); a refusal is asked again when the
    decision is made (the server may not have been listening yet)."""

    def __init__(self, targets: Iterable[tuple[str, int]]) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        from carla_launcher.box import tunnel_local

        self._check = tunnel_local.reach
        todo = sorted(set(targets))
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(16, len(todo))))
        self._found: dict[tuple[str, int], Future[Reach]] = {
            t: self._pool.submit(self._check, *t) for t in todo
        }

    def reach(self, address: str, port: int) -> Reach:
        early = self._found.get((address, port))
        if early is not None:
            got = early.result()
            if got != "refused":
                return got
        return self._check(address, port)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def window_of(profile: Profile, host: str, slot: int) -> str:
    return window_name(host, slot, named=several(profile))


def _tunnel_alive(profile: Profile, windows: Mapping[str, Mapping[str, Any]], key: Key) -> bool:
    state = windows.get(window_of(profile, *key), {}).get("tunnel")
    return bool(state and state.get("alive"))


def _windows(name: str) -> dict[str, dict[str, sess.PaneState]]:
    found = sess.find_session(sess.tmux_server(), name)
    return sess.window_states(found) if found is not None else {}


def forwards(
    profile: Profile,
    wanted: Mapping[Key, int],
    recorded: Mapping[Key, AgentRecord],
) -> dict[Key, Forward]:
    """The forward of each server in `wanted` ({key: its world port on the box}): on the
    docker bridge here, from the local ports an earlier `up` chose for it when they are still
    its own or free (`box/tunnel.py` reuse_port), else from a free triple (none another
    tunnel of this profile holds). Raises `NoBridge` without docker, `NoFreePort` when no
    triple is free."""
    from carla_launcher.box.tunnel import local_port
    from carla_launcher.box.tunnel_local import bridge_address, listening_ports

    if not wanted:
        return {}
    bind = bridge_address()
    listening = listening_ports()
    windows = _windows(sess.session_name(profile.key))
    out: dict[Key, Forward] = {}
    held = [a.tunnel.local_port for k, a in recorded.items() if a.tunnel and k not in wanted]
    for key, port in wanted.items():
        old = recorded.get(key)
        before = forward_of(old.tunnel) if old is not None and old.tunnel else None
        alive = _tunnel_alive(profile, windows, key)
        if before is not None and reuse_port(
            before, Forward(bind, 0, port), ours_alive=alive, listening=listening
        ):
            out[key] = before
        else:
            taken = [*held, *(f.local_port for f in out.values())]
            out[key] = Forward(bind, local_port(port, listening, taken), port)
    return out


def open_panes(
    profile: Profile,
    opened: Mapping[Key, Forward],
    recorded: Mapping[Key, AgentRecord],
    *,
    read_write: bool,
) -> list[str]:
    """Each tunnel's pane in its pair's window (beside the server's pane; the agent's comes
    once the server answers through it), one window at a time (tmux); a tunnel whose
    forward changed since the last `up` is started again. What was started, one line each."""
    server = sess.tmux_server()
    name = sess.session_name(profile.key)
    lines = []
    for (host, slot), fwd in opened.items():
        old = recorded.get((host, slot))
        same = old is not None and old.tunnel is not None and forward_of(old.tunnel) == fwd
        panes = session_panes(
            profile, host, None, gpu=False, read_write=read_write, slot=slot, tunnel=fwd
        )
        window = window_of(profile, host, slot)
        result = sess.ensure_session(
            server, name, panes, restart=set() if same else {"tunnel"}, window=window
        )
        if "tunnel" in {*result.created, *result.respawned}:
            lines.append(f"started the SSH tunnel of {host} server {slot}")
    return lines


def wait_listening(forward: Forward, timeout: float) -> bool:
    """Whether the tunnel's three local ports listen within `timeout` seconds (its ssh has
    logged in and set up the forwards: `ExitOnForwardFailure` ends it otherwise)."""
    from carla_launcher.box.tunnel_local import listening_ports

    deadline = time.monotonic() + timeout
    while True:
        if triple(forward.local_port) <= listening_ports():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


def listen_timeout(profile: Profile) -> float:
    """How long a tunnel may take to listen: two SSH logins (through a jump host) and a bit."""
    return float(2 * profile.remote.connect_timeout + 10)


def not_listening(profile: Profile, host: str, slot: int, forward: Forward) -> str:
    """The line for a tunnel that did not listen in time, with the last thing its pane said
    (ssh's own error: a refused key, a host key, a port taken here)."""
    text = sess.pane_text(
        sess.tmux_server(), sess.session_name(profile.key), window_of(profile, host, slot), "tunnel"
    )
    said = [line.strip() for line in text.splitlines() if line.strip()]
    last = f" (its pane says: {said[-1]})" if said else ""
    return (
        f"{host} server {slot}: the SSH tunnel does not listen on "
        f"{forward.bind}:{forward.local_port} after {listen_timeout(profile):g} s{last}; "
        f"see its pane with `carla-launch attach {profile.name}`"
    )


def forward_for_attach(
    profile: Profile, st: Mapping[str, Any], address: str | None, taken: Iterable[int]
) -> tuple[Forward, str] | None:
    """For `attach` of a server without a recorded agent: the tunnel `up` would open for it
    (None: its agent reaches it at the address). `auto` asks once; a refusal counts as not."""
    from carla_launcher.box.tunnel_local import forward_for, reach

    setting = profile.remote.tunnel
    port = world_port(profile, st)
    if setting is False or profile.remote.connector == "local":
        return None
    if profile.server.mode == "slurm":
        return forward_for(port, taken), SLURM_WHY
    got: Reach | None = None
    if setting == "auto" and address is not None:
        got = reach(address, port)
        if route(setting, reach=got, box_listening=_listens(st, port)) != "tunnel":
            return None
    return forward_for(port, taken), why_tunnel(setting, reach=got, address=address is not None)


# -- status ---------------------------------------------------------------------------------------
def facts(agents: Sequence[AgentRecord]) -> list[dict[str, Any] | None]:
    """Each agent's tunnel as `status` shows it (None: none): the forward, its ports, those of
    them something listens on here, and why it goes through one. Its pane's state is the
    session's (`stack/report.py` puts them together)."""
    if not any(a.tunnel for a in agents):
        return [None] * len(agents)
    from carla_launcher.box.tunnel_local import listening_ports

    listening = listening_ports()
    out: list[dict[str, Any] | None] = []
    for a in agents:
        t = a.tunnel
        if t is None:
            out.append(None)
            continue
        ports = sorted(triple(t.local_port))
        out.append(
            {
                "bind": t.bind,
                "local_port": t.local_port,
                "remote_port": t.remote_port,
                "ports": ports,
                "listening": [p for p in ports if p in listening],
                "why": t.why,
            }
        )
    return out


# -- down ---------------------------------------------------------------------------------------
def _own_ssh(forward: Forward) -> list[Any]:
    """This machine's ssh processes that hold this forward's local ports as our tunnels run it
    (`-L` values from its three local ends, `ControlPath=none`, `box/tunnel.py`): what a loop
    killed with SIGKILL leaves."""
    import psutil

    ends = forward.listens()
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        argv = proc.info.get("cmdline") or []
        if proc.info.get("name") != "ssh" or "ControlPath=none" not in argv:
            continue
        held = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-L"]
        if all(any(h.startswith(end) for h in held) for end in ends):
            found.append(proc)
    return found


def close_leftovers(tunnels: Sequence[TunnelRecord], timeout: float = CLOSE_WAIT_S) -> list[str]:
    """After the session closed (its panes got HUP, their loops ended their ssh): wait until
    nothing listens on the tunnels' local ports; an ssh of ours still holding one (its loop
    was killed outright) is ended. A line for each port something else still holds."""
    from carla_launcher.box.tunnel_local import listening_ports

    if not tunnels:
        return []
    ours = {p for t in tunnels for p in triple(t.local_port)}
    deadline = time.monotonic() + timeout
    while ours & listening_ports() and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if not ours & listening_ports():
        return []
    import psutil

    for t in tunnels:
        for proc in _own_ssh(forward_of(t)):
            try:
                proc.terminate()
                proc.wait(3)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.TimeoutExpired):
                continue  # gone meanwhile, or not ours to end: what still listens is said below
    left = sorted(ours & listening_ports())
    if not left:
        return []
    return [
        f"something still listens on port {', '.join(map(str, left))} here after the tunnels "
        "closed (not an ssh of carla-launch's): see `ss -ltnp`"
    ]
