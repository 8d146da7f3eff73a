"""The distributed variant of one compose document: a pure function, document in, document out.

No I/O and no clock. Everything it needs to know about other files (what an include turns
into, what a service inherits through `extends: file:`) arrives in the `Plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import (
    LiteralScalarString,
)
from ruamel.yaml.tag import Tag

from carla_launcher.compose import yamlio
from carla_launcher.compose.comments import append_item, append_key, delete_key
from carla_launcher.compose.gateway import add_host_gateways
from carla_launcher.compose.hosts import ENV_SUFFIX_TEXT, Rewrite
from carla_launcher.compose.yamlio import like

DROP = None  # include action: remove the entry


@dataclass(frozen=True)
class Inherited:
    """What a service gets from a base in another file (`extends: {file: ..}`), resolved."""

    environment: Mapping[str, str | None] = field(default_factory=dict)
    env_form: str = "list"
    command: str | list[str] | None = None
    entrypoint: str | list[str] | None = None
    depends_on: Mapping[str, Any] = field(default_factory=dict)
    depends_form: str = "list"
    links: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    simulator: str
    rewrite: Rewrite
    includes: Mapping[str, str | None] = field(default_factory=dict)  # raw path -> new path | DROP
    inherited: Mapping[str, Inherited] = field(default_factory=dict)
    # service -> variables its env_file sets to the simulator, with their new values
    env_file_overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass
class Derived:
    doc: Any
    changed: bool = False
    referencing: set[str] = field(default_factory=set)  # services whose values named the simulator
    dependents: set[str] = field(default_factory=set)  # services that depended on or linked it


def derive_text(text: str, plan: Plan) -> tuple[str, Derived]:
    """The distributed variant of a compose file's text; unchanged text when nothing applies."""
    doc, style = yamlio.load(text)
    derived = derive(doc, plan)
    return (yamlio.dump(doc, style) if derived.changed else text), derived


def derive(doc: Any, plan: Plan) -> Derived:
    """Turn a freshly loaded document into its distributed variant, in place.

    Edits in place rather than on a deep copy: copying breaks the link between an anchor
    and its aliases, and the variant must keep them.
    """
    out = Derived(doc)
    if not isinstance(doc, CommentedMap):
        return out
    services = doc.get("services")
    if isinstance(services, CommentedMap):
        if plan.simulator in services:
            delete_key(services, plan.simulator, doc, "services")
            out.changed = True
            if not len(services):  # `services: {}` with stray comments: say nothing instead
                delete_key(doc, "services")
        for name in list(services):
            svc = services[name]
            if isinstance(svc, CommentedMap):
                _service(str(name), svc, plan, out)
        if plan.rewrite.host_gateway and add_host_gateways(
            services, plan.simulator, out.referencing, plan.rewrite
        ):
            out.changed = True
    _includes(doc, plan, out)
    return out


# -- one service ---------------------------------------------------------------------------------
def _service(name: str, svc: CommentedMap, plan: Plan, out: Derived) -> None:
    rw, sim = plan.rewrite, plan.simulator
    if _drop_dependency(svc, "depends_on", sim) | _drop_dependency(svc, "links", sim):
        out.dependents.add(name)
        out.changed = True
    referenced = False
    env = svc.get("environment")
    if isinstance(env, CommentedSeq):
        for i, item in enumerate(env):
            if isinstance(item, str):
                referenced |= _set_item(env, i, rw.env_item(item))
    elif isinstance(env, CommentedMap):
        for key in list(env):
            value = env[key]
            if isinstance(value, bool):
                continue
            if value is None:
                unset = rw.unset_env(str(key))
                if unset is not None:
                    _owner(env, key)[key] = unset
                    referenced = True
                continue
            new = rw.env_value(str(key), str(value))
            if new != str(value):
                _owner(env, key)[key] = (
                    int(new) if isinstance(value, int) and new.isdigit() else like(value, new)
                )
                referenced = True
    for key in ("command", "entrypoint"):
        value = svc.get(key)
        if isinstance(value, str):
            new = rw.shell(value)
            if new != value:
                svc[key] = like(value, new)
                referenced = True
        elif isinstance(value, CommentedSeq):
            items = list(value)
            new_items = rw.args([str(x) if isinstance(x, str) else x for x in items])
            for i, (old, new) in enumerate(zip(items, new_items, strict=True)):
                if isinstance(old, str) and old != new:
                    referenced |= _set_item(value, i, new)
    hc = svc.get("healthcheck")
    if isinstance(hc, CommentedMap):
        test = hc.get("test")
        if isinstance(test, str) and rw.shell(test) != test:
            hc["test"] = like(test, rw.shell(test))
            referenced = True
        elif isinstance(test, CommentedSeq):
            items = list(test)
            for i, new in enumerate(rw.args([str(x) if isinstance(x, str) else x for x in items])):
                if isinstance(items[i], str):
                    referenced |= _set_item(test, i, new)
    cname = svc.get("container_name")
    if rw.env and isinstance(cname, str) and cname and ENV_SUFFIX_TEXT not in cname:
        svc["container_name"] = like(cname, cname + ENV_SUFFIX_TEXT)
        out.changed = True
    overrides = plan.env_file_overrides.get(name)
    if overrides:
        _add_env(svc, overrides, "list")
        referenced = True
    inherited = plan.inherited.get(name)
    if inherited is not None:
        changed_here = _override_inherited(svc, inherited, plan)
        if changed_here & {"depends_on", "links"}:
            out.dependents.add(name)
        referenced |= bool(changed_here - {"depends_on", "links"})
        out.changed |= bool(changed_here)
    if referenced:
        out.referencing.add(name)
        out.changed = True


def _owner(m: CommentedMap, key: Any) -> CommentedMap:
    """The mapping a key is written in: m itself, or the anchor merged in with `<<`."""
    if key in m.lc.data:
        return m
    for merged in list(getattr(m, "merge", None) or []):
        merged = merged[1] if isinstance(merged, tuple) else merged
        if isinstance(merged, CommentedMap) and key in merged:
            return _owner(merged, key)
    return m


def _set_item(seq: CommentedSeq, i: int, new: str) -> bool:
    old = seq[i]
    if new == old:
        return False
    seq[i] = like(old, new)  # item assignment keeps the item's comment
    return True


def _dep_name(item: Any) -> str:
    return str(item).split(":", 1)[0]


def _drop_dependency(svc: CommentedMap, key: str, sim: str) -> bool:
    """Remove `sim` from depends_on (list or map) or links (`sim` or `sim:alias`)."""
    if key not in svc:
        return False
    owner = _owner(svc, key)  # maybe the anchor merged in with `<<`
    shared = owner is not svc  # an anchor's key stays (ruamel cannot delete it); it empties
    dep = owner[key]
    if isinstance(dep, CommentedSeq):
        hits = [i for i, item in enumerate(dep) if _dep_name(item) == sim]
        for i in reversed(hits):
            del dep[i]
        if hits and not len(dep) and not shared:
            delete_key(owner, key)
        return bool(hits)
    if isinstance(dep, CommentedMap) and sim in dep:
        if len(dep) == 1 and not shared:
            delete_key(owner, key)
        else:
            delete_key(dep, sim)
        return True
    return False


# -- inherited through extends: file: -------------------------------------------------------------
def _override_inherited(svc: CommentedMap, base: Inherited, plan: Plan) -> set[str]:
    """Write in the service's own text what it would otherwise inherit unchanged."""
    rw, sim, changed = plan.rewrite, plan.simulator, set()
    own_env = svc.get("environment") if "environment" in svc.lc.data else None
    own_keys = set(_env_keys(own_env))
    overrides = {}
    for key, value in base.environment.items():
        if key in own_keys or value is None:
            continue
        new = rw.env_value(key, value)
        if new != value:
            overrides[key] = new
    if overrides:
        _add_env(svc, overrides, base.env_form)
        changed.add("environment")
    for key in ("command", "entrypoint"):
        value = getattr(base, key)
        if key in svc.lc.data or value is None:
            continue
        if isinstance(value, list):
            new_list = rw.args(list(value))
            if new_list != value:
                seq = CommentedSeq(new_list)
                seq.fa.set_flow_style()
                append_key(svc, key, seq)
                changed.add(key)
        else:
            new = rw.shell(value)
            if new != value:
                append_key(svc, key, LiteralScalarString(new) if "\n" in new else new)
                changed.add(key)
    if sim in base.depends_on:
        own = svc.get("depends_on") if "depends_on" in svc.lc.data else None
        merged = {**base.depends_on}
        if isinstance(own, CommentedMap):
            merged.update({str(k): v for k, v in own.items()})
        elif isinstance(own, CommentedSeq):
            merged.update({str(k): {"condition": "service_started"} for k in own})
        merged.pop(sim, None)
        _put(svc, "depends_on", _tagged(merged, base.depends_form))
        changed.add("depends_on")
    if any(_dep_name(x) == sim for x in base.links):
        own = list(svc.get("links") or []) if "links" in svc.lc.data else []
        keep = [x for x in list(base.links) + own if _dep_name(x) != sim]
        _put(svc, "links", _tagged(keep, "list"))
        changed.add("links")
    return changed


def _add_env(svc: CommentedMap, overrides: Mapping[str, str], form: str) -> None:
    """Set variables in the service's own `environment:` (which wins over what it inherits
    and over env_file), in the form it already has, else in `form`."""
    own_env = svc.get("environment") if "environment" in svc.lc.data else None
    if not isinstance(own_env, (CommentedSeq, CommentedMap)):
        if form == "list":
            own_env = CommentedSeq(f"{k}={v}" for k, v in overrides.items())
        else:
            own_env = CommentedMap(overrides)
        _put(svc, "environment", own_env)
        return
    for key, new in overrides.items():
        if isinstance(own_env, CommentedSeq):
            append_item(own_env, f"{key}={new}")
        else:
            append_key(own_env, key, new)


def _put(m: CommentedMap, key: str, value: Any) -> None:
    if key in m.lc.data:
        m[key] = value
    else:
        append_key(m, key, value)


def _env_keys(env: Any) -> list[str]:
    if isinstance(env, CommentedSeq):
        return [str(x).split("=", 1)[0] for x in env]
    if isinstance(env, CommentedMap):
        return [str(k) for k in env]
    return []


def _tagged(value: Any, form: str) -> Any:
    """`!override` with what is left, or `!reset []` when nothing is (compose >= 2.24)."""
    if not value:
        node: Any = CommentedSeq()
        node.fa.set_flow_style()
        node.yaml_set_ctag(Tag(suffix="!reset"))
        return node
    if isinstance(value, dict):
        conditions = {v.get("condition") if isinstance(v, dict) else None for v in value.values()}
        if form == "list" and conditions <= {"service_started", None}:
            node = CommentedSeq(list(value))
        else:
            node = CommentedMap()
            for k, v in value.items():
                node[k] = CommentedMap(v) if isinstance(v, dict) else v
    else:
        node = CommentedSeq(value)
    node.yaml_set_ctag(Tag(suffix="!override"))
    return node


# -- include -----------------------------------------------------------------------------------
def _includes(doc: CommentedMap, plan: Plan, out: Derived) -> None:
    inc = doc.get("include")
    if not isinstance(inc, CommentedSeq) or not plan.includes:
        return
    for i in reversed(range(len(inc))):
        item = inc[i]
        if isinstance(item, str):
            if item in plan.includes:
                new = plan.includes[item]
                if new is DROP:
                    del inc[i]
                else:
                    inc[i] = like(item, new)
                out.changed = True
        elif isinstance(item, CommentedMap) and "path" in item:
            path = item["path"]
            if isinstance(path, CommentedSeq):
                for j in reversed(range(len(path))):
                    raw = str(path[j])
                    if raw in plan.includes:
                        new = plan.includes[raw]
                        if new is DROP:
                            del path[j]
                        else:
                            path[j] = like(path[j], new)
                        out.changed = True
                if not len(path):
                    del inc[i]
            elif str(path) in plan.includes:
                new = plan.includes[str(path)]
                if new is DROP:
                    del inc[i]
                else:
                    item["path"] = like(path, new)
                out.changed = True
    if not len(inc):
        delete_key(doc, "include")
