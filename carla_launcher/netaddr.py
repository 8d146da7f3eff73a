"""The address agents connect to is data: an IP literal or an RFC 1123 host name, nothing else.

Validated where it enters (flag, profile, discovery); written where it lands in the form
that place needs (`for_url` brackets IPv6 for URLs and host:port).
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def address_problem(value: str) -> str | None:
    """Why `value` is not an address agents can be pointed at, or None when it is one."""
    if not value:
        return "empty"
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if len(value) > 253:
        return "longer than 253 characters"
    labels = value[:-1].split(".") if value.endswith(".") else value.split(".")
    if all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit():
        return None
    return "not an IPv4/IPv6 address or a host name (letters, digits, '-' and '.')"


def is_ipv6(value: str) -> bool:
    return ":" in value


def for_url(value: str) -> str:
    """The address as the host part of a URL or a host:port pair."""
    return f"[{value}]" if is_ipv6(value) and not value.startswith("[") else value
