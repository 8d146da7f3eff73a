"""Profiles (`profiles/NAME.yaml`): where the CARLA server runs and how. Loaded into typed,
validated objects; every error names the file, the line and the field."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from carla_launcher.errors import InputError
from carla_launcher.fieldreader import Fields, item_line
from carla_launcher.netaddr import address_problem, describe

PROFILE_DIR = "profiles"
DEFAULT_PROFILE = "default"


# OS packages a CARLA server needs on a fresh Debian/Ubuntu box: libomp5 since 0.9.12
# (carla-simulator/carla#4498, #4714), xdg-user-dirs against `xdg-user-dir: not found`
# (#8840, #4687), libvulkan1 for the renderer.
DEFAULT_OS_PACKAGES: tuple[str, ...] = (
    "tmux",
    "curl",
    "xz-utils",
    "unzip",
    "libomp5",
    "xdg-user-dirs",
    "libvulkan1",
)

_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_SESSION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")


@dataclass(frozen=True)
class Package:
    url: str | None = None  # http(s):// or file:// or a local path (uploaded)
    sha256: str | None = None
    root: str = "~/CARLA_Leaderboard_20"


@dataclass(frozen=True)
class Remote:
    hosts: tuple[str, ...] = ()
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    address: str | None = None  # what agents connect to; None = discover
    connector: str = "ssh"  # ssh | local
    jump: str | None = None  # ProxyJump
    accept_new_host_key: bool = False  # strict host key checking unless this says otherwise
    ssh_config: str | None = None  # an ssh_config file instead of ~/.ssh/config
    known_hosts: str | None = None  # a known_hosts file instead of ~/.ssh/known_hosts
    connect_timeout: int = 10  # seconds, for every SSH connection we open

    @property
    def host(self) -> str | None:
        return self.hosts[0] if self.hosts else None


@dataclass(frozen=True)
class Server:
    mode: str = "package"  # package | compose
    package: Package = field(default_factory=Package)
    args: tuple[str, ...] = ("-RenderOffScreen", "-nosound")
    port: int = 2000
    restart: str = "on-failure"  # no | on-failure | always
    tmux_session: str = "carla"
    user: str = "carla"  # the non-root user that runs the server when we log in as root
    gpu: int | None = None  # -graphicsadapter
    settings: str | None = None  # a local CARLA settings .ini to upload
    os_packages: tuple[str, ...] = DEFAULT_OS_PACKAGES  # what the box needs (Debian names)
    ready_timeout: int = 300  # seconds the readiness probe waits; maps can take minutes


ADDRESS_MODES = ("literal", "env")


@dataclass(frozen=True)
class ComposeSettings:
    dir: str = "build"
    simulator: str | None = None
    file: str | None = None  # the compose file that holds the simulator (server.mode: compose)
    # literal: the address is written into the variants; env: they read CARLA_LAUNCH_HOST/PORT,
    # so one committed variant serves every box (see `carla-launch env P`)
    address: str = "literal"

    @property
    def env_mode(self) -> bool:
        return self.address == "env"


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    remote: Remote
    server: Server
    compose: ComposeSettings

    @property
    def key(self) -> str:
        """Names state (addresses, servers, the tmux session) by this file, not its stem: two
        projects that both have profiles/default.yaml must not share what they remember."""
        digest = hashlib.sha256(str(self.path.absolute()).encode()).hexdigest()[:6]
        return f"{re.sub(r'[^A-Za-z0-9_-]', '_', self.name)}-{digest}"

    @property
    def base_dir(self) -> Path:
        """The project folder: the one that holds profiles/ (else the profile's own folder)."""
        return self.path.parent.parent if self.path.parent.name == PROFILE_DIR else self.path.parent

    def local_path(self, value: str) -> Path:
        """A local file named in the profile; relative paths count from the project folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def compose_dir(self) -> Path:
        """The compose folder; relative paths count from the folder that holds profiles/."""
        return self.local_path(self.compose.dir)


# -- finding profiles ---------------------------------------------------------------------------
def find_profile(ref: str | None, start: Path | None = None) -> Path:
    """A name (`profiles/NAME.yaml` from here upwards) or a path; None = the default profile."""
    start = (start or Path.cwd()).absolute()
    if ref and (ref.endswith((".yaml", ".yml")) or "/" in ref):
        p = Path(ref).expanduser()
        if not p.is_file():
            raise InputError(p, None, "profile file not found")
        return p
    for folder in (start, *start.parents):
        pdir = folder / PROFILE_DIR
        if not pdir.is_dir():
            continue
        if ref:
            for ext in (".yaml", ".yml"):
                if (pdir / f"{ref}{ext}").is_file():
                    return pdir / f"{ref}{ext}"
            names = ", ".join(sorted(p.stem for p in pdir.glob("*.y*ml"))) or "none"
            raise InputError(pdir, None, f"no profile named {ref!r} (profiles here: {names})")
        default = pdir / f"{DEFAULT_PROFILE}.yaml"
        if default.is_file():
            return default
        found = sorted(pdir.glob("*.y*ml"))
        if len(found) == 1:
            return found[0]
        names = ", ".join(p.stem for p in found) or "none"
        raise InputError(pdir, None, f"no default profile; name one (profiles here: {names})")
    what = f"profile {ref!r}" if ref else "a profiles/ folder"
    raise InputError(None, None, f"{what} not found in {start} or any folder above it")


def load_profile(ref: str | None, start: Path | None = None) -> Profile:
    """The profile a command names (see `find_profile`), read and validated."""
    return read_profile(find_profile(ref, start))


def read_profile(path: Path) -> Profile:
    """The profile in this file; unreadable or non-UTF-8 files are input errors too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(path, None, f"not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise InputError(path, None, f"cannot read: {e.strerror}") from None
    return parse_profile(text, path)


# -- parsing and validation ------------------------------------------------------------------------
def parse_profile(text: str, path: Path) -> Profile:
    """The profile in `text`. Pure: `path` is where the text lives (or will live); it names
    the profile, anchors its relative paths and is the file that errors name."""
    path = Path(path)
    try:
        doc = YAML().load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise InputError(
            path, mark.line + 1 if mark else None, f"invalid YAML: {e.problem}"
        ) from None
    except YAMLError as e:  # e.g. a control character (ReaderError)
        first = (str(e).strip().splitlines() or ["invalid YAML"])[0]
        raise InputError(path, None, f"invalid YAML: {first}") from None
    top = Fields(path, doc, "", 1)
    remote = _remote(top.sub("remote"))
    server = _server(top.sub("server"))
    compose = _compose(top.sub("compose"))
    top.done()
    return Profile(
        name=path.stem, path=path.absolute(), remote=remote, server=server, compose=compose
    )


def _remote(r: Fields) -> Remote:
    """`remote:`: where the box is and how SSH reaches it."""
    connector = r.choice("connector", ("ssh", "local"), "ssh")
    hosts_raw = r.get("host", (str, CommentedSeq))
    if isinstance(hosts_raw, CommentedSeq):
        hosts = tuple(str(h) for h in hosts_raw)
    else:
        hosts = (hosts_raw,) if hosts_raw else ()
    if connector == "local" and not hosts:
        hosts = ("localhost",)
    if not hosts:
        raise InputError(
            r.path,
            r.line("host"),
            "is required (an ssh host, alias or list of them)",
            "remote.host",
        )
    for h in hosts:
        if not h or any(c.isspace() for c in h) or h.startswith("-"):
            raise r.err("host", f"not a host name: {h!r}")
    user = r.get("user", str)
    if user is not None and not _USER_NAME.fullmatch(user):
        raise r.err("user", f"not a user name: {user!r}")
    jump = r.get("jump", str)
    if jump is not None and (
        not jump.strip() or any(c.isspace() for c in jump) or jump.startswith("-")
    ):
        raise r.err("jump", f"not an ssh jump host ([user@]host[:port][,...]): {jump!r}")
    address = r.get("address", str)
    if address is not None and (problem := address_problem(address)):  # data, never code
        hint = "; write null to discover it" if problem == "empty" else ""
        raise r.err("address", describe(address, problem) + hint)
    timeout = r.get("connect_timeout", int, 10)
    if not 1 <= timeout <= 600:
        raise r.err("connect_timeout", f"must be between 1 and 600 seconds, not {timeout}")
    remote = Remote(
        hosts=hosts,
        user=user,
        port=r.port("port", None),
        identity_file=r.get("identity_file", str),
        address=address,
        connector=connector,
        jump=jump,
        accept_new_host_key=r.get("accept_new_host_key", bool, False),
        ssh_config=r.get("ssh_config", str),
        known_hosts=r.get("known_hosts", str),
        connect_timeout=timeout,
    )
    r.done()
    return remote


def _server(s: Fields) -> Server:
    """`server:`: how CARLA is installed and run on the box."""
    p = s.sub("package")
    sha = p.get("sha256", str)
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha)):
        raise p.err("sha256", "must be 64 hex digits")
    url = p.get("url", str)
    if url is not None:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if (
            scheme not in ("", "http", "https", "file")
            or not url.strip()
            or any(c.isspace() for c in url)
        ):
            raise p.err(
                "url", f"must be an http(s):// or file:// URL or a local file path, not {url!r}"
            )
    root = p.get("root", str, Package.root)
    if not root.strip() or root.strip() in ("/", "~", "~/") or root.startswith("-") or "\n" in root:
        raise p.err("root", f"not a folder to install into: {root!r}")
    package = Package(url=url, sha256=sha.lower() if sha else None, root=root)
    p.done()
    args = s.get("args", CommentedSeq, None)
    if args is not None:
        for i, a in enumerate(args):
            if isinstance(a, (CommentedMap, CommentedSeq)) or a is None:
                raise InputError(
                    s.path,
                    item_line(args, i, s.line("args")),
                    f"must be text, not {a!r}",
                    f"server.args[{i}]",
                )
    server_user = s.get("user", str, "carla")
    if not _USER_NAME.fullmatch(server_user) or server_user == "root":
        raise s.err(
            "user", f"must be a non-root user name (CARLA refuses root), not {server_user!r}"
        )
    session = s.get("tmux_session", str, "carla")
    if not _SESSION_NAME.fullmatch(session):
        raise s.err("tmux_session", f"letters, digits, '-' and '_' only, not {session!r}")
    pkgs = s.get("os_packages", CommentedSeq, None)
    if pkgs is not None:
        for i, name in enumerate(pkgs):
            if not isinstance(name, str) or not _PACKAGE_NAME.fullmatch(name):
                raise InputError(
                    s.path,
                    item_line(pkgs, i, s.line("os_packages")),
                    f"not a package name: {name!r}",
                    f"server.os_packages[{i}]",
                )
    gpu = s.get("gpu", int)
    if gpu is not None and gpu < 0:
        raise s.err("gpu", f"must be a GPU index (0, 1, ...), not {gpu}")
    ready = s.get("ready_timeout", int, 300)
    if ready < 1:
        raise s.err("ready_timeout", f"must be at least 1 second, not {ready}")
    server = Server(
        mode=s.choice("mode", ("package", "compose"), "package"),
        package=package,
        args=tuple(str(a) for a in args) if args is not None else Server.args,
        port=s.port("port", 2000) or 2000,
        restart=s.choice("restart", ("no", "on-failure", "always"), "on-failure"),
        tmux_session=session,
        user=server_user,
        gpu=gpu,
        settings=s.get("settings", str),
        os_packages=tuple(pkgs) if pkgs is not None else DEFAULT_OS_PACKAGES,
        ready_timeout=ready,
    )
    s.done()
    if server.port > 65533:
        raise s.err("port", "must leave room for port+1 and port+2 (at most 65533)")
    return server


def _compose(c: Fields) -> ComposeSettings:
    """`compose:`: where the agent's compose files are and how variants get the address."""
    compose = ComposeSettings(
        dir=c.get("dir", str, "build"),
        simulator=c.get("simulator", str),
        file=c.get("file", str),
        address=c.choice("address", ADDRESS_MODES, "literal"),
    )
    c.done()
    return compose
