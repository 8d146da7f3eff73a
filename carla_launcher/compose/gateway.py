"""`host.docker.internal:host-gateway` in the variants: where an agent reaches a server through
an SSH tunnel on this machine (`box/tunnel.py`). Pure: edits a loaded document in place.

Only services that name the simulator's host get the entry (one that took only its port needs
no name), on the service whose network stack they use (`network_mode: service:X`); a source's
own entry for that name stays as it is and is never doubled.
"""

from __future__ import annotations

import re
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from carla_launcher.compose.comments import append_item, append_key
from carla_launcher.compose.hosts import DOCKER_HOST_NAME, HOST_GATEWAY, Rewrite
from carla_launcher.compose.yamlio import like


def _names_address(value: Any, address: tuple[str, ...]) -> bool:
    """Does any text in this service's values hold the address (or its URL form)?"""
    if isinstance(value, str):
        return any(a in value for a in address)
    if isinstance(value, dict):
        return any(_names_address(v, address) for v in value.values())
    if isinstance(value, list):
        return any(_names_address(v, address) for v in value)
    return False


def add_host_gateways(services: CommentedMap, sim: str, referencing: set[str], rw: Rewrite) -> bool:
    """`host.docker.internal:host-gateway` in `extra_hosts:` of every service that names the
    simulator (of the service whose network it shares, for `network_mode: service:X`), so the
    address may be a tunnel's end on this machine. An entry of the source for that name stays
    as it is, and is never doubled. True when it added one."""
    address = tuple({rw.address, rw.url_address})
    added = False
    for name in list(services):
        if str(name) not in referencing or not _names_address(services[name], address):
            continue  # a service that took only the port needs no host name
        owner = _network_owner(services, str(name), sim)
        svc = services.get(owner) if owner is not None else None
        if isinstance(svc, CommentedMap) and _add_host_gateway(svc):
            added = True
    return added


def _network_owner(services: CommentedMap, name: str, sim: str) -> str | None:
    """The service whose network stack (and /etc/hosts) `name` uses: itself, or the one its
    `network_mode: service:X` names (in turn); None for `container:`, `none` or a loop."""
    seen = {name}
    while True:
        svc = services.get(name)
        mode = svc.get("network_mode") if isinstance(svc, CommentedMap) else None
        mode = mode.strip() if isinstance(mode, str) else ""
        if mode == "none" or mode.startswith("container:"):
            return None
        if not mode.startswith("service:"):
            return name
        name = mode.removeprefix("service:").strip()
        if name in seen or name == sim or name not in services:
            return None
        seen.add(name)


def _host_name(entry: Any) -> str:
    """The host an `extra_hosts` list entry maps: `name:ip`, `name=ip` or `name ip`."""
    return re.split(r"[:=\s]", str(entry).strip(), maxsplit=1)[0].lower()


def _add_host_gateway(svc: CommentedMap) -> bool:
    """Add HOST_GATEWAY to the service's `extra_hosts` (a list or a mapping, in its form and
    style); False where the name is there already, or the value is not one compose reads."""
    hosts = svc.get("extra_hosts")
    if isinstance(hosts, CommentedSeq):
        if any(_host_name(item) == DOCKER_HOST_NAME for item in hosts):
            return False
        append_item(hosts, like(hosts[0], HOST_GATEWAY) if len(hosts) else HOST_GATEWAY)
        return True
    if isinstance(hosts, CommentedMap):
        if any(str(k).strip().lower() == DOCKER_HOST_NAME for k in hosts):
            return False
        value = HOST_GATEWAY.split(":", 1)[1]
        append_key(hosts, DOCKER_HOST_NAME, like(next(iter(hosts.values()), ""), value))
        return True
    if hosts is not None:
        return False  # not a list nor a mapping: compose's own error says so
    new = CommentedSeq([DoubleQuotedScalarString(HOST_GATEWAY)])
    new.fa.set_flow_style()
    append_key(svc, "extra_hosts", new)  # not there: a value of another kind returned above
    return True
