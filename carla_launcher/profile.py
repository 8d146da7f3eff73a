"""Profiles (`profiles/NAME.yaml`): where the CARLA server runs and how. Loaded into typed,
validated objects; every error names the file, the line and the field."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from carla_launcher.errors import InputError

PROFILE_DIR = "profiles"
DEFAULT_PROFILE = "default"


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
    accept_new_host_key: bool = False

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


@dataclass(frozen=True)
class ComposeSettings:
    dir: str = "build"
    simulator: str | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    remote: Remote
    server: Server
    compose: ComposeSettings

    @property
    def compose_dir(self) -> Path:
        """The compose folder; relative paths count from the folder that holds profiles/."""
        d = Path(self.compose.dir).expanduser()
        if d.is_absolute():
            return d
        base = self.path.parent.parent if self.path.parent.name == PROFILE_DIR else self.path.parent
        return base / d


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
    return parse_profile(find_profile(ref, start))


# -- parsing and validation ------------------------------------------------------------------------
class _Fields:
    """Reads one mapping of a profile, remembering lines for errors and refusing unknown keys."""

    def __init__(self, path: Path, node: Any, where: str, line: int | None) -> None:
        self.path, self.where = path, where
        if node is None:
            node = CommentedMap()
        if not isinstance(node, CommentedMap):
            raise InputError(path, line, "must be a mapping", where)
        self.node = node
        self.seen: set[str] = set()

    def line(self, key: str) -> int | None:
        try:
            return self.node.lc.data[key][0] + 1
        except (KeyError, AttributeError):
            return self.node.lc.line + 1 if hasattr(self.node, "lc") else None

    def err(self, key: str, message: str) -> InputError:
        return InputError(self.path, self.line(key), message, f"{self.where}.{key}" if self.where else key)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.seen.add(key)
        if key not in self.node or self.node[key] is None:
            return default
        value = self.node[key]
        if kind is int and isinstance(value, bool):
            raise self.err(key, f"must be a whole number, not {value!r}")
        if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            names = names.replace("str", "text").replace("int", "whole number").replace("bool", "true/false")
            raise self.err(key, f"must be {names}, not {value!r}")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in options:
            raise self.err(key, f"must be one of {', '.join(options)}, not {value!r}")
        return value

    def port(self, key: str, default: int | None) -> int | None:
        value = self.get(key, int, default)
        if value is not None and not 1 <= value <= 65535:
            raise self.err(key, f"must be a port number (1-65535), not {value}")
        return value

    def sub(self, key: str) -> _Fields:
        self.seen.add(key)
        return _Fields(
            self.path, self.node.get(key), f"{self.where}.{key}" if self.where else key, self.line(key)
        )

    def done(self) -> None:
        for key in self.node:
            if key not in self.seen:
                known = ", ".join(sorted(self.seen))
                raise self.err(str(key), f"unknown field (known here: {known})")


def parse_profile(path: Path) -> Profile:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(path, None, f"cannot read: {e.strerror}") from None
    try:
        doc = YAML().load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise InputError(path, mark.line + 1 if mark else None, f"invalid YAML: {e.problem}") from None
    top = _Fields(path, doc, "", 1)
    r = top.sub("remote")
    connector = r.choice("connector", ("ssh", "local"), "ssh")
    hosts_raw = r.get("host", (str, CommentedSeq))
    if isinstance(hosts_raw, CommentedSeq):
        hosts = tuple(str(h) for h in hosts_raw)
    else:
        hosts = (hosts_raw,) if hosts_raw else ()
    if connector == "local" and not hosts:
        hosts = ("localhost",)
    if not hosts:
        raise InputError(path, r.line("host"), "is required (an ssh host, alias or list of them)", "remote.host")
    for h in hosts:
        if not h or any(c.isspace() for c in h) or h.startswith("-"):
            raise r.err("host", f"not a host name: {h!r}")
    remote = Remote(
        hosts=hosts,
        user=r.get("user", str),
        port=r.port("port", None),
        identity_file=r.get("identity_file", str),
        address=r.get("address", str),
        connector=connector,
        jump=r.get("jump", str),
        accept_new_host_key=r.get("accept_new_host_key", bool, False),
    )
    r.done()

    s = top.sub("server")
    p = s.sub("package")
    sha = p.get("sha256", str)
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha)):
        raise p.err("sha256", "must be 64 hex digits")
    package = Package(url=p.get("url", str), sha256=sha.lower() if sha else None,
                      root=p.get("root", str, Package.root))
    p.done()
    args = s.get("args", CommentedSeq, None)
    server = Server(
        mode=s.choice("mode", ("package", "compose"), "package"),
        package=package,
        args=tuple(str(a) for a in args) if args is not None else Server.args,
        port=s.port("port", 2000) or 2000,
        restart=s.choice("restart", ("no", "on-failure", "always"), "on-failure"),
        tmux_session=s.get("tmux_session", str, "carla"),
        user=s.get("user", str, "carla"),
        gpu=s.get("gpu", int),
        settings=s.get("settings", str),
    )
    s.done()
    if server.port > 65533:
        raise s.err("port", "must leave room for port+1 and port+2 (at most 65533)")

    c = top.sub("compose")
    compose = ComposeSettings(dir=c.get("dir", str, "build"), simulator=c.get("simulator", str))
    c.done()
    top.done()
    return Profile(name=path.stem, path=path.absolute(), remote=remote, server=server, compose=compose)
