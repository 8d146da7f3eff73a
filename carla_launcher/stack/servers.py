"""The servers `up` needs: every server of the profile on every host, deployed, started and
answering (through its SSH tunnel where its agent goes through one, `stack/tunnels.py`), each
recorded (address, port, version) so that `status`, `env` and `sync` see them.

The imperative shell of `up`'s first half. Hosts are asked at once (`parallel.each`); one
deploy covers every host that has nothing yet or whose launch script the profile has drifted
from; a host that fails says why in one line and the others go on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from carla_launcher import parallel, records
from carla_launcher.box.ssh import RemoteError
from carla_launcher.box.tunnel import Forward, Reach
from carla_launcher.errors import InputError, LauncherError
from carla_launcher.profile import Profile
from carla_launcher.records import AgentRecord
from carla_launcher.stack import tunnels
from carla_launcher.stack.pairs import Reached, tunnel_refusal
from carla_launcher.stack.tunnels import Key, Routed, world_port
from carla_launcher.stack.variants import Say
from carla_launcher.term import Board

Live = Callable[[], Board | None] | None  # opens the deploy's live rows (None: plain lines)
Progress = Callable[[float, str], None] | None


def host_servers(profile: Profile, host: str) -> list[dict[str, Any]]:
    """Every server of the profile on `host` (`control.host_servers`: one round trip; never
    empty, slot 0 with `deployed` False where nothing is deployed)."""
    from carla_launcher.server import control

    return control.host_servers(profile, host)


def _deployed(statuses: Sequence[dict[str, Any]]) -> bool:
    return any(st.get("deployed") for st in statuses)


def redeploy_drifted(
    profile: Profile, statuses: list[dict[str, Any]], say: Say, live: Live = None
) -> set[str]:
    """Redeploy the hosts where the profile changed since a server's launch script was written
    (the deploy rewrites it and starts or restarts the servers); those hosts. Only they are
    deployed: another host's server, perhaps stopped on purpose, is left as it is."""
    by_host: dict[str, list[dict[str, Any]]] = {}
    for st in statuses:
        by_host.setdefault(st["host"], []).append(st)
    drifted = drifted_hosts(by_host, say, _jobs(profile))
    if drifted:
        failed = deploy_hosts(profile, say, drifted, probe=False, live=live)
        if failed:
            host, why = next(iter(failed.items()))
            raise RemoteError(f"deploy failed on {host}: {why}")
    return set(drifted)


def drifted_hosts(
    statuses: dict[str, list[dict[str, Any]]], say: Say, jobs: int | None = None
) -> list[str]:
    """The deployed hosts where the profile drifted since a launch script was written; one line
    per host, whatever the number of its servers that drifted. `jobs`: `server.slurm.jobs`,
    which a login node's number of servers must match (a job per server, whatever the GPUs:
    a count, not a field of each launch script, so that changing it restarts no job)."""
    from carla_launcher.server.drift import changed_since_deploy

    hosts = []
    for host, sts in statuses.items():
        if not _deployed(sts):
            continue
        st = next((s for s in sts if s.get("drift")), None)
        has = sum(1 for s in sts if s.get("deployed"))
        if st is not None:
            say(f"{host}: {changed_since_deploy(st['drift'])}: redeploying the launch script")
            hosts.append(host)
        elif jobs is not None and has != jobs:
            say(f"{host}: server.slurm.jobs is {jobs}, the login node has {has}: redeploying")
            hosts.append(host)
    return hosts


def _jobs(profile: Profile) -> int | None:
    return profile.server.slurm.jobs if profile.server.mode == "slurm" else None


def deploy_hosts(
    profile: Profile, say: Say, hosts: list[str], probe: bool = True, live: Live = None
) -> dict[str, str]:
    """One deploy of these hosts (in parallel, the deploy's own), shown as live rows when
    `live` opens a board (a terminal), else as lines; the hosts that failed, and why."""
    from carla_launcher.deploy.runner import deploy

    board = live() if live is not None else None
    try:
        report = deploy(profile, on_line=say, probe=probe, board=board, hosts=hosts)
    finally:
        if board is not None:
            board.close()
    return {h.host: h.error or "failed" for h in report.hosts if not h.ok}


@dataclass
class Ensured:
    """What `ensure_servers` found: each host's servers after it (failed hosts left out), why
    each failed host failed, a line for each server that failed to start, and what this run
    changed, in words."""

    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    said: set[tuple[str, int]] = field(default_factory=set)  # (host, K) of those lines
    done: list[str] = field(default_factory=list)


def _asked(profile: Profile, hosts: Sequence[str]) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """Each host's servers, asked at once; a host that cannot be asked goes to the failures."""

    def one(host: str) -> list[dict[str, Any]] | str:
        try:
            return host_servers(profile, host)
        except LauncherError as e:
            return str(e).removeprefix(f"{host}: ")

    found: dict[str, list[Any]] = {}
    failed: dict[str, str] = {}
    for host, got in zip(hosts, parallel.each(hosts, one), strict=True):
        if isinstance(got, str):
            failed[host] = got
        else:
            found[host] = got
    return found, failed


def ensure_servers(profile: Profile, hosts: Sequence[str], say: Say, live: Live = None) -> Ensured:
    """Deploy the hosts that have nothing yet or drifted (one deploy for all of them), start
    the servers that are stopped (all at once: each host's start also says its servers'
    status), and ask the deployed hosts again."""
    from carla_launcher.server import control

    out = Ensured()
    statuses, out.failed = _asked(profile, hosts)
    fresh = [h for h, sts in statuses.items() if not _deployed(sts)]
    for h in fresh:
        say(f"{h}: not deployed yet: deploying (this downloads the CARLA package once)")
    drifted = drifted_hosts(statuses, say, _jobs(profile))
    if fresh or drifted:
        failed = deploy_hosts(profile, say, [*fresh, *drifted], probe=bool(fresh), live=live)
        out.failed.update(failed)
        if deployed := [h for h in fresh if h not in failed]:
            out.done.append("deployed the server" + _on(deployed, hosts))
        if redeployed := [h for h in drifted if h not in failed]:
            out.done.append(
                "redeployed the launch script (the profile changed)" + _on(redeployed, hosts)
            )
    stopped = [
        h
        for h, sts in statuses.items()
        if h not in fresh
        and h not in drifted
        and any(st.get("deployed") and not st.get("running") for st in sts)
    ]

    def start(host: str) -> list[dict[str, Any]] | str:
        try:
            return control.start_servers(profile, host, status=True)
        except LauncherError as e:
            return str(e).removeprefix(f"{host}: ")

    started = 0
    for host, got in zip(stopped, parallel.each(stopped, start), strict=True):
        if isinstance(got, str):
            out.failed[host] = got
            continue
        statuses[host] = [r["status"] for r in got]  # after the start, from its round trip
        started += sum(1 for r in got if r.get("done"))
        for r in got:  # the host's other servers still count; this one's line says why
            if r.get("error"):
                out.lines.append(f"{host} server {r.get('slot')}: {r['error']}")
                out.said.add((host, int(r.get("slot") or 0)))
    if started:
        out.done.append("started the server" + (f"s ({started})" if started > 1 else ""))
    again = [h for h in statuses if h not in out.failed]
    changed = set(fresh) | set(drifted)  # the deploy started their servers: ask again
    asked, lost = _asked(profile, [h for h in again if h in changed])
    out.failed.update(lost)
    out.statuses = {h: asked.get(h, statuses[h]) for h in again if h not in lost}
    return out


def _on(some: list[str], hosts: Sequence[str]) -> str:
    """` on HOST, ...` when a pool's hosts are not all concerned ("" for all of them)."""
    return "" if len(some) == len(hosts) else " on " + ", ".join(some)


def ensure_server(
    profile: Profile, host: str, say: Say, report_done: list[str], live: Live = None
) -> dict[str, Any]:
    """One host's first server after `ensure_servers` (for callers of one server)."""
    got = ensure_servers(profile, [host], say, live)
    report_done += got.done
    if host in got.failed:
        raise RemoteError(f"{host}: {got.failed[host]}")
    return got.statuses[host][0]


@dataclass
class Answered:
    """What `answering` found: the servers that answered (host and slot order), a line for
    each that did not, and what it started (the SSH tunnels), in words."""

    reached: list[Reached] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)


def _addresses(profile: Profile, hosts: Sequence[str], lines: list[str]) -> dict[str, str | None]:
    """Each host's address (in turn: learn() rewrites one file). One that cannot be found is a
    line, unless `remote.tunnel` may carry its agents: a tunnel needs none (None)."""
    from carla_launcher.box.address import agent_address

    out: dict[str, str | None] = {}
    for host in hosts:
        if profile.server.mode == "slurm":  # the login node's address reaches no job
            out[host] = None
            continue
        try:
            out[host] = agent_address(profile, host)
        except LauncherError as e:
            if profile.remote.tunnel is False:
                lines.append(f"{host}: {str(e).removeprefix(f'{host}: ')}")
            else:
                out[host] = None
    return out


def _routes(
    profile: Profile,
    todo: list[tuple[str, dict[str, Any]]],
    addresses: Mapping[str, str | None],
    recorded: Mapping[Key, AgentRecord],
    progress: Progress,
    read_write: bool,
    out: Answered,
    reach: Callable[[str, int], Reach] | None,
) -> dict[Key, tuple[Forward, str]]:
    """The tunnels of the servers in `todo` whose agents go through one (`stack/tunnels.py`),
    their panes started; the servers that cannot be told leave `todo` with a line."""
    from carla_launcher.box.ports import NoFreePort

    def one(item: tuple[str, dict[str, Any]]) -> Routed | str:
        host, st = item
        old = recorded.get((host, _slot(st)))
        return tunnels.decide(
            profile, host, st, addresses[host], old.tunnel if old else None, progress, reach
        )

    chosen: dict[Key, Routed] = {}
    for (host, st), got in zip(list(todo), parallel.each(todo, one), strict=True):
        if isinstance(got, str):
            out.lines.append(got)
            todo.remove((host, st))
        else:
            chosen[(host, _slot(st))] = got
    wanted = {
        (h, _slot(st)): world_port(profile, st) for h, st in todo if chosen[(h, _slot(st))].tunnel
    }
    refusal = tunnel_refusal(profile, len(wanted))
    if refusal:
        raise InputError(profile.path, None, refusal, "compose.address")
    try:
        fwds = tunnels.forwards(profile, wanted, recorded)
    except NoFreePort as e:
        raise LauncherError(f"no free local ports for an SSH tunnel: {e}") from None
    out.done += tunnels.open_panes(profile, fwds, recorded, read_write=read_write)
    return {k: (fwd, chosen[k].why) for k, fwd in fwds.items()}


def _slot(st: Mapping[str, Any]) -> int:
    return int(st.get("slot") or 0)


def answering(
    profile: Profile,
    statuses: dict[str, list[dict[str, Any]]],
    progress: Progress = None,
    said: set[tuple[str, int]] | frozenset[tuple[str, int]] = frozenset(),
    recorded: Mapping[Key, AgentRecord] | None = None,
    read_write: bool = False,
    reach: Callable[[str, int], Reach] | None = None,
) -> Answered:
    """Wait until each running server answers (all at once), then record what each said: the
    servers that answered, in host and slot order, and a line for each one that did not (but
    those in `said`, whose failure to start was said already). A server whose agent goes
    through an SSH tunnel (`remote.tunnel`) gets it first, in its pair's window (`recorded`:
    the agents of the last `up`, whose tunnels keep their local ports), and answers through it.
    `reach`: `auto`'s TCP check (`tunnels.EarlyReach`: started early)."""
    from carla_launcher.server import control

    out = Answered()
    addresses = _addresses(profile, list(statuses), out.lines)
    todo: list[tuple[str, dict[str, Any]]] = []
    for host, sts in statuses.items():
        for st in sts if host in addresses else []:
            # its session runs: just started, its loop has not written "running" yet
            if st.get("running") or st.get("session"):
                todo.append((host, st))
            elif st.get("deployed") and (host, _slot(st)) not in said:
                out.lines.append(f"{host} server {st.get('slot')}: not running ({st.get('state')})")
    through = _routes(profile, todo, addresses, recorded or {}, progress, read_write, out, reach)
    many = len(todo) > 1

    def wait(item: tuple[str, dict[str, Any]]) -> Reached | str:
        host, st = item
        slot = _slot(st)
        port = world_port(profile, st)
        address = addresses[host]
        fwd, why = through.get((host, slot), (None, ""))
        said = progress
        if progress is not None and many:  # one line for all: it names the server it waits on

            def said(waited: float, reason: str) -> None:
                progress(waited, f"{host} server {slot}: {reason}")

        try:  # a Slurm server's job runs first (it may queue); a box's server has its place
            control.wait_placed(profile, host, slot, said)
        except LauncherError as e:
            return f"{host} server {slot}: {str(e).removeprefix(f'{host}: ')}"
        if fwd is not None and not tunnels.wait_listening(fwd, tunnels.listen_timeout(profile)):
            return tunnels.not_listening(profile, host, slot, fwd)
        probe = (fwd.bind, fwd.local_port) if fwd is not None else (address, port)
        if probe[0] is None:  # no address: only a tunnel reaches it (`_addresses`)
            return f"{host} server {slot}: no address to reach it at"
        try:
            version = control.wait_started(profile, host, probe[0], probe[1], said, slot=slot)
        except LauncherError as e:
            return f"{host} server {slot}: {str(e).removeprefix(f'{host}: ')}"
        gpu = st.get("gpu")
        return Reached(
            host, slot, gpu if isinstance(gpu, int) else None, address, port, version, fwd, why
        )

    for got in parallel.each(todo, wait):
        if isinstance(got, str):
            out.lines.append(got)
            continue
        records.learn(
            profile,
            got.host,
            address=got.address,
            port=got.port,
            version=got.version,
            slot=got.slot,
        )
        out.reached.append(got)
    return out
