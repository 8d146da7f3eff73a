"""What a deploy must do on one box, decided from its facts. Pure: no I/O, no clock.

The plan is a fixed list of steps (the same on every host, as pyinfra wants for parallel
runs); a step with no script has nothing to do and says why. The pyinfra operations in
`ops.py` only run these scripts, so a dry run is simply the plan printed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from carla_launcher.box.facts import BoxFacts
from carla_launcher.box.ports import NoFreePort, choose_port
from carla_launcher.box.shell import (
    DOWNLOADS,
    PORT_FUNCTIONS,
    START_FUNCTION,
    STATE_DIR,
    STOP_FUNCTION,
    USER_CREATED,
    prologue,
    q,
)
from carla_launcher.deploy.apt import apt_script
from carla_launcher.deploy.boxlib import FUNCTIONS
from carla_launcher.deploy.package import (
    PackageSource,
    cleanup_script,
    download_script,
    is_installed,
    unpack_script,
    upload_finish_script,
    upload_name,
    upload_prepare_script,
)
from carla_launcher.profile import Profile
from carla_launcher.profile.fields import walk
from carla_launcher.server.compose import compose_up_script
from carla_launcher.server.launch import (
    LaunchConfig,
    launch_origin,
    render_launch_script,
    server_args,
)

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


@dataclass
class HostPlan:
    host: str
    port: int | None = None
    address: str | None = None
    root: str = ""
    session_dir: str = ""
    steps: list[Step] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    launch_sha: str | None = None  # of launch.sh (compose.yaml in compose mode) as planned

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
        user = Step(STEPS[0], head + _create_user(), f"create {facts.server_user}")
    else:
        user = _noop(STEPS[0], f"the server runs as {facts.server_user}")

    # 2. OS packages
    wanted = ("tmux",) if compose else srv.os_packages
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
        verified = facts.download_verified is not None and (
            source.sha256 is None or facts.download_verified == source.sha256
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

    # 6. port and launch script (or compose file)
    ours_running = srv.tmux_session in facts.tmux_sessions or facts.status.get("state") in (
        "running",
        "restarting",
    )
    try:
        plan.port = choose_port(
            srv.port, facts.listening, facts.deployed_port if ours_running else None
        )
    except NoFreePort as e:
        plan.error = str(e)
        return plan
    if plan.port != srv.port:
        plan.warnings.append(f"port {srv.port} (or +1, +2) is taken on the box: using {plan.port}")
    files: dict[str, str] = {}
    settings_remote = None
    if local.settings_text is not None and not compose:
        settings_remote = f"{facts.session_dir}/{SETTINGS_FILE}"
        files[SETTINGS_FILE] = local.settings_text
    package_id = source.package_id
    if local.settings_text is not None:  # a new settings file changes the script: restart
        package_id += f"; settings {_sha(local.settings_text)[:16]}"
    if compose:
        content = compose_file(plan.port) if compose_file else ""
        files[COMPOSE_FILE] = content
    else:
        args = server_args(srv.args, plan.port, srv.gpu, settings_remote)
        content = render_launch_script(
            LaunchConfig(
                root,
                facts.session_dir,
                args,
                plan.port,
                srv.restart,
                package_id,
                origin=launch_origin(srv, local.settings_text),
            )
        )
        files["launch.sh"] = content
    files["port"] = f"{plan.port}\n"
    main_file = COMPOSE_FILE if compose else "launch.sh"
    digest = _sha(content)
    plan.launch_sha = digest
    current = facts.launch_sha if not compose else facts.status.get("compose_sha")
    if compose:
        files[".compose.sha256"] = digest + "\n"
    if current == digest:
        launch = _noop(STEPS[5], f"{main_file} unchanged")
    else:
        launch = Step(
            STEPS[5], head + _write_files(files), f"write {facts.session_dir}/{main_file}"
        )
    if srv.gpu is not None and facts.gpus and srv.gpu >= len(facts.gpus):
        plan.warnings.append(f"server.gpu is {srv.gpu} but the box has {len(facts.gpus)} GPU(s)")

    # 7. the server
    running = (
        srv.tmux_session in facts.tmux_sessions
        if not compose
        else facts.status.get("compose_state") == "running"
    )
    changed = launch.changes or installs
    if running and not changed:
        start = _noop(
            STEPS[6],
            f"running in tmux session {srv.tmux_session}"
            if not compose
            else "compose service running",
        )
    else:
        why = "restart (launch script changed)" if running else "start"
        start = Step(STEPS[6], head + (_compose_up() if compose else _start(running, digest)), why)
    plan.steps = [user, packages, upload, fetch, unpack, launch, start]
    return plan


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write_files(files: dict[str, str]) -> str:
    out = [
        'as_server mkdir -p "$SDIR" || die "cannot create $SDIR"',
        # a temporary name of our own: two deploys at once must not move each other's file
        'put() { as_server sh -c \'cat > "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"\' sh "$SDIR/$1"; }',
    ]
    for name, text in files.items():
        out.append(f"printf '%s' {q(text)} | put {q(name)} || die {q('cannot write ' + name)}")
    out.append('chmod 755 "$SDIR/launch.sh" 2>/dev/null')
    out.append('echo "wrote the launch files in $SDIR"')
    return "\n".join(out) + "\n"


def _create_user() -> str:
    """useradd, and the marker that says carla-launch made the user; a user that another
    deploy made meanwhile is fine (and not ours to mark)."""
    return f"""echo "creating the user $SU for the server (CARLA refuses root)"
made=no tries=0
while :; do
  if msg=$(useradd -m -s /bin/bash "$SU" 2>&1); then made=yes; break; fi
  if getent passwd "$SU" > /dev/null 2>&1; then
    echo "the user $SU exists already (another deploy made it)"; break
  fi
  tries=$((tries + 1))  # /etc/passwd may be locked a moment by another useradd
  [ $tries -lt 5 ] || die "could not create the user $SU: $msg"
  sleep 1
done
if [ $made = yes ]; then
  SHOME=$(getent passwd "$SU" | cut -d: -f6)
  as_server mkdir -p "$SHOME/{STATE_DIR}" &&
    echo "carla-launch deploy created this user on $(date -u +%Y-%m-%dT%H:%M:%SZ)" |
    as_server sh -c 'cat > "$1"' sh "$SHOME/{STATE_DIR}/{USER_CREATED}" ||
    die "could not write $SHOME/{STATE_DIR}/{USER_CREATED}"
fi
"""


def _start(running: bool, launch_sha: str) -> str:
    """Stop what runs, start the launch loop; under the install lock, so that a second deploy
    at the same time finds the server it would start running (on the same launch script)."""
    lines = [FUNCTIONS, PORT_FUNCTIONS, STOP_FUNCTION, START_FUNCTION, "lock_install"]
    if running:
        lines.append('echo "restarting the server: its launch script changed"')
    else:
        lines.append(
            'if as_server tmux has-session -t "=$CL_SESSION" 2>/dev/null && '
            f'[ "$(sha256sum "$SDIR/launch.sh" 2>/dev/null | cut -c1-64)" = {q(launch_sha)} ]; '
            'then echo "CARLA runs already in tmux session $CL_SESSION (another deploy '
            'started it)"; exit 0; fi'
        )
    lines.append("stop_server")
    lines.append('echo "starting CARLA in tmux session $CL_SESSION as $SU"')
    # the tmux server outlives us: it must not inherit the lock (fd 9)
    lines.append("( exec 9>&-; start_server ) || exit 1")
    return "\n".join(lines) + "\n"


def _compose_up() -> str:
    return compose_up_script()
