"""`up`, `attach` and `down`: server running, variants synced, agent started, panes side by side.

The imperative shell that strings the parts together; each step reports what it did, so that
a second `up` can say "nothing to do".
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from carla_launcher import session as sess
from carla_launcher.compose.discover import variant_name
from carla_launcher.compose.hosts import ENV_HOST, ENV_PORT, ENV_URL_HOST
from carla_launcher.errors import InputError, LauncherError, display_path
from carla_launcher.profile import Profile
from carla_launcher.state import read_json, write_json

SESSIONS_STATE = "sessions.json"
Say = Callable[[str], None]


@dataclass
class UpReport:
    host: str
    address: str
    port: int
    version: str | None = None
    variant: Path | None = None
    done: list[str] = field(default_factory=list)  # what this run changed

    @property
    def changed(self) -> bool:
        return bool(self.done)


# -- pure choices ----------------------------------------------------------------------------------
def choose_variant(folder: Path, variants: list[Path], wanted: str | None) -> Path:
    """The variant to run: the one of COMPOSE (source or variant name), else the only one,
    else the one of docker-compose.yaml / compose.yaml."""
    by_name = {v.name: v for v in variants}
    if wanted:
        name = Path(wanted).name
        for candidate in (name, variant_name(name)):
            if candidate in by_name:
                return by_name[candidate]
        names = ", ".join(sorted(by_name)) or "none"
        raise InputError(
            folder, None, f"no distributed variant for {wanted} (variants: {names})", "COMPOSE"
        )
    if len(variants) == 1:
        return variants[0]
    for default in ("docker-compose.yaml", "docker-compose.yml", "compose.yaml", "compose.yml"):
        if variant_name(default) in by_name:
            return by_name[variant_name(default)]
    names = ", ".join(sorted(by_name)) or "none"
    raise InputError(folder, None, f"several variants, name one as COMPOSE: {names}", "COMPOSE")


def agent_argv(variant: Path) -> list[str]:
    return ["docker", "compose", "-f", str(variant), "up"]


def agent_env(address: str, port: int) -> dict[str, str]:
    """What an env-mode variant reads (`compose.address: env`); passed in the literal mode
    too, where nothing reads it, so that either kind of variant runs. URLs and host:port
    pairs in the variant read the URL form ([fd00::2] for IPv6)."""
    from carla_launcher.netaddr import for_url

    return {ENV_HOST: address, ENV_PORT: str(port), ENV_URL_HOST: for_url(address)}


def server_pane_argv(profile: Profile, host: str, read_write: bool) -> list[str]:
    from carla_launcher.box.ssh import ssh_argv
    from carla_launcher.server.control import attach_command

    remote = attach_command(profile)
    if read_write:  # read-only by default: a stray Ctrl-C must not kill the server
        remote = remote.replace("attach-session -r ", "attach-session ")
    return ssh_argv(profile, host, tty=True, command=remote)


def gpu_argv(profile: Profile) -> list[str]:
    from carla_launcher.gpu.watch import watch_argv

    return watch_argv(str(profile.path))


def session_panes(
    profile: Profile,
    host: str,
    variant: Path | None,
    *,
    gpu: bool,
    read_write: bool,
    env: dict[str, str] | None = None,
) -> list[sess.PaneSpec]:
    return sess.layout(
        server_pane_argv(profile, host, read_write),
        agent_argv(variant) if variant else None,
        variant.parent if variant else profile.compose_dir,
        gpu_argv=gpu_argv(profile) if gpu else None,
        env=sess.pane_env(),
        server_title=f"CARLA server on {host}",
        agent_title=f"agent: {variant.name}" if variant else "agent",
        agent_env=env,
    )


# -- steps -------------------------------------------------------------------------------------------
def ensure_server(profile: Profile, host: str, say: Say, report_done: list[str]) -> dict:
    """Deploy when the box has nothing, start when stopped; the server's status after it."""
    from carla_launcher.deploy.runner import deploy
    from carla_launcher.server import control

    st = control.server_status(profile, host)
    if not st.get("deployed"):
        say(f"{host}: not deployed yet: deploying (this downloads the CARLA package once)")
        report = deploy(profile, on_line=say)
        failed = [h for h in report.hosts if not h.ok]
        if failed:
            raise LauncherError(f"deploy failed on {failed[0].host}: {failed[0].error}")
        report_done.append("deployed the server")
        st = control.server_status(profile, host)
    elif not st.get("running"):
        control.start(profile, host)
        report_done.append("started the server")
        st = control.server_status(profile, host)
    return st


def sync_variants(
    profile: Profile, address: str, port: int, say: Say
) -> tuple[list[Path], list[str]]:
    """Write the variants for this address (or, in the env mode, for any); (all variants, the
    ones written now)."""
    from carla_launcher.compose import service  # not for attach
    from carla_launcher.compose.sync import Target

    folder = profile.compose_dir
    if profile.compose.env_mode:
        target = Target(None, None, profile.compose.simulator, env=True)
    else:
        target = Target(address, port, profile.compose.simulator)
    report = service.sync_folder(folder, target, service.Mode.WRITE)
    variants, written = [], []
    for entry in report.entries:
        if entry.error is not None:
            say(f"warning: {entry.error}")
        for v in entry.variants:
            if v.error is not None:
                raise v.error
            if v.state is service.VariantState.HAND_EDITED:
                raise LauncherError(service.hand_edited_message(v.path, v.variant.source))
            if v.variant.source.parent == folder and v.path.name == variant_name(
                v.variant.source.name
            ):
                variants.append(v.path)
            if v.state is service.VariantState.WRITTEN:
                written.append(display_path(v.path))
    return sorted(set(variants)), written


def up(
    profile: Profile,
    compose: str | None,
    say: Say,
    *,
    gpu: bool = False,
    read_write: bool = False,
    progress: Callable[[float, str], None] | None = None,
) -> UpReport:
    from carla_launcher.server import control

    host = profile.remote.host
    assert host is not None
    done: list[str] = []
    st = ensure_server(profile, host, say, done)
    from carla_launcher.box.address import agent_address

    address = agent_address(profile, host)
    port = int(st.get("port") or profile.server.port)
    version = control.wait_started(profile, host, address, port, progress)
    report = UpReport(host, address, port, version, done=done)
    warn_shared_folder(profile, address, say)
    variants, written = sync_variants(profile, address, port, say)
    if written:
        done.append("wrote " + ", ".join(written))
    variant = choose_variant(profile.compose_dir, variants, compose)
    report.variant = variant
    server = sess.tmux_server()
    name = sess.session_name(profile.key)
    env = agent_env(address, port)
    # an env-mode variant stays the same when the address moves: its agent must restart anyway
    moved = remembered_env(profile) not in (None, env)
    restart = {"agent"} if display_path(variant) in written or moved else set()
    panes = session_panes(profile, host, variant, gpu=gpu, read_write=read_write, env=env)
    result = sess.ensure_session(server, name, panes, restart=restart)
    if result.created:
        done.append("opened panes: " + ", ".join(result.created))
    if result.respawned:
        done.append("restarted panes: " + ", ".join(result.respawned))
    remember_session(profile, variant, env)
    return report


def warn_shared_folder(profile: Profile, address: str, say: Say) -> None:
    """Two profiles with literal addresses on one compose folder overwrite each other's variants."""
    from carla_launcher.box.servers import known_server
    from carla_launcher.state import discovered_address
    from carla_launcher.targeting import sharing_warning, sibling_profiles

    def known(other: Profile) -> str | None:
        try:
            found = (
                other.remote.address
                or known_server(other, str(other.remote.host)).get("address")
                or discovered_address(other.key)
            )
        except InputError:
            return None  # another profile's bad state is said when that profile is used
        return str(found) if found else None

    line = sharing_warning(profile, address, [(o, known(o)) for o in sibling_profiles(profile)])
    if line:
        say(f"warning: {line}")


def attach_session(
    profile: Profile, compose: str | None, *, gpu: bool, read_write: bool
) -> sess.EnsureResult:
    """Build (or complete) the session without deploying or syncing anything."""
    host = profile.remote.host
    assert host is not None
    variant = remembered_variant(profile)
    if variant is None or compose:
        from carla_launcher.compose.discover import find_entries

        folder = profile.compose_dir
        variants = [
            p for e in find_entries(folder) if (p := e.with_name(variant_name(e.name))).is_file()
        ]
        variant = choose_variant(folder, variants, compose) if variants else None
    env = (remembered_env(profile) or _known_env(profile, host)) if variant else None
    server = sess.tmux_server()
    return sess.ensure_session(
        server,
        sess.session_name(profile.key),
        session_panes(profile, host, variant, gpu=gpu, read_write=read_write, env=env),
    )


def known_env(profile: Profile, host: str | None = None) -> dict[str, str]:
    """CARLA_LAUNCH_HOST/PORT as `up` finds them, without deploying anything: remote.address,
    else the remembered or discovered address; the port the last deploy recorded (it moves on
    a busy box), else server.port."""
    from carla_launcher.box.address import agent_address
    from carla_launcher.box.servers import known_server

    host = host or profile.remote.host
    assert host is not None
    port = known_server(profile, host).get("port")
    port = port if isinstance(port, int) and 1 <= port <= 65535 else profile.server.port
    return agent_env(agent_address(profile, host), port)


def _known_env(profile: Profile, host: str) -> dict[str, str]:
    """known_env, or none when it cannot be found: an env-mode agent then says itself that
    CARLA_LAUNCH_HOST is not set (attach must not fail for the agent's sake)."""
    try:
        return known_env(profile, host)
    except LauncherError:
        return {}


def compose_environ(profile: Profile) -> dict[str, str]:
    """The environment for `docker compose -f VARIANT ...` of what `up` started (down, ps):
    an env-mode variant does not even load without CARLA_LAUNCH_HOST."""
    return {**os.environ, **(remembered_env(profile) or {})}


def down(profile: Profile, stop_server: bool, say: Say) -> list[str]:
    """Agent containers down, local session closed; with stop_server the remote server too."""
    done = []
    variant = remembered_variant(profile)
    if variant is not None and variant.is_file():
        proc = subprocess.run(
            ["docker", "compose", "-f", str(variant), "down"],
            capture_output=True,
            text=True,
            cwd=variant.parent,
            env=compose_environ(profile),
        )
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            say(
                f"warning: docker compose down: {lines[-1] if lines else f'exit status {proc.returncode}'}"
            )
        else:
            done.append(f"agent containers of {variant.name} removed")
    if sess.kill_session(sess.tmux_server(), sess.session_name(profile.key)):
        done.append("local session closed")
    if stop_server:
        from carla_launcher.server import control

        for host in profile.remote.hosts:
            if control.stop(profile, host):
                done.append(f"server on {host} stopped")
    forget_session(profile)
    return done


# -- what up left behind (for down and status) -----------------------------------------------------
def remember_session(profile: Profile, variant: Path, env: dict[str, str] | None = None) -> None:
    data = read_json(SESSIONS_STATE)
    data[str(profile.path)] = {
        "variant": str(variant),
        "session": sess.session_name(profile.key),
        "env": env or {},
    }
    write_json(SESSIONS_STATE, data)


def forget_session(profile: Profile) -> None:
    data = read_json(SESSIONS_STATE)
    if data.pop(str(profile.path), None) is not None:
        write_json(SESSIONS_STATE, data)


def remembered_env(profile: Profile) -> dict[str, str] | None:
    """CARLA_LAUNCH_HOST/PORT that `up` gave the agent (None: nothing remembered)."""
    from carla_launcher.netaddr import address_problem

    entry = read_json(SESSIONS_STATE).get(str(profile.path))
    env = entry.get("env") if isinstance(entry, dict) else None
    if not isinstance(env, dict) or not {ENV_HOST, ENV_PORT} <= set(env):
        return None
    host, port = env[ENV_HOST], env[ENV_PORT]
    if not isinstance(host, str) or address_problem(host) or not str(port).isdigit():
        return None  # not what we wrote: find it again rather than pass it on
    return agent_env(host, int(port))


def remembered_variant(profile: Profile) -> Path | None:
    entry = read_json(SESSIONS_STATE).get(str(profile.path))
    if isinstance(entry, dict) and entry.get("variant"):
        return Path(entry["variant"])
    return None
