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


def _replace_tokens(text: str, names: set[str], address: str) -> str:
    parts = _SEP.split(text)
    out = []
    for part in parts:
        if _SEP.fullmatch(part or " "):
            out.append(part)
            continue
        m = re.match(r"^([a-z]+://)([^/]*)(.*)$", part)
        if m and m.group(2) in names:
            part = m.group(1) + address + m.group(3)
        elif part in names:
            part = address
        elif part.startswith("//") and part[2:].split("/")[0] in names:
            part = "//" + address + part[2:][len(part[2:].split("/")[0]) :]
        out.append(part)
    return "".join(out)


def _is_host_var(name: str) -> bool:
    return bool(re.match(r"^CARLA\w*(HOST|SERVER|IP|ADDR)$", name)) and "TM" not in name


def _is_port_var(name: str) -> bool:
    return bool(re.match(r"^CARLA\w*PORT$", name)) and "TM" not in name


def _args(items: list[str], names: set[str], address: str, old_port: int, new_port: int | None) -> list[str]:
    out = []
    prev = ""
    for item in items:
        if prev in ("--host", "--carla-host") and (item in _HOSTY or item in names):
            item = address
        elif prev == "--port" and new_port and item == str(old_port):
            item = str(new_port)
        else:
            flag, eq, value = item.partition("=")
            if eq and flag in ("--host", "--carla-host") and (value in _HOSTY or value in names):
                item = f"{flag}={address}"
            elif eq and flag == "--port" and new_port and value == str(old_port):
                item = f"--port={new_port}"
            else:
                item = _replace_tokens(item, names, address)
                if new_port:
                    item = re.sub(rf"--port[= ]{old_port}\b", f"--port={new_port}", item)
                item = re.sub(
                    r"(--(?:carla-)?host[= ])(localhost|127\.0\.0\.1)\b", rf"\g<1>{address}", item
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
            if _is_host_var(key) and (value in _HOSTY or value in names):
                env[key] = address
            elif _is_port_var(key) and new_port and value == str(old_port):
                env[key] = str(new_port)
            else:
                env[key] = _replace_tokens(value, names, address)
        for key in ("command", "entrypoint"):
            if isinstance(svc.get(key), list):
                svc[key] = _args(svc[key], names, address, old_port, new_port)
    return model


def comparable(model: dict[str, Any]) -> dict[str, Any]:
    """The parts of a model that run: services, networks, volumes, configs, secrets."""
    return {k: v for k, v in model.items() if not k.startswith("x-")}
