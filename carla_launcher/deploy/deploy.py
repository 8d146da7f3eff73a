"""`python -m carla_launcher.deploy.deploy`: the pyinfra run, in a process of its own.

Why a child process: pyinfra's parallel SSH needs gevent's monkey-patching, which breaks
watchdog (the daemon) and must not reach the CLI; pyinfra also memoizes known_hosts and
ssh_config per process. The parent (`runner.py`) sends a JSON request on stdin; progress goes to
stderr as lines; the result is one JSON document on stdout.

Sequence, for every host of the profile at once: connect, read the box (one fact script),
plan (pure, `plan.py`), run the seven steps as pyinfra operations, then probe each server (every
server of every host, `server.gpus`) with CARLA's own RPC until it answers (or fail with the
tail of its log).
"""

# ruff: noqa: E402  (gevent must patch the standard library before anything else imports it)
from gevent import monkey

monkey.patch_all()

import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from pyinfra.api.command import StringCommand
from pyinfra.api.config import Config
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.facts import get_facts
from pyinfra.api.inventory import Inventory
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops
from pyinfra.api.output import set_echo
from pyinfra.api.state import BaseStateCallback, State, StateStage

from carla_launcher.box import progress
from carla_launcher.box.address import address_candidates
from carla_launcher.box.facts import BoxFacts
from carla_launcher.box.shell import error_line, prologue, q
from carla_launcher.box.ssh import explain_failure
from carla_launcher.deploy.inputs import (
    choose_address,
    facts_script_for,
    local_inputs,
    make_inventory_data,
)
from carla_launcher.deploy.ops import BoxFactsFact, step
from carla_launcher.deploy.plan import STEPS, HostPlan, PlannedServer, plan_host
from carla_launcher.deploy.result import blank_host, gpu_line, only_hosts, planned, server_json
from carla_launcher.errors import LauncherError
from carla_launcher.netaddr import for_url
from carla_launcher.profile import Profile, read_profile
from carla_launcher.server.probe import NotReady, wait_ready
from carla_launcher.server.scripts import status_script
from carla_launcher.server.state import parse_status


def say(host: str, text: str) -> None:
    sys.stderr.write(f"{host}: {text}\n")
    sys.stderr.flush()


class Callbacks(BaseStateCallback):
    """Collects connection errors (pyinfra only logs them)."""

    def __init__(self) -> None:
        self.connect_errors: dict[str, str] = {}

    def host_connect_error(self, state: State, host: Any, error: Any) -> None:  # type: ignore[override]
        self.connect_errors[host.name] = str(
            error.args[0] if getattr(error, "args", None) else error
        )


def make_inventory(profile: Profile, accept_new_host_key: bool) -> Inventory:
    if profile.remote.connector == "local":
        return Inventory((["@local"], {}))
    return Inventory(
        (list(profile.remote.hosts), make_inventory_data(profile, accept_new_host_key))
    )


def make_state(profile: Profile, accept_new_host_key: bool) -> State:
    """pyinfra's state for the profile's hosts; what the remote scripts print comes out live,
    a line as soon as it is printed (see `_echo`), not when their step ends."""
    state = State(
        make_inventory(profile, accept_new_host_key),
        Config(CONNECT_TIMEOUT=profile.remote.connect_timeout, FAIL_PERCENT=None),
        check_for_changes=False,
    )
    state.print_output = True
    return state


# -- the run -------------------------------------------------------------------------------------
def run(request: dict[str, Any]) -> dict[str, Any]:
    """Connect, read, plan, act, probe: the whole deploy for every host of the profile."""
    t0 = time.monotonic()
    profile = only_hosts(read_profile(Path(request["profile"])), request.get("hosts"))
    dry = bool(request.get("dry_run"))
    local = local_inputs(profile)
    compose_for_port, compose_warnings = _compose_renderer(profile)
    out: dict[str, Any] = {"profile": profile.name, "dry_run": dry, "hosts": {}, "timings": {}}
    hosts = out["hosts"]
    for name in profile.remote.hosts:
        hosts[name] = blank_host(name)
    if profile.remote.connector == "local":  # pyinfra calls this machine "@local"
        hosts["@local"] = hosts.pop(profile.remote.hosts[0])

    def lap(name: str) -> None:
        out["timings"][name] = round(time.monotonic() - t0, 3)

    state = make_state(profile, bool(request.get("accept_new_host_key")))
    active = _connect(state, profile, hosts)
    lap("connect")
    plans = (
        _plan(state, active, profile, local, compose_for_port, compose_warnings, hosts)
        if active
        else {}
    )
    lap("facts")
    runnable = [h for h in plans if not hosts[h.name]["error"]]
    if dry or not runnable:
        for host in runnable:
            hosts[host.name]["ok"] = True
    else:
        _execute(state, runnable, plans, hosts)
        lap("ops")
        ready = [h for h in runnable if not hosts[h.name]["error"]]
        # a Slurm job runs when Slurm says: `up` and `server status` follow it, not the deploy
        if request.get("probe", True) and profile.server.mode != "slurm":
            gevent.joinall(
                [gevent.spawn(_probe, profile, h, plans[h], hosts[h.name]) for h in ready]
            )
        else:
            for host in ready:
                hosts[host.name]["ok"] = True
        lap("probe")
    if active:
        _disconnect(state)
    lap("total")
    return out


def _compose_renderer(profile: Profile) -> tuple[Any, list[str]]:
    """server.mode: compose: port -> the compose file for the box, and what it had to drop."""
    if profile.server.mode != "compose":
        return None, []
    from carla_launcher.server.compose import load_simulator, remote_service, render_remote_compose

    sim = load_simulator(profile)
    try:
        _, warnings = remote_service(sim.service, profile.server.port, profile.server.restart)
    except ValueError as e:
        raise LauncherError(f"{sim.file}: services.{sim.name}: {e}") from None
    return (lambda port: render_remote_compose(sim, profile, port)), warnings


def _fail(state: State, host: Any, hosts: dict[str, Any], message: str) -> None:
    hosts[host.name]["error"] = message
    with contextlib.suppress(PyinfraError):  # "No hosts remaining!": nothing else to stop
        state.fail_hosts({host})


def _connect(state: State, profile: Profile, hosts: dict[str, Any]) -> list[Any]:
    """Connect to every host at once; a failure is one explained line per host."""
    callbacks = Callbacks()
    state.add_callback_handler(callbacks)
    state.set_stage(StateStage.Connect)
    with contextlib.suppress(PyinfraError):  # every host failed: reported below
        connect_all(state)
    for host in state.inventory:
        if not host.connected:
            text = callbacks.connect_errors.get(host.name, "could not connect")
            hosts[host.name]["error"] = explain_failure(
                profile, host.name, text, rc=None, with_host=False
            )
    return [h for h in state.inventory if h.connected]


def _plan(
    state: State,
    active: list[Any],
    profile: Profile,
    local: Any,
    compose_for_port: Any,
    compose_warnings: list[str],
    hosts: dict[str, Any],
) -> dict[Any, HostPlan]:
    """One fact script per host (in parallel), then the pure plan for each."""
    state.set_stage(StateStage.Prepare)
    script = facts_script_for(profile, local.source.archive_name)
    kwargs = {"script": script, "packages": profile.server.os_packages}
    raw = get_facts(state, BoxFactsFact, kwargs=kwargs)
    plans: dict[Any, HostPlan] = {}
    for host in active:
        facts = raw.get(host) or BoxFacts()
        address = choose_address(profile, facts)
        plan = plan_host(profile, host.name, facts, local, address, compose_for_port)
        plan.warnings.extend(compose_warnings)
        plans[host] = plan
        hosts[host.name].update(planned(facts, address, plan))
        if profile.server.mode != "slurm":  # a login node has no GPU: Slurm's nodes do
            say(host.name, gpu_line(facts))
        for w in plan.warnings:
            say(host.name, f"warning: {w}")
        if plan.error:
            _fail(state, host, hosts, plan.error)
        elif address is None:
            tried = address_candidates(facts.ssh_connection, facts.interfaces, facts.hostname_i)
            _fail(
                state,
                host,
                hosts,
                "no address of the box is reachable from here (candidates: "
                f"{', '.join(tried) or 'none'}); set remote.address in the profile",
            )
    return plans


def _execute(
    state: State, runnable: list[Any], plans: dict[Any, HostPlan], hosts: dict[str, Any]
) -> None:
    """The seven steps as pyinfra operations, every host in parallel, step by step."""
    for i, name in enumerate(STEPS):
        for host in runnable:
            s = plans[host].steps[i]
            add_op(
                state,
                step,
                host=host,
                name=name,
                script=s.script,
                why=s.why,
                upload=s.upload,
                after_upload=s.after_upload,
            )
    state.set_stage(StateStage.Execute)
    with contextlib.suppress(PyinfraError):  # failed hosts are reported one by one below
        run_ops(state)
    for host in runnable:
        h = hosts[host.name]
        h["changed"] = _changed(state, host)
        if host in state.failed_hosts or not host.connected:
            h["error"] = _op_error(state, host) or "a deploy step failed"


def _changed(state: State, host: Any) -> list[str]:
    """The steps that ran a command on the host and succeeded (a no-op sends none)."""
    names: list[str] = []
    for op_hash in state.get_op_order():
        try:
            meta = state.get_op_data_for_host(host, op_hash).operation_meta
        except (KeyError, AttributeError):
            continue
        if meta.is_complete() and meta.did_change():
            names.extend(state.get_op_meta(op_hash).names)
    return names


def _op_error(state: State, host: Any) -> str | None:
    """The one line that says why a host's step failed."""
    for op_hash in state.get_op_order():
        try:
            data = state.get_op_data_for_host(host, op_hash)
        except (KeyError, AttributeError):
            continue
        meta = data.operation_meta
        if meta.is_complete() and not meta.did_succeed(_raise_if_not_complete=False):
            stdout, stderr = meta.stdout_lines, meta.stderr_lines
            name = ", ".join(state.get_op_meta(op_hash).names)
            return error_line(stdout, stderr) or f"{name} failed"
    return None


def _remote(host: Any, script: str, timeout: int = 30) -> tuple[bool, list[str]]:
    try:
        ok, output = host.run_shell_command(
            StringCommand(script), print_output=False, _timeout=timeout
        )
    except Exception as e:  # noqa: BLE001 - a dropped connection: report, do not crash the run
        return False, [str(e)]
    return bool(ok), list(output.stdout_lines)


def _probe(profile: Profile, host: Any, plan: HostPlan, result: dict[str, Any]) -> None:
    """Every server of the host at once; the host is ok when each answered. Its `port` and
    `version` are the first server's; a failure is the first failing server's, with its log."""
    entries = {e["slot"]: e for e in result.get("servers", [])}
    failures: list[tuple[PlannedServer, str, list[str]]] = []

    def one(server: PlannedServer) -> None:
        version, error, tail = _probe_one(profile, host, plan, server, len(plan.servers) > 1)
        entry = entries.setdefault(server.slot, server_json(server))
        entry.update(version=version, error=error)
        if error is not None:
            failures.append((server, error, tail))

    gevent.joinall([gevent.spawn(one, s) for s in plan.servers])
    if failures:
        server, error, tail = min(failures, key=lambda f: f[0].slot)
        who = f"server {server.slot}: " if len(plan.servers) > 1 else ""
        result.update(error=f"{who}{error}", log_tail=tail, log=server.log_path)
        return
    first = plan.servers[0] if plan.servers else None
    version = entries[first.slot]["version"] if first is not None else None
    result.update(ok=True, version=version)  # "ready" is said once, by the parent's summary


def _probe_one(
    profile: Profile, host: Any, plan: HostPlan, server: PlannedServer, several: bool
) -> tuple[str | None, str | None, list[str]]:
    """Probe one server until it answers: (version, None, []), or (None, why, its log's tail)."""
    srv = profile.server
    address, port = plan.address or "", server.port
    status = prologue(srv.user, server.session) + status_script(srv.mode)

    def abort() -> str | None:
        ok, lines = _remote(host, status)
        if not ok:
            return None
        st = parse_status("\n".join(lines))
        if not st["running"] and st.get("state") != "restarting":
            return f"the server is not running ({st.get('last_crash_line') or st.get('state')})"
        if (st.get("restarts") or 0) >= 3:
            return (
                f"the server keeps crashing ({st['restarts']} restarts; last: "
                f"{st.get('last_crash_line')})"
            )
        return None

    where = f"{for_url(address)}:{port}"

    def waited(seconds: float, reason: str) -> None:  # the parent paces and words it (as `up`)
        say(host.name, progress.line("ready", seconds, srv.ready_timeout, f"{where} {reason}"))

    gpu = f" (GPU {server.gpu})" if server.gpu is not None else ""
    what = f"CARLA server {server.slot}{gpu}" if several else "CARLA"
    say(host.name, f"probing {what} at {where} (up to {srv.ready_timeout} s)")
    try:
        version = wait_ready(
            address,
            port,
            srv.ready_timeout,
            waited,
            should_abort=abort,
            interval=0.25 if srv.ready_timeout <= 60 else 1.0,
        )
    except NotReady as e:
        ok, tail = _remote(host, f"tail -n 15 {q(server.log_path)} 2>/dev/null")
        return None, f"CARLA did not answer: {e}", tail if ok else []
    return version, None, []


def _disconnect(state: State) -> None:
    state.set_stage(StateStage.Disconnect)
    with contextlib.suppress(Exception):  # closing is best effort
        disconnect_all(state)


def _echo(message: Any = None, **_: Any) -> None:
    """pyinfra's output hook (a no-op in API mode): live lines of the remote scripts. pyinfra
    calls it for each line as its reader greenlet gets it from the SSH channel (or the local
    pipe), while the command still runs; the flush sends it on to the parent at once."""
    if message is not None:
        sys.stderr.write(f"{message}\n")
        sys.stderr.flush()


def setup_output() -> None:
    """What reaches the parent: the remote scripts' lines (`_echo`), not pyinfra's own log."""
    logging.getLogger("pyinfra").setLevel(logging.CRITICAL)
    set_echo(_echo)


def main() -> int:
    setup_output()
    try:
        request = json.loads(sys.stdin.read() or "{}")
        result = run(request)
    except LauncherError as e:  # bad input (exit code 2) or a failure before any host (1)
        result = {"error": str(e), "exit_code": e.exit_code, "hosts": {}}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
