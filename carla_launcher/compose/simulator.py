"""Which service is the CARLA simulator: the strongest evidence first (DESIGN.md).

Names and images mislead (a `carla-ros-bridge` is not a server; an agent may mention
`CarlaUE4`), so what the other services use as their CARLA host counts most, then what a
service runs, then its image, then its ports. A service that names another as its CARLA host is
a client and never a candidate. Pure functions over the resolved model of `project.py`.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from carla_launcher.compose.hosts import is_host_var
from carla_launcher.compose.project import Service
from carla_launcher.compose.reach import own_names
from carla_launcher.errors import InputError

# Kinds of evidence, strongest first; a level groups the kinds that make a candidate there.
NAMED, RUNS, REPO, CONTAINS, PORT = "named", "runs", "repo", "contains", "port"
KINDS = (NAMED, RUNS, REPO, CONTAINS, PORT)
LEVELS = ((NAMED,), (RUNS,), (REPO,), (CONTAINS, PORT))
WORLD_PORT = 2000
Evidence = dict[str, str]  # kind -> what was seen, for the refusal message

_HOST_ARG = re.compile(
    r"(?:(?<![\w-])--(?:host|carla-host|carla_host|carla-ip|carla_ip|server-host|sim-host"
    r"|carla-server|carla-address)(?:=|\s+)|(?<![\w.-])(?:host|carla_host|carla_ip|carla_server):=)"
    r"(?P<q>[\"']?)(?P<val>[^\s\"';&|)]+)(?P=q)"
)
_ASSIGN = re.compile(r"(?<![\w$-])(?P<name>[A-Za-z_]\w*)=(?P<q>[\"']?)(?P<val>[^\s\"';&|)]*)(?P=q)")
_DEFAULT = re.compile(r"^\$\{\w+:?[-=](?P<d>[^{}]*)\}$")
_BINARIES = {
    "carlaue4.sh",
    "carlaunreal.sh",
    "carlaue4-linux-shipping",
    "carlaunreal-linux-shipping",
}
# Programs that run the next word as a program; those in _TAKES_VALUE first take one argument.
_WRAPPERS = {
    "exec",
    "sudo",
    "su",
    "gosu",
    "su-exec",
    "runuser",
    "nohup",
    "env",
    "bash",
    "sh",
    "dash",
    "zsh",
    "ash",
    "timeout",
    "xvfb-run",
    "vglrun",
    "nice",
    "ionice",
    "taskset",
    "stdbuf",
    "time",
    "unbuffer",
    "setsid",
    "tini",
    "dumb-init",
    "eval",
    "command",
    "chrt",
    "primusrun",
    "optirun",
}
_TAKES_VALUE = {"su", "gosu", "su-exec", "timeout", "taskset", "chrt"}
_KEYWORDS = {"then", "do", "else", "if", "while", "until", "{", "!"}
_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=\S*")


def find_simulator(
    entry: Path,
    services: dict[str, Service],
    wanted: str | None,
    required: bool,
    entry_line: int | None = None,
) -> Service | None:
    """`wanted` if given; else the one candidate of the strongest level that has any."""
    if wanted:
        if wanted in services:
            return services[wanted]
        if not required:
            return None
        names = ", ".join(sorted(services)) or "none"
        raise InputError(
            entry, entry_line, f"no service named {wanted!r} (services: {names})", "--simulator"
        )
    candidates = evidence(services)
    for level in LEVELS:
        found = [n for n, ev in candidates.items() if any(k in ev for k in level)]
        if len(found) == 1:
            return services[found[0]]
        if found:
            stronger = [n for n in found if _has_later(candidates[n], level)]
            if len(stronger) == 1:
                return services[stronger[0]]
            raise _ambiguous([services[n] for n in found], candidates)
    if required:
        raise InputError(
            entry,
            entry_line,
            "no simulator found (no service is named as the CARLA host by another, runs "
            f"CarlaUE4.sh/CarlaUnreal.sh, uses a carla image or publishes port {WORLD_PORT}); "
            "name it with --simulator NAME or the profile's compose.simulator",
        )
    return None


def evidence(services: dict[str, Service]) -> dict[str, Evidence]:
    """Every service that could be the simulator (clients left out), with what says so."""
    named = named_hosts(services)
    clients = {c for targets in named.values() for c in targets}
    out: dict[str, Evidence] = {}
    for name, svc in services.items():
        if name in clients:
            continue
        ev: Evidence = {}
        if named.get(name):
            ev[NAMED] = "named as CARLA host by " + ", ".join(sorted(named[name]))
        binary = runs_carla(svc)
        if binary:
            ev[RUNS] = f"runs {binary}"
        image = svc.image or ""
        if _repository(image) == "carla":
            ev[REPO] = f"image {image}"
        elif "carla" in image.lower():
            ev[CONTAINS] = f"image {image}"
        if any(_has_world_port(p) for p in svc.ports):
            ev[PORT] = f"publishes port {WORLD_PORT}"
        if ev:
            out[name] = ev
    return out


def _has_later(ev: Evidence, level: tuple[str, ...]) -> bool:
    """Whether a candidate has evidence beyond what made it one (used to break ties)."""
    first = min(KINDS.index(k) for k in ev if k in level)
    return any(KINDS.index(k) > first for k in ev)


def _ambiguous(found: list[Service], candidates: dict[str, Evidence]) -> InputError:
    where = ", ".join(f"{s.name} ({_loc(s)})" for s in found)
    why = "; ".join(f"{s.name}: " + ", ".join(candidates[s.name].values()) for s in found)
    first = found[0]
    return InputError(
        first.file,
        first.line,
        f"several candidate simulators: {where} [{why}]; "
        "choose one with --simulator NAME or the profile's compose.simulator",
    )


def _loc(s: Service) -> str:
    return f"{s.file.name}:{s.line}" if s.line else s.file.name


# -- who names whom as the CARLA host ---------------------------------------------------------
def named_hosts(services: dict[str, Service]) -> dict[str, set[str]]:
    """Service -> the other services that name it as their CARLA host."""
    names = {n: {x.casefold() for x in own_names(s)} for n, s in services.items()}
    for svc in services.values():
        for link in svc.links:
            target, _, alias = link.partition(":")
            if target in names and alias:
                names[target].add(alias.casefold())
    out: dict[str, set[str]] = {}
    for client in services.values():
        for value in host_values(client):
            for target in _resolve(_host_of(value), names):
                if target != client.name:
                    out.setdefault(target, set()).add(client.name)
    return out


def host_values(svc: Service) -> list[str]:
    """What a service gives as its CARLA host: host variables, --host flags, `host:=` args."""
    values = [v for k, v in svc.environment.items() if v and is_host_var(k)]
    for field in (svc.entrypoint, svc.command):
        text = " ".join(field) if isinstance(field, list) else field or ""
        values += [m["val"] for m in _HOST_ARG.finditer(text)]
        values += [m["val"] for m in _ASSIGN.finditer(text) if is_host_var(m["name"])]
    return values


def _host_of(value: str) -> str:
    """The host part of `X`, `${VAR:-X}`, `X:2000`, `http://X:2000/`, `[fd00::2]:2000`."""
    v = value.strip().strip("\"'")
    m = _DEFAULT.match(v)
    if m:
        v = m["d"].strip().strip("\"'")
    v = re.sub(r"^[A-Za-z][\w+.-]*://", "", v)
    if v.startswith("["):
        return v[1:].split("]", 1)[0].casefold()
    if re.fullmatch(r"[0-9A-Fa-f:.]+", v) and v.count(":") > 1:
        return v.casefold()  # a bare IPv6 address
    return re.sub(r":\d+$", "", v.split("/", 1)[0]).casefold()


def _resolve(host: str, names: dict[str, set[str]]) -> list[str]:
    """The services a host name means: by their names, else compose's container names."""
    if not host:
        return []
    exact = [n for n, own in names.items() if host in own]
    if exact:
        return exact
    made = [
        n for n in names if re.fullmatch(rf".+(?:-{re.escape(n)}-|_{re.escape(n)}_)\d+", host, re.I)
    ]
    return sorted(made, key=len, reverse=True)[:1]


# -- what a service runs ----------------------------------------------------------------------
def runs_carla(svc: Service) -> str | None:
    """The CARLA binary that the service's own entrypoint or command runs as a program."""
    for field in (svc.entrypoint, svc.command):
        text = shlex.join(field) if isinstance(field, list) else field or ""
        found = _runs_in(text)
        if found:
            return found
    return None


def _runs_in(script: str) -> str | None:
    """Not `pkill -f CarlaUE4`, `test -f .../CarlaUE4.sh` or `--carla-path .../CarlaUE4.sh`."""
    text = script.replace("\\\n", " ").replace("\n", " ; ")
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        tokens = text.split()
    prefix: list[str] = []
    for tok in tokens:
        if (tok and set(tok) <= set("();|&")) or tok in _KEYWORDS:
            prefix = []
            continue
        if any(c.isspace() for c in tok) and (not prefix or re.fullmatch(r"-\w*c", prefix[-1])):
            found = _runs_in(tok)  # a script: `sh -c "..."`, or one exec-form item
            if found:
                return found
        base = tok.rsplit("/", 1)[-1]
        if base.casefold() in _BINARIES and "=" not in tok and _launches(prefix):
            return base
        prefix.append(tok)
    return None


def _launches(prefix: list[str]) -> bool:
    """Whether the words before a program run it: nothing, assignments, or wrappers."""
    words = list(prefix)
    while words and _ASSIGNMENT.fullmatch(words[0]):
        words.pop(0)
    if not words:
        return True
    if words[0].rsplit("/", 1)[-1] not in _WRAPPERS:
        return False
    value_ok = words[0].rsplit("/", 1)[-1] in _TAKES_VALUE
    for w in words[1:]:
        base = w.rsplit("/", 1)[-1]
        if base in _WRAPPERS or w.startswith("-") or _ASSIGNMENT.fullmatch(w):
            value_ok = w.startswith("-") or base in _TAKES_VALUE
        elif value_ok:
            value_ok = False
        else:
            return False
    return True


# -- image and ports --------------------------------------------------------------------------
def _repository(image: str) -> str:
    """`ghcr.io/org/carla:0.9.14` -> `carla`; `localhost:5000/carla@sha256:...` -> `carla`."""
    return image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0].casefold()


def _has_world_port(port: str) -> bool:
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", port.strip())
    return m is not None and int(m[1]) <= WORLD_PORT <= int(m[2] or m[1])
