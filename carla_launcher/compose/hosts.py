"""Pure text rules: where a compose value names the simulator's host or port, and its new value.

Host names are replaced as whole tokens (`carla-simulator-logs` stays), never inside a
`${VAR}` name, never as a path component (`/opt/carla/` stays when the service is `carla`).
What replaces them is the address as that place needs it: bracketed for IPv6 in a URL or a
`host:port`, and in the env address mode a `${CARLA_LAUNCH_HOST:?...}` that compose fills in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from carla_launcher.netaddr import for_url

# The simulator's RPC (world) port as CARLA spells it on its command line.
WORLD_PORT_FLAG = re.compile(r"-(?:carla-rpc-port|world-port|carla-port|carla-world-port)[= ](\d+)")
DEFAULT_WORLD_PORT = 2000

# The env address mode: variants read the box's address and world port from these variables,
# which `up`/`attach` pass to docker compose and `carla-launch env P` prints.
ENV_HOST = "CARLA_LAUNCH_HOST"
ENV_PORT = "CARLA_LAUNCH_PORT"
ENV_URL_HOST = "CARLA_LAUNCH_URL_HOST"  # the host as a URL needs it: [fd00::2] for IPv6
#: Appended to each `container_name:` of an env-mode variant: one variant runs as several
#: compose projects (a profile per server, several profiles on one folder), and a fixed
#: container name would make the second `docker compose up` fail or take over the first's.
#: Unset (a variant run by hand) it is empty and the name is the source's.
ENV_SUFFIX = "CARLA_LAUNCH_SUFFIX"
ENV_SUFFIX_TEXT = "${" + ENV_SUFFIX + ":-}"
#: What env-mode variants add to `extra_hosts:` of the services that name the simulator: the
#: address may be this machine's end of an SSH tunnel (box/tunnel.py AGENT_HOST), which
#: containers reach as `host.docker.internal` (Docker >= 20.10 maps `host-gateway` to the
#: default bridge's gateway; Docker Desktop has the name already, and this entry agrees).
DOCKER_HOST_NAME = "host.docker.internal"
HOST_GATEWAY = DOCKER_HOST_NAME + ":host-gateway"
# No `: `, `,`, `#`, quotes or braces in the message: it lands in plain YAML scalars and flows.
_ENV_HINT = "run carla-launch up PROFILE or eval the output of carla-launch env PROFILE"
ENV_HOST_TEXT = "${" + ENV_HOST + ":?" + _ENV_HINT + "}"
ENV_URL_HOST_TEXT = "${" + ENV_URL_HOST + ":?" + _ENV_HINT + "}"

_HOST_WORDS = {"HOST", "HOSTNAME", "SERVER", "IP", "ADDR", "ADDRESS"}
_NOT_WORLD = {"TM", "TRAFFIC", "MANAGER", "STREAM", "STREAMING", "SECONDARY", "PRIMARY", "TMPORT"}
_HOST_FLAGS = (
    "--host",
    "--carla-host",
    "--carla_host",
    "--carla-ip",
    "--carla_ip",
    "--server-host",
    "--carla-server",
    "--carla-address",
    "--sim-host",
)
_PORT_FLAGS = (
    "--port",
    "--carla-port",
    "--carla_port",
    "--world-port",
    "--rpc-port",
    "--carla-rpc-port",
)
_ROS_HOST_ARGS = ("host", "carla_host", "carla_ip", "carla_server")
_ROS_PORT_ARGS = ("port", "carla_port")
_LOOPBACK = re.compile(
    r"^(localhost|127(\.\d{1,3}){3}|0\.0\.0\.0|::1|\[::1\]|host\.docker\.internal)$"
)
_LOOPBACK_TOKENS = (r"localhost", r"127\.0\.0\.1", r"0\.0\.0\.0", r"host\.docker\.internal")

# A token is a run of host-name characters; these may not touch it on either side.
_BEFORE = r"(?<![A-Za-z0-9_.\-])"
_AFTER = r"(?![A-Za-z0-9_\-]|\.[A-Za-z0-9])"
# `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}`, `${VAR:?message}`
_INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+?])([^${}]*))?\}")
# How a compose file may write the project name in a compose-made container name.
_PROJECT_VAR = (
    r"\$\{COMPOSE_PROJECT_NAME(?::?[-+?][^${}]*)?\}|\$COMPOSE_PROJECT_NAME(?![A-Za-z0-9_])"
)


class _Held:
    """Text a rule wrote, kept behind placeholders so that no later pass re-reads it, and put
    back at the end. Each user picks its own mark, so that holders nest."""

    def __init__(self, mark: str) -> None:
        self.mark = mark
        self.texts: list[str] = []

    def hold(self, text: str) -> str:
        self.texts.append(text)
        return f"{self.mark}{len(self.texts) - 1}{self.mark}"

    def restore(self, text: str) -> str:
        placeholder = re.escape(self.mark) + r"(\d+)" + re.escape(self.mark)
        return re.sub(placeholder, lambda m: self.texts[int(m.group(1))], text)


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^A-Za-z0-9]+", name.upper()) if w]


def is_host_var(name: str) -> bool:
    """CARLA_HOST, CARLA_SIM_HOST, CARLA_SERVER_IP: the first word is CARLA (not CARLAVIZ_...)."""
    w = _words(name)
    return len(w) >= 2 and w[0] == "CARLA" and w[-1] in _HOST_WORDS and not _NOT_WORLD & set(w)


def is_port_var(name: str) -> bool:
    """CARLA_PORT, CARLA_WORLD_PORT; not CARLA_TM_PORT or CARLA_STREAMING_PORT."""
    w = _words(name)
    return len(w) >= 2 and w[0] == "CARLA" and w[-1] == "PORT" and not _NOT_WORLD & set(w)


def world_port_of(command: str) -> int:
    """The world port a simulator command line asks for (CARLA's default is 2000)."""
    m = WORLD_PORT_FLAG.search(command)
    return int(m.group(1)) if m else DEFAULT_WORLD_PORT


def name_pattern(name: str) -> str:
    """Regex fragment for a host name; `*` stands for compose's container number."""
    return r"\d+".join(re.escape(part) for part in name.split("*"))


@dataclass(frozen=True)
class Rewrite:
    """What to put where the simulator was: its address (and port) on the remote box."""

    address: str  # a validated literal, or ENV_HOST_TEXT in the env address mode
    host_names: tuple[str, ...]  # service name, hostname, container_name, aliases, static IPs
    world_port: int = DEFAULT_WORLD_PORT
    port: int | None = None  # the remote server's world port, when it differs
    simulator: str = ""  # the service name, for compose-made container names
    project: str = ""  # the compose project name, likewise
    env: bool = False  # env address mode: the port too becomes a variable
    dotenv: tuple[tuple[str, str], ...] = ()  # the project's `.env`: what `${VAR}` turns into

    @classmethod
    def for_env(
        cls,
        host_names: tuple[str, ...],
        world_port: int,
        simulator: str = "",
        project: str = "",
        dotenv: tuple[tuple[str, str], ...] = (),
    ) -> Rewrite:
        return cls(ENV_HOST_TEXT, host_names, world_port, None, simulator, project, True, dotenv)

    @cached_property
    def url_address(self) -> str:
        """The address as URLs and host:port write it (bracketed IPv6, or its variable)."""
        return ENV_URL_HOST_TEXT if self.env else for_url(self.address)

    @cached_property
    def _dotenv(self) -> dict[str, str]:
        return dict(self.dotenv)

    @cached_property
    def _names(self) -> re.Pattern[str]:
        return self._pattern([])

    @cached_property
    def _names_and_loopback(self) -> re.Pattern[str]:
        return self._pattern(list(_LOOPBACK_TOKENS))

    def _pattern(self, extra: list[str]) -> re.Pattern[str]:
        alts = sorted((name_pattern(n) for n in self.host_names), key=len, reverse=True) + extra
        return re.compile(_BEFORE + "(" + "|".join(alts or ["(?!)"]) + ")" + _AFTER)

    @cached_property
    def _container_names(self) -> re.Pattern[str]:
        """Names compose gives the simulator's containers: v2 `P-sim-1`, v1 `P_sim_1`."""
        if not self.simulator:
            return re.compile("(?!)")
        prefixes = [_PROJECT_VAR] + ([re.escape(self.project)] if self.project else [])
        sim = re.escape(self.simulator)
        return re.compile(_BEFORE + rf"(?:{'|'.join(prefixes)})[-_]{sim}[-_]\d+" + _AFTER)

    @property
    def host_gateway(self) -> bool:
        """Do the services that name the simulator need `host.docker.internal` (HOST_GATEWAY)?
        In the env mode (the address may be a tunnel's), and where the literal address is it."""
        return self.env or self.address.lower() == DOCKER_HOST_NAME

    @property
    def new_port(self) -> int | None:
        return self.port if self.port is not None and self.port != self.world_port else None

    @property
    def port_text(self) -> str | None:
        """What replaces the world port where a value carries it, or None to keep it."""
        if self.env:
            return "${" + ENV_PORT + ":-" + str(self.world_port) + "}"
        return None if self.new_port is None else str(self.new_port)

    # -- tokens -------------------------------------------------------------------------
    def replace_hosts(self, text: str, loopback: bool = False) -> str:
        """Replace whole-token host names in free text, and in `${VAR:-default}` defaults."""
        if not self.host_names or not text:
            return text
        held = _Held("\x00")
        text = self._sub(self._container_names, text, held)
        pattern = self._names_and_loopback if loopback else self._names
        out: list[str] = []
        pos = 0
        for m in _INTERP.finditer(text):
            out.append(self._sub(pattern, text[pos : m.start()], held))
            op, default = m.group(2), m.group(3)
            from_dotenv = self._from_dotenv(m.group(1), op, loopback)
            if from_dotenv is not None:  # `.env` makes it name the simulator: write it out
                out.append(held.hold(from_dotenv))
            elif op is not None and "?" not in op and "+" not in op:  # a default: may be a host
                out.append("${" + m.group(1) + op + self._sub(pattern, default, held) + "}")
            else:
                out.append(m.group(0))
            pos = m.end()
        out.append(self._sub(pattern, text[pos:], held))
        return held.restore("".join(out))

    def _from_dotenv(self, var: str, op: str | None, loopback: bool) -> str | None:
        """What `${var...}` must become when the project's `.env` sets it to the simulator."""
        value = self._dotenv.get(var)
        if value is None or "$" in value or (op and "+" in op) or (op == ":-" and not value):
            return None
        new = self.host_value(value) if loopback else self.replace_hosts(value)
        return new if new != value else None

    def unset_env(self, name: str) -> str | None:
        """`KEY` alone takes its value from the environment, which `.env` fills: the value the
        variant must set instead, or None when that value does not name the simulator."""
        value = self._dotenv.get(name)
        if value is None or "$" in value:
            return None
        new = self.env_value(name, value)
        return new if new != value else None

    def _sub(self, pattern: re.Pattern[str], text: str, held: _Held) -> str:
        """Replace every match that is a host (not a variable name, not a path part)."""
        out: list[str] = []
        pos = 0
        for m in pattern.finditer(text):
            start, end = m.span()
            before = text[max(0, start - 2) : start]
            url = before == "//"
            if before.endswith("$") or before == "${":
                continue  # a variable's name, not a host
            if (before.endswith("/") or text[end : end + 1] == "/") and not url:
                continue  # a path component
            port = re.match(r":(\d+)(?![\d.])", text[end:])
            new = self.url_address if url or port else self.address
            if port and self.port_text is not None and int(port.group(1)) == self.world_port:
                new += ":" + self.port_text
                end += port.end()
            out.append(text[pos:start])
            out.append(held.hold(new))
            pos = end
        if not out:
            return text
        out.append(text[pos:])
        return "".join(out)

    def host_value(self, value: str) -> str:
        """The value of something that is clearly the CARLA host (variable or --host)."""
        if "$" in value:  # keep interpolations as written; replace host tokens inside them
            return self.replace_hosts(value, loopback=True)
        stripped = value.strip()
        if _LOOPBACK.match(stripped) or self._names.fullmatch(stripped):
            return value.replace(stripped, self.address)
        return self.replace_hosts(value, loopback=True)

    def port_value(self, value: str) -> str:
        new = self.port_text
        if new is not None and value.strip() == str(self.world_port):
            return value.replace(str(self.world_port), new)
        return value

    # -- compose fields -----------------------------------------------------------------
    def env_value(self, name: str, value: str) -> str:
        if is_host_var(name):
            return self.host_value(value)
        if is_port_var(name):
            return self.port_value(value)
        return self.replace_hosts(value)

    def env_item(self, item: str) -> str:
        """One `KEY=VALUE` entry of a list-form environment."""
        if "=" not in item:
            new = self.unset_env(item.strip())
            return item if new is None else f"{item.strip()}={new}"
        key, value = item.split("=", 1)
        return f"{key}={self.env_value(key.strip(), value)}"

    def args(self, items: list[str]) -> list[str]:
        """An exec-form command/entrypoint: flags and their values as separate items."""
        out: list[str] = []
        expect: str | None = None
        for item in items:
            if not isinstance(item, str):
                out.append(item)
                expect = None
                continue
            if expect == "host":
                new = self.host_value(item)
            elif expect == "port":
                new = self.port_value(item)
            else:
                new = self._flag_item(item)
            out.append(new)
            expect = "host" if item in _HOST_FLAGS else "port" if item in _PORT_FLAGS else None
        return out

    def _flag_item(self, item: str) -> str:
        flag, eq, value = item.partition("=")
        if eq and flag in _HOST_FLAGS:
            return f"{flag}={self.host_value(value)}"
        if eq and flag in _PORT_FLAGS:
            return f"{flag}={self.port_value(value)}"
        if eq and is_host_var(flag):  # `env CARLA_HOST=x cmd` written as one item
            return f"{flag}={self.host_value(value)}"
        if eq and is_port_var(flag):
            return f"{flag}={self.port_value(value)}"
        if "\n" in item or " " in item or ":=" in item:  # a shell script, or ROS `host:=x`
            return self.shell(item)
        return self.replace_hosts(item)

    _SHELL_FLAG = re.compile(
        r"(?P<flag>"
        + "|".join(re.escape(f) for f in sorted(_HOST_FLAGS + _PORT_FLAGS, key=len, reverse=True))
        + r")(?P<sep>=|[ \t]+)(?P<q>[\"']?)(?P<val>[^\s\"';&|)]+)(?P=q)(?![\w-])"
    )
    _ROS_ARG = re.compile(
        r"(?<![\w-])(?P<flag>"
        + "|".join(_ROS_HOST_ARGS + _ROS_PORT_ARGS)
        + r"):=(?P<q>[\"']?)(?P<val>[^\s\"';&|)]+)(?P=q)"
    )
    _SHELL_VAR = re.compile(
        r"(?<![A-Za-z0-9_])(?P<name>CARLA[A-Za-z0-9_]*)=(?P<q>[\"']?)(?P<val>[^\s\"';&|)]*)(?P=q)"
    )

    def shell(self, text: str) -> str:
        """A shell-form command (plain or block scalar): flags, assignments, then tokens."""

        def value_of(m: re.Match[str], new: str) -> str:
            whole = m.group(0)
            return whole[: m.start("val") - m.start()] + new + whole[m.end("val") - m.start() :]

        def flag(m: re.Match[str]) -> str:
            name, val = m.group("flag"), m.group("val")
            is_port = name in _PORT_FLAGS or name in _ROS_PORT_ARGS
            return value_of(m, self.port_value(val) if is_port else self.host_value(val))

        def assign(m: re.Match[str]) -> str:
            return value_of(m, self.env_value(m.group("name"), m.group("val")))

        held = _Held("\x01")  # what the rules wrote stays out of the token pass
        text = self._SHELL_FLAG.sub(lambda m: held.hold(flag(m)), text)
        text = self._ROS_ARG.sub(lambda m: held.hold(flag(m)), text)
        text = self._SHELL_VAR.sub(lambda m: held.hold(assign(m)), text)
        return held.restore(self.replace_hosts(text))
