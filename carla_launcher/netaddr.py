"""The address agents connect to is data: an IP literal or an RFC 1123 host name, nothing else.

Validated where it enters (flag, profile, discovery); written where it lands in the form
that place needs (`for_url` brackets IPv6 for URLs and host:port). A valid address holds only
letters, digits, '.', '-' and ':', never starts with '-', so it is never a shell word that
does something, a compose `${...}`, nor an option to ssh or docker.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
HINT = "an IPv4/IPv6 address or a host name of letters, digits, '-' and '.'"


def address_problem(value: str) -> str | None:
    """Why `value` is not an address agents can be pointed at, or None when it is one."""
    if not value:
        return "empty"
    if value != value.strip() or any(c.isspace() for c in value):
        return "contains white space"
    if value.startswith("-"):
        return "it starts with '-', so ssh or docker would read it as an option"
    if value.startswith("[") and value.endswith("]"):
        return "write an IPv6 address without brackets"
    if "%" in value:
        return "a scoped IPv6 address with %zone only works on the box's own link"
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return _name_problem(value)
    if ip.is_unspecified or ip.is_multicast:
        return "not an address a client can connect to"
    return None


def _name_problem(value: str) -> str | None:
    """RFC 1123 host name: dot-separated labels, the last one not all digits."""
    if value.count(":") == 1 and value.rsplit(":", 1)[1].isdigit():
        return "a port does not belong in it: give it with --port or server.port"
    if len(value) > 253:
        return "longer than 253 characters"
    labels = value[:-1].split(".") if value.endswith(".") else value.split(".")
    if all(_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit():
        return None
    return f"expected {HINT}"


def describe(value: str, problem: str) -> str:
    """The one-line message for a refused value (repr keeps control characters visible)."""
    return f"not an address ({problem}): {value!r}"


def is_ipv6(value: str) -> bool:
    return ":" in value


def for_url(value: str) -> str:
    """The address as the host part of a URL or a host:port pair."""
    return f"[{value}]" if is_ipv6(value) and not value.startswith("[") else value
