"""What the distributed variant's loaded model must be, computed from the source's loaded
model by the contract in DESIGN.md, independently of carla_launcher's own code.

It works on the model compose prints (interpolated, commands already split into lists),
with its own tokenizer, so that a shared bug cannot make both sides agree.
"""

from __future__ import annotations

import copy
import re
from typing import Any

_SEP = re.compile(r"([\s=:'\"<>,;@()\[\]{}&|`]+)")
_HOSTY = {"localhost", "127.0.0.1", "0.0.0.0", "host.docker.internal"}


def sim_names(model: dict[str, Any], sim: str) -> set[str]:
    s = model["services"][sim]
    names = {sim}
    for key in ("hostname", "container_name"):
        if s.get(key):
            names.add(s[key])
    for net in (s.get("networks") or {}).values():
        names.update((net or {}).get("aliases") or [])
        names.update(a for k in ("ipv4_address", "ipv6_address") if (a := (net or {}).get(k)))
    for other in model["services"].values():
        for link in other.get("links") or []:
            target, _, alias = link.partition(":")
            if target == sim and alias:
                names.add(alias)
    project = model.get("name", "")
    for n in range(1, 4):
        names.add(f"{project}-{sim}-{n}")
        names.add(f"{project}_{sim}_{n}")
    return names


def _host_for(address: str, url_like: bool) -> str:
    return f"[{address}]" if url_like and ":" in address else address


def _replace_tokens(
    text: str,
    names: set[str],
    address: str,
    old_port: int = 2000,
    new_port: int | None = None,
    hosty: bool = False,
) -> str:
    """Whole tokens that are names become the address (and a `:port` after them the new port);
    with `hosty`, loopback names too."""
    hit = names | (_HOSTY if hosty else set())
    if text in hit:  # a whole value (IPv6 names have colons the tokenizer splits on)
        return address
    parts = _SEP.split(text)
    out: list[str] = []
    replaced_at = -10
    for i, part in enumerate(parts):
        if _SEP.fullmatch(part or " "):
            out.append(part)
            continue
        after = parts[i + 1] if i + 1 < len(parts) else ""
        port_follows = after == ":" and i + 2 < len(parts) and parts[i + 2].isdigit()
        m = re.match(r"^([a-z]+://)([^/]*)(.*)$", part)
        if m and m.group(2) in hit:
            part = m.group(1) + _host_for(address, True) + m.group(3)
            replaced_at = i
        elif part in hit:
            before = parts[i - 1] if i else ""
            part = _host_for(address, port_follows or before.endswith("//"))
            replaced_at = i
        elif part.startswith("//") and part[2:].split("/")[0] in hit:
            host = part[2:].split("/")[0]
            part = "//" + _host_for(address, True) + part[2 + len(host) :]
            replaced_at = i
        elif (
            new_port
            and replaced_at == i - 2
            and parts[i - 1] == ":"
            and re.match(rf"{old_port}(?!\d)", part)
        ):
            part = str(new_port) + part[len(str(old_port)) :]
        out.append(part)
    return "".join(out)


_NOT_WORLD = {"TM", "TRAFFIC", "MANAGER", "STREAM", "STREAMING", "SECONDARY", "PRIMARY"}


def _is_host_var(name: str) -> bool:
    words = name.upper().split("_")
    return (
        len(words) > 1
        and words[0] == "CARLA"
        and not _NOT_WORLD & set(words)
        and words[-1] in ("HOST", "HOSTNAME", "SERVER", "IP", "ADDR", "ADDRESS")
    )


def _is_port_var(name: str) -> bool:
    words = name.upper().split("_")
    return (
        len(words) > 1
        and words[0] == "CARLA"
        and words[-1] == "PORT"
        and not _NOT_WORLD & set(words)
    )


_HOST_FLAGS = ("--host", "--carla-host")
_ROS_HOST = re.compile(r"^(host|carla_host):=(['\"]?)(.*)\2$")


def _args(
    items: list[str], names: set[str], address: str, old_port: int, new_port: int | None
) -> list[str]:
    out = []
    prev = ""
    for item in items:
        flag, eq, value = item.partition("=")
        ros = _ROS_HOST.match(item)
        if prev in _HOST_FLAGS and (item in _HOSTY or item in names):
            item = address
        elif prev == "--port" and new_port and item == str(old_port):
            item = str(new_port)
        elif new_port and item in (f"port:={old_port}", f"carla_port:={old_port}"):
            item = item.replace(str(old_port), str(new_port))
        elif eq and flag in _HOST_FLAGS and (value in _HOSTY or value in names):
            item = f"{flag}={address}"
        elif eq and flag == "--port" and new_port and value == str(old_port):
            item = f"--port={new_port}"
        elif ros and (ros.group(3) in _HOSTY or ros.group(3) in names):
            item = f"{ros.group(1)}:={ros.group(2)}{address}{ros.group(2)}"
        else:
            item = _replace_tokens(item, names, address, old_port, new_port)
            if new_port:
                item = re.sub(rf"(--port[= ]|\bport:=){old_port}\b", rf"\g<1>{new_port}", item)
            item = re.sub(
                r"(--(?:carla-)?host[= ]|\b(?:carla_)?host:=['\"]?)(localhost|127\.0\.0\.1)\b",
                lambda m: m.group(1) + address,
                item,
            )
        out.append(item)
        prev = item if item.startswith("--") else ""
    return out


def expected_model(
    source: dict[str, Any], sim: str, address: str, port: int | None = None, old_port: int = 2000
) -> dict[str, Any]:
    model = copy.deepcopy(source)
    names = sim_names(model, sim)
    del model["services"][sim]
    new_port = port if port and port != old_port else None
    for svc in model["services"].values():
        deps = svc.get("depends_on")
        if deps and sim in deps:
            del deps[sim]
            if not deps:
                del svc["depends_on"]
        links = svc.get("links")
        if links:
            kept = [x for x in links if x.partition(":")[0] != sim]
            if kept:
                svc["links"] = kept
            else:
                del svc["links"]
        env = svc.get("environment") or {}
        for key, value in list(env.items()):
            if not isinstance(value, str):
                continue
            if _is_host_var(key):
                env[key] = _replace_tokens(value, names, address, old_port, new_port, hosty=True)
            elif _is_port_var(key) and new_port and value == str(old_port):
                env[key] = str(new_port)
            else:
                env[key] = _replace_tokens(value, names, address, old_port, new_port)
        for key in ("command", "entrypoint"):
            if isinstance(svc.get(key), list):
                svc[key] = _args(svc[key], names, address, old_port, new_port)
        test = (svc.get("healthcheck") or {}).get("test")
        if isinstance(test, list):
            svc["healthcheck"]["test"] = _args(test, names, address, old_port, new_port)
    return model


#: The entry env-mode variants add to `extra_hosts` (compose's model writes `name=value`).
HOST_GATEWAY = "host.docker.internal=host-gateway"


def with_host_gateway(expected: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """The env address mode's addition to `expected`: every service whose values the contract
    changed (or the service whose network it shares: `network_mode: service:X`) maps
    host.docker.internal to host-gateway, unless it maps that name already."""
    out = copy.deepcopy(expected)
    services = out["services"]
    for name, svc in list(services.items()):
        before = source["services"].get(name) or {}
        keys = ("environment", "command", "entrypoint", "healthcheck")
        if all(svc.get(k) == before.get(k) for k in keys):
            continue
        mode = svc.get("network_mode") or ""
        if mode == "none" or mode.startswith("container:"):
            continue
        owner = services.get(mode.removeprefix("service:")) if mode.startswith("service:") else svc
        if owner is None:
            continue
        hosts = owner.setdefault("extra_hosts", [])
        if not any(str(h).split("=", 1)[0] == "host.docker.internal" for h in hosts):
            hosts.append(HOST_GATEWAY)
    return out


def _used(model: dict[str, Any]) -> dict[str, set[str]]:
    used: dict[str, set[str]] = {
        "networks": set(),
        "volumes": set(),
        "configs": set(),
        "secrets": set(),
    }
    for svc in (model.get("services") or {}).values():
        used["networks"] |= set(svc.get("networks") or {})
        if not svc.get("networks") and not svc.get("network_mode"):
            used["networks"].add("default")
        for kind in ("volumes", "configs", "secrets"):
            used[kind] |= {
                x["source"]
                for x in svc.get(kind) or []
                if isinstance(x, dict) and x.get("source") is not None
            }
    return used


def comparable(model: dict[str, Any]) -> dict[str, Any]:
    """The parts of a model that run: services, and the networks, volumes, configs and
    secrets they use (compose creates no others; an unused one runs nothing)."""
    used = _used(model)
    out = {}
    for k, v in model.items():
        if k.startswith("x-"):
            continue
        if k in used and isinstance(v, dict):
            v = {name: cfg for name, cfg in v.items() if name in used[k]}
            if not v:
                continue
        if k == "services" and isinstance(v, dict):  # extra_hosts: a set, in any order
            v = {
                name: {**svc, "extra_hosts": sorted(svc["extra_hosts"])}
                if isinstance(svc, dict) and isinstance(svc.get("extra_hosts"), list)
                else svc
                for name, svc in v.items()
            }
        out[k] = v
    return out
