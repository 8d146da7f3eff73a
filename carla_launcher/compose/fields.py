"""A service's fields read as plain data, in every form compose accepts for them.

Pure functions over ruamel nodes: list or mapping environments, depends_on forms, ports,
env_file entries, the named resources a service uses.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def tag_of(node: Any) -> str | None:
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", None) if tag is not None else None
    return value if isinstance(value, str) and value.startswith("!") else None


def env_to_dict(env: Any) -> dict[str, str | None]:
    if isinstance(env, (list, CommentedSeq)):
        out: dict[str, str | None] = {}
        for item in env:
            key, eq, value = str(item).partition("=")
            out[key.strip()] = value if eq else None
        return out
    if isinstance(env, (dict, CommentedMap)):
        return {str(k): None if v is None else _scalar_text(v) for k, v in env.items()}
    return {}


def _scalar_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def depends_to_dict(dep: Any) -> dict[str, Any]:
    if isinstance(dep, (list, CommentedSeq)):
        return {str(x): {"condition": "service_started"} for x in dep}
    if isinstance(dep, (dict, CommentedMap)):
        return {str(k): _plain(v) for k, v in dep.items()}
    return {}


def container_ports(value: Any) -> list[str]:
    """The container side of `ports:`/`expose:` entries.

    "2000-2002:2000-2002/tcp" -> "2000-2002"."""
    out: list[str] = []
    if not isinstance(value, (CommentedSeq, list)):
        return out
    for item in value:
        if isinstance(item, (CommentedMap, dict)):
            target = item.get("target")
            if target is not None:
                out.append(str(target))
            continue
        text = str(item).split("/", 1)[0]
        out.append(text.rsplit(":", 1)[-1])
    return out


def resources_used(node: CommentedMap) -> list[str]:
    """Named networks, volumes, configs and secrets a service uses, as "kind:name"."""
    out: list[str] = []
    nets = node.get("networks")
    if isinstance(nets, (CommentedMap, CommentedSeq)):
        out += [f"network:{n}" for n in nets]
    for kind in ("volumes", "configs", "secrets"):
        items = node.get(kind)
        for item in items if isinstance(items, CommentedSeq) else []:
            if isinstance(item, CommentedMap):
                name = item.get("source")
            else:
                name = str(item).split(":", 1)[0] if kind == "volumes" else str(item)
            if name and not str(name).startswith((".", "/", "~", "$")):
                out.append(f"{kind.rstrip('s')}:{name}")
    return out


def env_file_paths(value: Any) -> list[str]:
    """`env_file:` as a string, a list of strings, or a list of {path, required}."""
    items = value if isinstance(value, (CommentedSeq, list)) else [value]
    out = []
    for item in items:
        if isinstance(item, (CommentedMap, dict)):
            if item.get("path") is not None:
                out.append(str(item["path"]))
        elif item is not None:
            out.append(str(item))
    return out
