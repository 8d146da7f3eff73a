"""Finding a profile and reading it into typed objects, validated by the table of `fields.py`:
every error is one line naming the file, the line and the field (exit code 2)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from carla_launcher.errors import InputError
from carla_launcher.fieldreader import Fields, item_line
from carla_launcher.netaddr import address_problem, describe
from carla_launcher.profile.fields import (
    COMPOSE,
    PACKAGE,
    PATH_REFUSED,
    REMOTE,
    SBATCH_OURS,
    SERVER,
    SLURM,
    TOKEN_REFUSED,
    Field,
    Section,
)

PROFILE_DIR = "profiles"
DEFAULT_PROFILE = "default"
SUFFIXES = (".yaml", ".yml")
ADDRESS_MODES = COMPOSE.field("address").choices
_URL = PACKAGE.field("url")


# The objects carry no defaults of their own: every value comes from the file or from the
# table in fields.py (so a default is written once).
@dataclass(frozen=True)
class Package:
    url: str | None  # http(s):// URL or a local path (uploaded)
    sha256: str | None
    root: str


@dataclass(frozen=True)
class Slurm:
    """server.slurm: the sbatch options of each server's job (server.mode: slurm)."""

    jobs: int  # how many servers: one job each
    partition: str | None
    account: str | None
    time: str | None
    gres: str
    queue_timeout: int  # seconds to wait for a queued job to run (it stays queued after)
    sbatch: tuple[str, ...]  # more options, one #SBATCH line each


@dataclass(frozen=True)
class Remote:
    hosts: tuple[str, ...]
    connector: str  # ssh | local
    user: str | None
    port: int | None
    identity_file: str | None
    jump: str | None  # ProxyJump
    address: str | None  # what agents connect to; None = discover
    accept_new_host_key: bool  # strict host key checking unless this says otherwise
    ssh_config: str | None  # an ssh_config file instead of ~/.ssh/config
    known_hosts: str | None  # a known_hosts file instead of ~/.ssh/known_hosts
    connect_timeout: int  # seconds, for every SSH connection we open
    # True: agents reach the servers through SSH tunnels; "auto": when the address does not
    # answer on the world port from here (box/tunnel.py decides); False: at the address
    tunnel: bool | Literal["auto"]

    @property
    def host(self) -> str | None:
        return self.hosts[0] if self.hosts else None


@dataclass(frozen=True)
class Server:
    mode: str  # package | compose | slurm
    package: Package
    slurm: Slurm
    args: tuple[str, ...]
    port: int
    restart: str  # no | on-failure | always
    tmux_session: str
    user: str  # the non-root user that runs the server when we log in as root
    gpu: int | None  # -graphicsadapter
    gpus: tuple[int, ...] | str | None  # one server per GPU: indexes, "all", or None (one)
    settings: str | None  # a local CARLA settings .ini to upload
    os_packages: tuple[str, ...]  # what the box needs (Debian names)
    ready_timeout: int  # seconds the readiness probe waits; maps can take minutes


@dataclass(frozen=True)
class ComposeSettings:
    dir: str
    simulator: str | None
    file: str | None  # the compose file that holds the simulator (server.mode: compose)
    # literal: the address is written into the variants; env: they read CARLA_LAUNCH_HOST/PORT,
    # so one committed variant serves every box (see `carla-launch env P`)
    address: str

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
def profiles_in(folder: Path) -> list[Path]:
    """The profiles of a profiles/ folder (NAME.yaml, NAME.yml), sorted; none if unreadable."""
    try:
        return sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())
    except OSError:
        return []


def default_profile(found: list[Path]) -> Path | None:
    """The one rule of every command given no profile: the only profile, else `default`."""
    if len(found) == 1:
        return found[0]
    return next((p for p in found if p.stem == DEFAULT_PROFILE), None)


def find_profile(ref: str | None, start: Path | None = None) -> Path:
    """A name (`profiles/NAME.yaml` from here upwards) or a path; None: `default_profile`."""
    start = (start or Path.cwd()).absolute()
    if ref and (ref.endswith(SUFFIXES) or "/" in ref):
        p = Path(ref).expanduser()
        if not p.is_file():
            raise InputError(p, None, "profile file not found")
        return p
    for folder in (start, *start.parents):
        pdir = folder / PROFILE_DIR
        if not pdir.is_dir():
            continue
        found = profiles_in(pdir)
        names = ", ".join(p.stem for p in found) or "none"
        if ref:
            named = next((p for p in found if p.stem == ref), None)
            if named is None:
                raise InputError(pdir, None, f"no profile named {ref!r} (profiles here: {names})")
            return named
        chosen = default_profile(found)
        if chosen is None:
            why = "no profiles" if not found else f"{len(found)} profiles, none named default"
            hint = "write one with `carla-launch init`" if not found else "name one"
            raise InputError(pdir, None, f"{why}: {hint} (profiles here: {names})")
        return chosen
    what = f"profile {ref!r}" if ref else "a profiles/ folder"
    raise InputError(
        None,
        None,
        f"{what} not found in {start} or any folder above it; `carla-launch init` writes one",
    )


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
    compose = ComposeSettings(**_section(top.sub("compose"), COMPOSE))
    remote = _slurm_remote(top, remote, server)
    top.done()
    return Profile(
        name=path.stem, path=path.absolute(), remote=remote, server=server, compose=compose
    )


def _remote(r: Fields) -> Remote:
    """`remote:`: where the box is and how SSH reaches it."""
    v = _section(r, REMOTE)
    hosts = v.pop("host") or (("localhost",) if v["connector"] == "local" else ())
    if not hosts:
        raise InputError(
            r.path,
            r.line("host"),
            "is required (an ssh host, alias or list of them)",
            "remote.host",
        )
    address = v["address"]
    if address is not None and (problem := address_problem(address)):  # data, never code
        hint = "; write null to discover it" if problem == "empty" else ""
        raise r.err("address", describe(address, problem) + hint)
    if v["tunnel"] is not False and v["connector"] == "local":
        raise r.err(
            "tunnel", "connector: local runs the server here, with nothing to tunnel to; remove it"
        )
    return Remote(hosts=hosts, **v)


def _server(s: Fields) -> Server:
    """`server:`: how CARLA is installed and run on the box. `gpu` and `gpus` both name GPUs:
    one of them, else it is not clear which server gets which GPU."""
    server = Server(**_section(s, SERVER))
    if server.gpu is not None and server.gpus is not None:
        raise s.err("gpus", "give server.gpu (one server) or server.gpus (one per GPU), not both")
    if server.gpus is not None and server.mode == "compose":
        raise s.err("gpus", "server.mode: compose runs one server; remove server.gpus")
    if server.mode == "slurm":
        for key in ("gpu", "gpus"):
            if getattr(server, key) is not None:
                raise s.err(
                    key,
                    "server.mode: slurm lets Slurm pick each server's GPU; remove it (several "
                    "servers: server.slurm.jobs)",
                )
        _refuse_our_sbatch(s.sub("slurm"), server.slurm)
    return server


def _refuse_our_sbatch(f: Fields, slurm: Slurm) -> None:
    """An sbatch option carla-launch sets itself (the job's name, its output) is refused: the
    loop finds, logs and cancels its jobs by them."""
    seq = f.get("sbatch", CommentedSeq, None)
    if seq is None:
        return
    for i, option in enumerate(slurm.sbatch):
        name = _sbatch_option(option)
        if name is not None:
            raise InputError(
                f.path,
                item_line(seq, i, f.line("sbatch")),
                f"{name} is carla-launch's to set: it names each job, sends its output to the "
                "server's log and follows it on this cluster (by name, with squeue and scancel); "
                "remove it",
                f"{f.where}.sbatch[{i}]",
            )


def _sbatch_option(option: str) -> str | None:
    """Which of ours (`SBATCH_OURS`) an sbatch option is, as getopt reads it: `-Jname` and
    `-J name` are -J, `--out=x` is --output (a long option may be cut short); None: not ours.

    >>> _sbatch_option("-Jmine"), _sbatch_option("--out=x.log"), _sbatch_option("--qos=high")
    ('-J', '--output', None)
    """
    if option.startswith("--"):
        name = option.split("=", 1)[0].split()[0]
        longs = [o for o in SBATCH_OURS if o.startswith("--")]
        found = [o for o in longs if o == name or (len(name) > 3 and o.startswith(name))]
        return found[0] if found else None
    short = option[:2]
    return short if short in SBATCH_OURS else None


def _slurm_remote(top: Fields, remote: Remote, server: Server) -> Remote:
    """server.mode: slurm reaches its compute nodes through the login node: always a tunnel,
    from one login node (a `remote.tunnel: false` is refused, not ignored)."""
    if server.mode != "slurm":
        return remote
    r = top.sub("remote")
    if remote.connector == "local":
        raise r.err("connector", "server.mode: slurm needs the login node over ssh: remove it")
    if len(remote.hosts) > 1:
        raise r.err("host", "server.mode: slurm takes one login node as remote.host, not a list")
    if remote.tunnel is not True and r.get("tunnel", object) is not None:
        raise r.err(
            "tunnel",
            "server.mode: slurm always reaches its compute nodes through an SSH tunnel via the "
            "login node; remove remote.tunnel",
        )
    return dataclasses.replace(remote, tunnel=True)


def _section(f: Fields, section: Section) -> dict[str, Any]:
    """Every field of `section` read from `f` by the table (nested sections too); unknown keys
    are refused."""
    values: dict[str, Any] = {}
    for spec in section.fields:
        if isinstance(spec, Section):
            sub = _section(f.sub(spec.key), spec)
            values[spec.key] = (
                Package(**sub) if spec is PACKAGE else Slurm(**sub) if spec is SLURM else sub
            )
        else:
            values[spec.key] = _value(f, spec)
    f.done()
    return values


def _value(f: Fields, spec: Field) -> Any:
    """One field's value, or its default when missing or null; an InputError when it breaks the
    table's rule (type, choices, range, pattern)."""
    key = spec.key
    if spec.kind == "bool":
        return f.get(key, bool, spec.default)
    if spec.kind == "int":
        number = f.get(key, int)
        if number is None:
            return spec.default
        low, high = spec.minimum, spec.maximum
        if (low is not None and number < low) or (high is not None and number > high):
            raise f.err(key, spec.message.format(value=number))
        return number
    if spec.kind == "list":
        return _items(f, spec)
    if spec.kind == "gpus":
        return _gpus(f, spec)
    if spec.kind == "switch":
        return _switch(f, spec)
    if spec.kind == "hosts":
        raw = f.get(key, (str, CommentedSeq))
        if isinstance(raw, CommentedSeq):
            return tuple(_text(f, spec, h, i, raw) for i, h in enumerate(raw))
        return (_text(f, spec, raw),) if raw else ()
    if spec.choices:
        return f.choice(key, spec.choices, str(spec.default))
    value = f.get(key, str, spec.default)
    return None if value is None else _text(f, spec, value)


def _gpus(f: Fields, spec: Field) -> tuple[int, ...] | str | None:
    """`all`, or a non-empty list of distinct GPU indexes (None: one server, `server.gpu`)."""
    raw = f.get(spec.key, (str, CommentedSeq))
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw.strip().lower() == "all":
            return "all"
        raise f.err(spec.key, spec.message.format(value=repr(raw)))
    found: list[int] = []
    for i, item in enumerate(raw):
        ok = isinstance(item, int) and not isinstance(item, bool) and item >= 0
        if not ok or item in found:
            why = f"GPU {item} is listed twice" if ok else spec.message.format(value=repr(item))
            raise InputError(
                f.path, item_line(raw, i, f.line(spec.key)), why, f"{f.where}.{spec.key}[{i}]"
            )
        found.append(item)
    if not found:
        raise f.err(spec.key, spec.message.format(value="[]") + "; null: one server")
    return tuple(found)


def _switch(f: Fields, spec: Field) -> bool | str:
    """true, false or auto (YAML's booleans, or the word); null: the default."""
    raw = f.get(spec.key, object)
    if raw is None:
        default: bool | str = spec.default  # type: ignore[assignment]  # a switch's default
        return default
    if isinstance(raw, bool) or raw == "auto":
        return raw
    raise f.err(spec.key, spec.message.format(value=raw))


def _items(f: Fields, spec: Field) -> tuple[str, ...]:
    seq = f.get(spec.key, CommentedSeq, None)
    if seq is None:
        default: tuple[str, ...] = spec.default  # type: ignore[assignment]  # a list's default
        return default
    return tuple(_text(f, spec, item, i, seq) for i, item in enumerate(seq))


def _text(f: Fields, spec: Field, value: object, index: int | None = None, seq: Any = None) -> str:
    """A text value (or list item) checked against the field's pattern; the error names what
    breaks a data rule (a quote, a newline, a leading '-') when that is why."""
    field = f"{f.where}.{spec.key}" if f.where else spec.key
    line = f.line(spec.key)
    if index is not None:
        field, line = f"{field}[{index}]", item_line(seq, index, line)
    if isinstance(value, (CommentedMap, CommentedSeq)) or value is None or isinstance(value, bool):
        raise InputError(f.path, line, f"must be text, not {value!r}", field)
    text = str(value)
    if spec is _URL and _scheme(text) == "file":
        raise InputError(
            f.path,
            line,
            "file:// URLs are not supported: name the local path instead (it is uploaded)",
            field,
        )
    if spec.pattern is None or re.fullmatch(spec.pattern, text):
        return text
    if spec.kind == "path" and (unsafe := _unsafe(text, PATH_REFUSED)):
        message = f"{unsafe} in a path is refused (it would be read as ssh_config or shell syntax)"
        raise InputError(f.path, line, f"{message}: {text!r}", field)
    message = spec.message.format(value=text) if spec.message else f"not allowed: {text!r}"
    if spec.kind in ("host", "hosts"):
        unsafe = "a leading '-'" if text.startswith("-") else _unsafe(text, TOKEN_REFUSED)
        message += f" ({unsafe} is refused)" if unsafe else ""
    raise InputError(f.path, line, message, field)


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _unsafe(text: str, refused: str) -> str | None:
    """What in `text` a data rule refuses, in words: "a newline", "a quote", ... or None."""
    found = re.search(f"[{refused}]", text)
    if found is None:
        return None
    c = found.group()
    names = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\\": "a backslash"}
    if c in names:
        return names[c]
    if c in "\"'":
        return "a quote"
    return "a space" if c.isspace() and c.isprintable() else f"a control character ({c!r})"
