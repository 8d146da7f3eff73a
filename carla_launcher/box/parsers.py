"""Readers of what standard tools print on a box (`ip`, `ss`, /proc/net/tcp, `df`, dpkg). Pure.

Each takes text or lines and returns plain data; `facts.py` names which snippet feeds which.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Interface:
    name: str
    address: str  # without prefix length
    family: int  # 4 or 6
    scope: str  # global | host | link | ...


@dataclass(frozen=True)
class Listener:
    port: int
    process: str | None = None  # from `ss -p` where we may see it


def parse_ip_addr(lines: Iterable[str]) -> list[Interface]:
    """`ip -o addr show` lines -> interfaces (in the order the kernel lists them)."""
    result = []
    for line in lines:
        f = line.split()
        if len(f) < 4 or f[2] not in ("inet", "inet6"):
            continue
        name = f[1].split("@", 1)[0].rstrip(":")
        addr = f[3].split("/", 1)[0]
        scope = f[f.index("scope") + 1] if "scope" in f[:-1] else "global"
        result.append(Interface(name, addr, 4 if f[2] == "inet" else 6, scope))
    return result


def parse_listeners(text: str) -> tuple[Listener, ...]:
    """`ss -ltnH` / `ss -ltnpH` lines, or /proc/net/tcp{,6} when ss is missing."""
    out: list[Listener] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "LISTEN" and len(parts) >= 4:
            port = _int(parts[3].rsplit(":", 1)[-1])
            proc = re.search(r'users:\(\("([^"]+)"', line)
            if port is not None:
                out.append(Listener(port, proc.group(1) if proc else None))
        elif (  # /proc/net/tcp: "sl local_address rem_address st ..." (hex), st 0A = LISTEN
            len(parts) >= 4
            and parts[0].endswith(":")
            and parts[0][:-1].isdigit()
            and parts[3] == "0A"
            and ":" in parts[1]
        ):
            out.append(Listener(int(parts[1].rsplit(":", 1)[1], 16)))
    return tuple(out)


def parse_df_free_kib(text: str) -> int | None:
    """`df -Pk PATH`: the Available column of the last line."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        return None
    parts = lines[-1].split()
    return _int(parts[3]) if len(parts) >= 4 else None


def parse_packages(lines: Iterable[str], wanted: tuple[str, ...]) -> dict[str, bool] | None:
    """dpkg-query `Package ii ` lines -> {package: installed}; None when there is no dpkg."""
    lines = list(lines)
    if "?dpkg" not in [line.strip() for line in lines]:
        return None
    installed = {}
    for line in lines:
        f = line.split()
        if len(f) >= 2 and f[0] != "?dpkg":
            installed[f[0].split(":", 1)[0]] = f[1].startswith("ii")
    return {p: installed.get(p, False) for p in wanted}


def parse_key_values(lines: Iterable[str]) -> dict[str, str]:
    """`key=value` lines -> dict; other lines are skipped."""
    result = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip():
            result[key.strip()] = value.strip()
    return result


def parse_owner(lines: Iterable[str]) -> str | None:
    """`deploy_owner`'s `PID.START` (digits only: it becomes part of a file name), else None."""
    found = [ln.strip() for ln in lines if re.fullmatch(r"[0-9]+\.[0-9]+", ln.strip())]
    return found[0] if found else None


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None
