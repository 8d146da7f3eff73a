"""A compose project as compose sees it: entry files, their include/extends graph, and the
effective (extends-resolved) services. Only reads; never writes.

This is a small model of compose's loader, enough to find the simulator and what points at
it. The real loader (`docker compose config`) is what the tests judge the variants with.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from carla_launcher.compose import yamlio
from carla_launcher.compose.fields import (
    container_ports,
    depends_to_dict,
    env_file_paths,
    env_to_dict,
    resources_used,
    tag_of,
)
from carla_launcher.errors import InputError
from carla_launcher.fsutil import read_regular

_V = TypeVar("_V")


@dataclass
class SourceFile:
    path: Path
    text: str
    doc: Any
    style: yamlio.Style

    @property
    def services(self) -> CommentedMap:
        s = self.doc.get("services") if isinstance(self.doc, CommentedMap) else None
        return s if isinstance(s, CommentedMap) else CommentedMap()

    def line(self, *keys: Any) -> int | None:
        """Line of a nested key: line('services', 'agent', 'environment')."""
        node, line = self.doc, yamlio.line_of(self.doc)
        for key in keys:
            if not isinstance(node, (CommentedMap, CommentedSeq)):
                break
            line = yamlio.line_of(node, key) or line
            try:
                node = node[key]
            except (KeyError, IndexError, TypeError):
                break
        return line


@dataclass(frozen=True)
class Include:
    """One path of an `include:` entry (long syntax may list several)."""

    raw: str  # as written in the file
    path: Path  # resolved
    line: int | None


@dataclass
class Service:
    """A service with its `extends` resolved: the fields the derivation needs, as plain data."""

    name: str
    file: Path
    line: int | None
    image: str | None = None
    command: str | list[str] | None = None
    entrypoint: str | list[str] | None = None
    hostname: str | None = None
    container_name: str | None = None
    aliases: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)  # static ipv4_address / ipv6_address
    ports: list[str] = field(default_factory=list)  # container ports it publishes or exposes
    env_files: list[str] = field(default_factory=list)  # env_file paths as written
    resources: list[str] = field(default_factory=list)  # "network:x", "volume:y" it uses
    environment: dict[str, str | None] = field(default_factory=dict)
    env_form: str = "list"
    depends_on: dict[str, Any] = field(default_factory=dict)
    depends_form: str = "list"
    links: list[str] = field(default_factory=list)
    network_mode: str | None = None
    volumes_from: list[str] = field(default_factory=list)
    field_lines: dict[str, int | None] = field(default_factory=dict)

    def command_text(self) -> str:
        parts = []
        for v in (self.entrypoint, self.command):
            if isinstance(v, list):
                parts.append(" ".join(str(x) for x in v))
            elif v:
                parts.append(str(v))
        return " ".join(parts)


class Project:
    """Loads and caches compose files; resolves includes and extends like compose does."""

    def __init__(self) -> None:
        self._files: dict[Path, SourceFile] = {}
        self._effective: dict[tuple[Path, str], Service] = {}
        self._env_texts: dict[Path, str | None] = {}

    # -- files ------------------------------------------------------------------------------
    def file(
        self, path: Path, referenced_from: tuple[Path, int | None] | None = None
    ) -> SourceFile:
        path = Path(path).absolute()
        cached = self._files.get(path)
        if cached is not None:
            return cached
        try:
            size = path.stat().st_size
            if size > yamlio.MAX_SOURCE_BYTES:
                raise InputError(
                    path,
                    None,
                    f"{size} bytes: larger than {yamlio.MAX_SOURCE_BYTES} "
                    "(a compose file is a few KB; is this the right file?)",
                )
            text = read_regular(path).decode("utf-8-sig")  # compose accepts a BOM; so do we
        except FileNotFoundError:
            if path.is_symlink():
                where = referenced_from or (path, None)
                raise InputError(
                    where[0],
                    where[1],
                    f"broken symlink to {path.readlink()}: {path.name} not found",
                ) from None
            if referenced_from:
                raise InputError(
                    referenced_from[0], referenced_from[1], f"file not found: {path}"
                ) from None
            raise InputError(path, None, "file not found") from None
        except UnicodeDecodeError as e:
            raise InputError(
                path, None, f"not UTF-8 text (byte {e.start}); compose reads UTF-8"
            ) from None
        except OSError as e:
            where = referenced_from or (path, None)
            raise InputError(where[0], where[1], f"cannot read {path}: {e.strerror}") from None
        doc, style = yamlio.load_shared(text, path)
        if doc is None:
            doc = CommentedMap()
        if not isinstance(doc, CommentedMap):
            raise InputError(path, 1, "a compose file must be a mapping at its top level")
        services = doc.get("services")
        if "services" in doc and not isinstance(services, CommentedMap):
            raise InputError(path, yamlio.line_of(doc, "services"), "must be a mapping", "services")
        sf = SourceFile(path, text, doc, style)
        self._files[path] = sf
        return sf

    def env_text(self, path: Path) -> str | None:
        """A `.env` or `env_file:` file's text, or None when there is none to read."""
        path = Path(path).absolute()
        if path not in self._env_texts:
            try:
                if path.stat().st_size > yamlio.MAX_SOURCE_BYTES:
                    raise InputError(path, None, f"larger than {yamlio.MAX_SOURCE_BYTES} bytes")
                self._env_texts[path] = read_regular(path).decode("utf-8-sig")
            except (FileNotFoundError, NotADirectoryError):
                self._env_texts[path] = None
            except (OSError, UnicodeDecodeError) as e:
                raise InputError(path, None, f"cannot read it: {e}") from None
        return self._env_texts[path]

    def take(self, path: Path) -> SourceFile:
        """The file's parsed document, handed over for editing: the next reader parses anew."""
        sf = self.file(path)
        yamlio.forget(sf.text)
        del self._files[sf.path]
        self._effective = {k: v for k, v in self._effective.items() if k[0] != sf.path}
        return sf

    # -- include graph --------------------------------------------------------------------------
    def includes(self, sf: SourceFile) -> list[Include]:
        inc = sf.doc.get("include")
        if inc is None:
            return []
        if not isinstance(inc, CommentedSeq):
            raise InputError(sf.path, sf.line("include"), "must be a list", "include")
        out = []
        for i, item in enumerate(inc):
            line = yamlio.line_of(inc, i)
            if isinstance(item, str):
                paths = [item]
            elif isinstance(item, CommentedMap) and "path" in item:
                p = item["path"]
                paths = list(p) if isinstance(p, CommentedSeq) else [p]
                if not paths or not all(isinstance(x, str) and x for x in paths):
                    raise InputError(
                        sf.path,
                        line,
                        "path must be a file name or a list of them",
                        f"include[{i}].path",
                    )
            else:
                raise InputError(sf.path, line, "needs a path", f"include[{i}]")
            for raw in paths:
                if "://" in raw or raw.startswith("oci:") or raw.startswith("git@"):
                    raise InputError(
                        sf.path, line, f"remote includes are not supported: {raw}", "include"
                    )
                out.append(Include(raw, (sf.path.parent / raw).absolute(), line))
        return out

    def model(self, path: Path, _stack: tuple[Path, ...] = ()) -> dict[str, Service]:
        """Every service of the project whose entry file is `path`, includes resolved."""
        sf = self.file(path)
        if sf.path in _stack:
            raise InputError(sf.path, None, "include cycle: " + " -> ".join(p.name for p in _stack))
        services: dict[str, Service] = {}
        for inc in self.includes(sf):
            self.file(inc.path, (sf.path, inc.line))
            for name, svc in self.model(inc.path, (*_stack, sf.path)).items():
                services[name] = svc
        for name in sf.services:
            services[str(name)] = self.effective(sf.path, str(name))
        return services

    # -- extends ----------------------------------------------------------------------------
    def extends_target(self, sf: SourceFile, name: str) -> tuple[Path, str, bool] | None:
        """(file, service, from_other_file) that `name` extends, or None."""
        node = sf.services.get(name)
        if not isinstance(node, CommentedMap) or "extends" not in node:
            return None
        ext = node["extends"]
        line = sf.line("services", name, "extends")
        if isinstance(ext, str):
            return sf.path, ext, False
        if isinstance(ext, CommentedMap) and "service" in ext:
            if "file" in ext and ext["file"] is not None:
                target = (sf.path.parent / str(ext["file"])).absolute()
                self.file(target, (sf.path, line))
                return target, str(ext["service"]), target != sf.path
            return sf.path, str(ext["service"]), False
        raise InputError(sf.path, line, "needs a service", "extends")

    def effective(
        self,
        path: Path,
        name: str,
        _stack: tuple[tuple[Path, str], ...] = (),
        referenced_from: tuple[Path, int | None] | None = None,
    ) -> Service:
        key = (Path(path).absolute(), name)
        if key in self._effective:
            return self._effective[key]
        if key in _stack:
            raise InputError(key[0], None, f"extends cycle at service {name}")
        sf = self.file(key[0])
        node = sf.services.get(name)
        line = sf.line("services", name)
        if node is None:
            where = referenced_from or (sf.path, None)
            raise InputError(
                where[0],
                where[1],
                f"extends a service that {sf.path.name} does not have: {name!r}",
                "extends",
            )
        if not isinstance(node, CommentedMap):
            raise InputError(sf.path, line, "a service must be a mapping", f"services.{name}")
        _check_types(sf, name, node)
        target = self.extends_target(sf, name)
        if target is not None:
            base = self.effective(
                target[0],
                target[1],
                (*_stack, key),
                (sf.path, sf.line("services", name, "extends")),
            )
            svc = Service(
                name=name,
                file=sf.path,
                line=line,
                image=base.image,
                command=base.command,
                entrypoint=base.entrypoint,
                hostname=base.hostname,
                container_name=None,  # compose does not inherit container_name
                aliases=list(base.aliases),
                addresses=list(base.addresses),
                ports=list(base.ports),
                env_files=list(base.env_files),
                resources=list(base.resources),
                environment=dict(base.environment),
                env_form=base.env_form,
                depends_on=dict(base.depends_on),
                depends_form=base.depends_form,
                links=list(base.links),
                network_mode=base.network_mode,
                volumes_from=list(base.volumes_from),
                field_lines=dict(base.field_lines),
            )
        else:
            svc = Service(name=name, file=sf.path, line=line)
        self._apply_own(svc, sf, name, node)
        self._effective[key] = svc
        return svc

    @staticmethod
    def _apply_own(svc: Service, sf: SourceFile, name: str, node: CommentedMap) -> None:
        def here(k: str) -> int | None:
            return sf.line("services", name, k)

        for k in ("image", "hostname", "container_name", "network_mode"):
            if k in node and node[k] is not None:
                setattr(svc, k, str(node[k]))
                svc.field_lines[k] = here(k)
        for k in ("command", "entrypoint"):
            if k in node:
                v = node[k]
                setattr(
                    svc,
                    k,
                    [str(x) for x in v]
                    if isinstance(v, CommentedSeq)
                    else (None if v is None else str(v)),
                )
                svc.field_lines[k] = here(k)
        if "environment" in node:
            svc.environment, svc.env_form = _merged(
                node["environment"], svc.environment, env_to_dict
            )
            svc.field_lines["environment"] = here("environment")
        if "depends_on" in node:
            svc.depends_on, svc.depends_form = _merged(
                node["depends_on"], svc.depends_on, depends_to_dict
            )
            svc.field_lines["depends_on"] = here("depends_on")
        if "links" in node and isinstance(node["links"], CommentedSeq):
            own_links = [str(x) for x in node["links"]]
            svc.links = own_links if tag_of(node["links"]) else svc.links + own_links
            svc.field_lines["links"] = here("links")
        if "volumes_from" in node and isinstance(node["volumes_from"], CommentedSeq):
            svc.volumes_from = svc.volumes_from + [str(x) for x in node["volumes_from"]]
            svc.field_lines["volumes_from"] = here("volumes_from")
        nets = node.get("networks")
        if isinstance(nets, CommentedMap):
            for cfg in nets.values():
                if not isinstance(cfg, CommentedMap):
                    continue
                if isinstance(cfg.get("aliases"), CommentedSeq):
                    svc.aliases += [str(a) for a in cfg["aliases"]]
                for k in ("ipv4_address", "ipv6_address"):
                    if isinstance(cfg.get(k), str) and cfg[k]:
                        svc.addresses.append(cfg[k])
        svc.ports += container_ports(node.get("ports")) + container_ports(node.get("expose"))
        svc.resources += resources_used(node)
        env_file = node.get("env_file")
        if env_file is not None:
            svc.env_files += env_file_paths(env_file)
            svc.field_lines["env_file"] = here("env_file")


def _merged(
    node: Any, inherited: dict[str, _V], to_dict: Callable[[Any], dict[str, _V]]
) -> tuple[dict[str, _V], str]:
    """A mapping-or-list field (`environment`, `depends_on`) over what `extends` gave: merged
    key by key, or replaced under `!override`/`!reset`; and the form it was written in."""
    own = to_dict(node)
    value = own if tag_of(node) in ("!override", "!reset") else {**inherited, **own}
    return value, "list" if isinstance(node, CommentedSeq) else "map"


def _check_types(sf: SourceFile, name: str, node: CommentedMap) -> None:
    """What compose would refuse in the fields we read: refuse it too, at its line."""

    def bad(key: str, what: str) -> InputError:
        return InputError(
            sf.path, sf.line("services", name, key), f"must be {what}", f"services.{name}.{key}"
        )

    for key in ("command", "entrypoint"):
        v = node.get(key)
        if isinstance(v, CommentedSeq) and not all(isinstance(x, str) for x in v):
            raise bad(key, 'a string or a list of strings (quote numbers: "2000")')
        if v is not None and not isinstance(v, (str, CommentedSeq)):
            raise bad(key, "a string or a list of strings")
    env = node.get("environment")
    if isinstance(env, CommentedSeq) and not all(isinstance(x, str) for x in env):
        raise bad("environment", "a list of KEY=VALUE strings")
    if isinstance(env, CommentedMap) and any(isinstance(v, (list, dict)) for v in env.values()):
        raise bad("environment", "a mapping of names to strings, numbers or booleans")
    if env is not None and not isinstance(env, (CommentedSeq, CommentedMap)):
        raise bad("environment", "a list or a mapping")
    for key in ("depends_on", "links", "volumes_from"):
        v = node.get(key)
        if v is not None and not isinstance(
            v, (CommentedSeq, CommentedMap) if key == "depends_on" else CommentedSeq
        ):
            raise bad(key, "a list" + (" or a mapping" if key == "depends_on" else ""))


def project_name(entry: SourceFile) -> str:
    """The name compose gives the project: top-level `name:` or the folder's name."""
    name = entry.doc.get("name")
    raw = name if isinstance(name, str) and "$" not in name else entry.path.parent.name
    return re.sub(r"[^a-z0-9_-]", "", raw.lower())
