"""What a deploy must do on one box, decided from its facts. Pure: no I/O, no clock.

The plan is a fixed list of steps (the same on every host, as pyinfra wants for parallel
runs); a step with no script has nothing to do and says why. The pyinfra operations in
`ops.py` only run these scripts (their bodies: `scripts.py`), so a dry run is simply the plan
printed.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

from carla_launcher.box.facts import BoxFacts
from carla_launcher.box.ports import STRIDE, NoFreePort, choose_port
from carla_launcher.box.shell import DOWNLOADS, STATE_DIR, prologue
from carla_launcher.deploy.apt import apt_script
from carla_launcher.deploy.package import (
    PackageSource,
    cache_origin,
    cleanup_script,
    download_script,
    is_installed,
    unpack_script,
    upload_finish_script,
    upload_name,
    upload_prepare_script,
)
from carla_launcher.deploy.scripts import (
    create_user_script,
    sha256_text,
    start_under_lock,
    subshell,
    write_files,
)
from carla_launcher.profile import Profile, Server
from carla_launcher.profile.fields import walk
from carla_launcher.server.compose import compose_up_script
from carla_launcher.server.launch import (
    LaunchConfig,
    launch_origin,
    render_launch_script,
    server_args,
)
from carla_launcher.server.scripts import retire_script
from carla_launcher.server.slots import choose, described, ports
from carla_launcher.server.slurm import LOGIN_NODE_PACKAGES, render_job_loop

DEFAULT_SERVER_USER = dict(walk())["server.user"].default

STEPS = (
    "Create the server user",
    "Install OS packages",
    "Upload the CARLA package",
    "Download the CARLA package",
    "Unpack the CARLA package",
    "Write the launch script",
    "Start the CARLA server",
)
SETTINGS_FILE = "CarlaSettings.ini"
COMPOSE_FILE = "compose.yaml"


@dataclass(frozen=True)
class Step:
    name: str
    script: str | None  # None: nothing to do
    why: str  # what it does, or why there is nothing to do
    upload: tuple[str, str] | None = None  # (local file, remote path) between two scripts
    after_upload: str | None = None

    @property
    def changes(self) -> bool:
        return self.script is not None


@dataclass(frozen=True)
class PlannedServer:
    """A server the deploy leaves on the box: slot K of `server/slots.py`."""

    slot: int
    gpu: int | None  # -graphicsadapter; None: the box's default
    port: int
    session: str  # its tmux session, and its folder's name
    session_dir: str  # its state folder: launch.sh, port, status, server.log
    launch_sha: str  # of its launch.sh (compose.yaml in compose mode) as planned

    @property
    def log_path(self) -> str:
        return f"{self.session_dir}/server.log"


@dataclass
class HostPlan:
    host: str
    port: int | None = None  # the first server's
    address: str | None = None
    root: str = ""
    session_dir: str = ""  # the first server's
    steps: list[Step] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    launch_sha: str | None = None  # the first server's launch.sh (compose.yaml) as planned
    servers: list[PlannedServer] = field(default_factory=list)  # by slot

    @property
    def log_path(self) -> str:
        return f"{self.session_dir}/server.log"


@dataclass(frozen=True)
class LocalInputs:
    """What the deploy read on this machine, for the plan to stay pure."""

    source: PackageSource
    package_size: int | None = None  # of a local archive
    settings_text: str | None = None  # the CARLA settings file named by the profile
    nonce: str = "0"  # this deploy's, for its upload's name when the box names no owner


def _noop(name: str, why: str) -> Step:
    return Step(name, None, why)


def plan_host(
    profile: Profile,
    host: str,
    facts: BoxFacts,
    local: LocalInputs,
    address: str | None,
    compose_file: Callable[[int], str] | None = None,
) -> HostPlan:
    """Everything a deploy must do on `host`, in STEPS order; `error` when it cannot."""
    srv = profile.server
    root = facts.package_root
    plan = HostPlan(host, address=address, root=root, session_dir=facts.session_dir)
    if facts.uid is None or not facts.session_dir:
        plan.error = "could not read the box's facts (is it a POSIX shell with sh, id, awk?)"
        return plan
    head = prologue(srv.user, srv.tmux_session, srv.package.root)
    compose = srv.mode == "compose"
    if (  # only a server.user someone chose: the default is no wish to be warned about
        not facts.login_root
        and srv.user not in (facts.login_user, DEFAULT_SERVER_USER)
        and not compose
    ):
        plan.warnings.append(
            f"logged in as {facts.login_user}, not root: the server runs as "
            f"{facts.login_user} (server.user is only used when logging in as root)"
        )

    # 1. the server user
    if facts.login_root and not facts.server_user_exists:  # compose mode keeps its files there too
        user = Step(STEPS[0], head + create_user_script(), f"create {facts.server_user}")
    else:
        user = _noop(STEPS[0], f"the server runs as {facts.server_user}")

    # 2. OS packages
    wanted = ("tmux",) if compose else srv.os_packages
    if srv.mode == "slurm":  # the login node runs the loop and unpacks; the nodes run CARLA
        wanted = tuple(p for p in srv.os_packages if p in LOGIN_NODE_PACKAGES)
    if facts.packages is None:
        plan.warnings.append("no dpkg on the box: OS packages not checked")
        missing: list[str] = []
    else:
        missing = [p for p in wanted if p in facts.packages and not facts.packages[p]]
    if missing and facts.privilege == "none":
        plan.error = (
            f"missing OS packages: {' '.join(missing)}; install them (sudo apt-get install "
            f"{' '.join(missing)}) or log in as root or as a user with sudo"
        )
        return plan
    if missing:
        packages = Step(
            STEPS[1],
            head + apt_script(missing, sudo=facts.privilege != "root"),
            f"install {' '.join(missing)}",
        )
    else:
        packages = _noop(STEPS[1], "all present")

    # 3-5. the package
    source = local.source
    installs = False  # a new tree at the root: the server restarts on it
    upload = _noop(STEPS[2], "not a local file")
    fetch = _noop(STEPS[3], "not a download")
    unpack = _noop(STEPS[4], "already installed")
    installed = is_installed(source, facts.marker, facts.launcher)
    tidy = (  # what a killed unpack or upgrade left: removed, and nothing restarts for it
        Step(
            STEPS[4],
            head + cleanup_script(),
            f"remove what an interrupted deploy left: {', '.join(facts.leftovers)}",
        )
        if facts.leftovers
        else None
    )
    if compose:
        upload = _noop(STEPS[2], "server.mode: compose")
        fetch = _noop(STEPS[3], "server.mode: compose")
        unpack = _noop(STEPS[4], "server.mode: compose")
    elif source.kind == "none":
        if not facts.launcher:
            plan.error = f"no CarlaUE4.sh in {root} and no server.package.url to install one from"
            return plan
        unpack = tidy or _noop(STEPS[4], f"using the CARLA at {root} as it is")
    elif installed:
        unpack = tidy or _noop(STEPS[4], f"installed at {root}")
    else:
        if facts.root_exists and not facts.marker:
            plan.error = (
                f"{root} exists but was not installed by carla-launch; move it "
                "away, or remove server.package.url to use it as it is"
            )
            return plan
        verified = facts.download_verified is not None and (  # as the box's `verified_here`
            facts.download_verified == source.sha256
            if source.sha256
            else facts.download_origin in (None, cache_origin(source))
        )
        if verified:
            fetch = _noop(STEPS[3], "downloaded and checked before")
        elif source.kind == "local":
            size = local.package_size or 0
            name = upload_name(source.archive_name or "", facts.upload_owner or f"t{local.nonce}")
            remote = f"{facts.server_home}/{STATE_DIR}/{DOWNLOADS}/{name}"
            upload = Step(
                STEPS[2],
                head + upload_prepare_script(source, size, name),
                f"upload {source.local_path}",
                upload=(str(source.local_path), remote),
                after_upload=head + upload_finish_script(source, name),
            )
        else:
            fetch = Step(STEPS[3], head + download_script(source), f"download {source.url}")
        unpack = Step(STEPS[4], head + unpack_script(source), f"unpack into {root}")
        installs = True

    # 6-7. ports, launch scripts (or the compose file) and the servers
    if compose:
        launch, start = _compose_server(plan, srv, facts, local, head, compose_file)
    else:
        launch, start = _servers(plan, srv, facts, local, installs)
    if launch is None or start is None:
        return plan
    plan.steps = [user, packages, upload, fetch, unpack, launch, start]
    return plan


def _package_id(source: PackageSource, settings_text: str | None) -> str:
    """What is installed; a new settings file changes the launch script too: a restart."""
    if settings_text is None:
        return source.package_id
    return source.package_id + f"; settings {sha256_text(settings_text)[:16]}"


def _compose_server(
    plan: HostPlan,
    srv: Server,
    facts: BoxFacts,
    local: LocalInputs,
    head: str,
    compose_file: Callable[[int], str] | None,
) -> tuple[Step | None, Step | None]:
    """server.mode: compose: one server, run by docker compose from a compose file of ours."""
    ours_running = facts.status.get("state") in ("running", "restarting")
    try:
        port = choose_port(srv.port, facts.listening, facts.deployed_port if ours_running else None)
    except NoFreePort as e:
        plan.error = str(e)
        return None, None
    if port != srv.port:
        plan.warnings.append(f"port {srv.port} (or +1, +2) is taken on the box: using {port}")
    content = compose_file(port) if compose_file else ""
    digest = sha256_text(content)
    files = {COMPOSE_FILE: content, "port": f"{port}\n", ".compose.sha256": digest + "\n"}
    plan.port, plan.launch_sha = port, digest
    plan.servers = [PlannedServer(0, None, port, srv.tmux_session, facts.session_dir, digest)]
    if facts.status.get("compose_sha") == digest:
        launch = _noop(STEPS[5], f"{COMPOSE_FILE} unchanged")
    else:
        launch = Step(
            STEPS[5], head + write_files(files), f"write {facts.session_dir}/{COMPOSE_FILE}"
        )
    if facts.status.get("compose_state") == "running" and not launch.changes:
        return launch, _noop(STEPS[6], "compose service running")
    return launch, Step(STEPS[6], head + compose_up_script(), "start")


def _servers(
    plan: HostPlan, srv: Server, facts: BoxFacts, local: LocalInputs, installs: bool
) -> tuple[Step | None, Step | None]:
    """One launch script and tmux session per server of the profile on this box (one per GPU
    of `server.gpus`, `server/slots.py`): which ones, their ports, what to write and start;
    and the servers that run here but are no longer wanted, stopped. Each server's part of a
    step is a subshell with its own prologue: one `exit` (a server another deploy started)
    does not skip the next server."""
    choice = choose(srv, facts)
    plan.warnings.extend(choice.lines)
    if choice.error is not None:
        plan.error = choice.error
        return None, None
    try:
        # a Slurm job picks its ports on its node: the login node's listeners say nothing
        listening = set() if srv.mode == "slurm" else facts.listening
        chosen = ports(srv.port, choice.kept, listening, choice.ours)
    except NoFreePort as e:
        plan.error = str(e)
        return None, None
    one = len(choice.kept) == 1 and srv.gpus is None
    if srv.gpu is not None and facts.gpus and srv.gpu >= len(facts.gpus):
        plan.warnings.append(f"server.gpu is {srv.gpu} but the box has {len(facts.gpus)} GPU(s)")
    package_id = _package_id(local.source, local.settings_text)
    writes, starts, whys, idle = [], [], [], []
    home = posixpath.dirname(facts.session_dir)
    for slot in choice.kept:
        port, base = chosen[slot.index], srv.port + STRIDE * slot.index
        if port != base:
            who = "using" if one else f"{described(slot)} uses"
            plan.warnings.append(f"port {base} (or +1, +2) is taken on the box: {who} {port}")
        sdir = posixpath.join(home, slot.session)
        files: dict[str, str] = {}
        settings_remote = None
        if local.settings_text is not None:
            settings_remote = f"{sdir}/{SETTINGS_FILE}"
            files[SETTINGS_FILE] = local.settings_text
        args = server_args(srv.args, port, slot.gpu, settings_remote)
        origin = launch_origin(srv, local.settings_text, slot)
        cfg = LaunchConfig(
            facts.package_root, sdir, args, port, srv.restart, package_id, origin=origin
        )
        content = (  # Slurm's launch script submits the server as a job (`server/slurm.py`)
            render_job_loop(cfg, srv.slurm, slot.session)
            if srv.mode == "slurm"
            else render_launch_script(cfg)
        )
        files["launch.sh"] = content
        if srv.mode != "slurm":  # the port file is what start, stop and status check here
            files["port"] = f"{port}\n"
        digest = sha256_text(content)
        plan.servers.append(PlannedServer(slot.index, slot.gpu, port, slot.session, sdir, digest))
        head = prologue(srv.user, slot.session, srv.package.root)
        here = choice.on_box.get(slot.index)
        if here is None or here.launch_sha != digest:
            writes.append(subshell(head + write_files(files), "exit 1"))
        is_running = here is not None and here.running
        if is_running and not (installs or here is None or here.launch_sha != digest):
            idle.append(slot.session)
            continue
        what = "the loop that submits CARLA as a Slurm job" if srv.mode == "slurm" else "CARLA"
        starts.append(subshell(head + start_under_lock(is_running, digest, what), "_cl_failed=1"))
        verb = "restart (launch script changed)" if is_running else "start"
        whys.append(verb if one else f"{verb.split(' ')[0]} {described(slot)}")
    for k, why in sorted(choice.stale.items(), reverse=True):  # first: its GPU and ports go
        plan.warnings.append(f"server {k} stops and its launch script goes: {why}")
        head = prologue(srv.user, choice.on_box[k].session, srv.package.root)
        starts.insert(0, subshell(head + retire_script(f"server {k}: {why}"), "_cl_failed=1"))
        whys.insert(0, f"stop server {k}")
    first = plan.servers[0]
    plan.port, plan.launch_sha, plan.session_dir = first.port, first.launch_sha, first.session_dir
    written = ", ".join(f"{s.session_dir}/launch.sh" for s in plan.servers)
    launch = (
        Step(STEPS[5], "".join(writes), f"write {written}")
        if writes
        else _noop(STEPS[5], "launch.sh unchanged" if one else "launch scripts unchanged")
    )
    if not starts:
        sessions = "s " + ", ".join(idle) if len(idle) > 1 else " " + idle[0]
        return launch, _noop(STEPS[6], f"running in tmux session{sessions}")
    script = "_cl_failed=0\n" + "".join(starts) + '[ "$_cl_failed" = 0 ] || exit 1\n'
    return launch, Step(STEPS[6], script, "; ".join(whys))
