"""Pure text rules: where a compose value names the simulator's host or port, and its new value.

Host names are replaced as whole tokens (`carla-simulator-logs` stays), never inside a
`${VAR}` name, never as a path component (`/opt/carla/` stays when the service is `carla`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

# Variables that clearly hold the CARLA host: CARLA*HOST, CARLA*SERVER, CARLA*IP, CARLA*ADDR.
_HOST_VAR = re.compile(r"^CARLA[A-Z0-9_]*?(HOST|HOSTNAME|SERVER|SERVER_IP|IP|ADDR|ADDRESS)$", re.I)
_PORT_VAR = re.compile(r"^CARLA[A-Z0-9_]*PORT$", re.I)
_NOT_WORLD = re.compile(r"(TM|TRAFFIC|STREAM|SECONDARY|TRAFFIC_MANAGER)", re.I)
_HOST_FLAGS = ("--host", "--carla-host", "--carla_host", "--carla-ip", "--server-host")
_PORT_FLAGS = ("--port", "--carla-port", "--carla_port", "--world-port", "--rpc-port")
_LOOPBACK = re.compile(r"^(localhost|127(\.\d{1,3}){3}|0\.0\.0\.0|::1|\[::1\]|host\.docker\.internal)$")
_LOOPBACK_TOKENS = (r"localhost", r"127\.0\.0\.1", r"0\.0\.0\.0", r"host\.docker\.internal")

# A token is a run of host-name characters; these may not touch it on either side.
_BEFORE = r"(?<![A-Za-z0-9_.\-])"
_AFTER = r"(?![A-Za-z0-9_\-]|\.[A-Za-z0-9])"

# The simulator's RPC (world) port as CARLA spells it on its command line.
WORLD_PORT_FLAG = re.compile(r"-(?:carla-rpc-port|world-port|carla-port|carla-world-port)[= ](\d+)")
DEFAULT_WORLD_PORT = 2000

# The env address mode: variants read the box's address and world port from these variables,
# which `up`/`attach` pass to docker compose and `carla-launch env P` prints.
ENV_HOST = "CARLA_LAUNCH_HOST"
ENV_PORT = "CARLA_LAUNCH_PORT"


def is_host_var(name: str) -> bool:
    return bool(_HOST_VAR.match(name)) and not _NOT_WORLD.search(name)


def is_port_var(name: str) -> bool:
    return bool(_PORT_VAR.match(name)) and not _NOT_WORLD.search(name)


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

    address: str
    host_names: tuple[str, ...]  # service name, hostname, container_name, aliases ('*' = number)
    world_port: int = DEFAULT_WORLD_PORT
    port: int | None = None  # the remote server's world port, when it differs

    @cached_property
    def _names(self) -> re.Pattern[str]:
        alts = sorted((name_pattern(n) for n in self.host_names), key=len, reverse=True)
        return re.compile(_BEFORE + "(" + "|".join(alts) + ")" + _AFTER)

    @cached_property
    def _names_and_loopback(self) -> re.Pattern[str]:
        alts = sorted((name_pattern(n) for n in self.host_names), key=len, reverse=True)
        return re.compile(_BEFORE + "(" + "|".join(alts + list(_LOOPBACK_TOKENS)) + ")" + _AFTER)

    @property
    def new_port(self) -> int | None:
        return self.port if self.port is not None and self.port != self.world_port else None

    # -- tokens -------------------------------------------------------------------------
    _DEFAULT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-+?])([^${}]*)\}")

    def replace_hosts(self, text: str, loopback: bool = False) -> str:
        """Replace whole-token host names in free text, and in `${VAR:-default}` defaults."""
        if not self.host_names:
            return text
        if "${" in text:
            text = self._DEFAULT.sub(
                lambda m: "${" + m.group(1) + m.group(2) + self._tokens(m.group(3), loopback) + "}", text
            )
        return self._tokens(text, loopback)

    def _tokens(self, text: str, loopback: bool) -> str:
        pattern = self._names_and_loopback if loopback else self._names
        out: list[str] = []
        pos = 0
        for m in pattern.finditer(text):
            start, end = m.span()
            before = text[max(0, start - 2) : start]
            after = text[end : end + 1]
            url = before == "//"
            if before.endswith("$") or before == "${":
                continue  # a variable's name, not a host
            if before.endswith("/") and not url:
                continue  # a path component
            if after == "/" and not url:
                continue
            out.append(text[pos:start])
            out.append(self.address)
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
        return self.replace_hosts(value)

    def port_value(self, value: str) -> str:
        if self.new_port is not None and value.strip() == str(self.world_port):
            return value.replace(str(self.world_port), str(self.new_port))
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
            return item
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
        if "\n" in item or " " in item:  # a whole shell script in one item (sh -c "...")
            return self.shell(item)
        return self.replace_hosts(item)

    _SHELL_FLAG = re.compile(
        r"(?P<flag>--(?:carla[-_])?host|--carla-ip|--server-host|--(?:carla[-_]|world-|rpc-)?port)"
        r"(?P<sep>=|[ \t]+)(?P<q>[\"']?)(?P<val>[^\s\"';&|)]+)(?P=q)"
    )
    _SHELL_VAR = re.compile(
        r"(?<![A-Za-z0-9_])(?P<name>CARLA[A-Z0-9_]*)=(?P<q>[\"']?)(?P<val>[^\s\"';&|)]*)(?P=q)"
    )

    def shell(self, text: str) -> str:
        """A shell-form command (plain or block scalar): flags, assignments, then tokens."""

        def flag(m: re.Match[str]) -> str:
            is_port = m.group("flag").endswith("port")
            val = m.group("val")
            new = self.port_value(val) if is_port else self.host_value(val)
            return m.group(0)[: m.start("val") - m.start()] + new + m.group(0)[m.end("val") - m.start() :]

        def assign(m: re.Match[str]) -> str:
            val = m.group("val")
            new = self.env_value(m.group("name"), val)
            return m.group(0)[: m.start("val") - m.start()] + new + m.group(0)[m.end("val") - m.start() :]

        text = self._SHELL_FLAG.sub(flag, text)
        text = self._SHELL_VAR.sub(assign, text)
        return self.replace_hosts(text)
