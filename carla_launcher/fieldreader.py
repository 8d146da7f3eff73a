"""Reading one YAML mapping of a hand-written file (a profile) with the line of every key, so
that each error names file, line and field, and unknown keys are refused, not ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar, overload

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from carla_launcher.errors import InputError

_T = TypeVar("_T")


class Fields:
    """Reads one mapping of a profile, remembering lines for errors and refusing unknown keys."""

    def __init__(self, path: Path, node: Any, where: str, line: int | None) -> None:
        self.path, self.where, self.at = path, where, line
        if node is None:
            node = CommentedMap()
        if not isinstance(node, CommentedMap):
            raise InputError(path, line, "must be a mapping", where)
        self.node = node
        self.seen: set[str] = set()

    def line(self, key: str) -> int | None:
        try:
            line: int = self.node.lc.data[key][0]  # ruamel's LineCol is untyped: 0-based
            return line + 1
        except (KeyError, AttributeError, TypeError):
            if self.at is not None:  # a missing key: point at the mapping's own key
                return self.at
            own = getattr(getattr(self.node, "lc", None), "line", None)
            return own + 1 if isinstance(own, int) else None

    def err(self, key: str, message: str) -> InputError:
        return InputError(
            self.path, self.line(key), message, f"{self.where}.{key}" if self.where else key
        )

    @overload
    def get(self, key: str, kind: type[_T], default: None = None) -> _T | None: ...
    @overload
    def get(self, key: str, kind: type[_T], default: _T) -> _T: ...
    @overload
    def get(self, key: str, kind: tuple[type, ...], default: None = None) -> Any: ...
    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        """The value of `key` if it is of `kind` (numbers are accepted as text), else an error
        naming the line; `default` when the key is missing or null."""
        self.seen.add(key)
        if key not in self.node or self.node[key] is None:
            return default
        value = self.node[key]
        if kind is int and isinstance(value, bool):
            raise self.err(key, f"must be a whole number, not {value!r}")
        if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, kind):
            words = {
                "str": "text",
                "int": "a whole number",
                "bool": "true or false",
                "CommentedSeq": "a list",
                "CommentedMap": "a mapping",
            }
            kinds = (kind,) if isinstance(kind, type) else kind
            names = " or ".join(words.get(k.__name__, k.__name__) for k in kinds)
            raise self.err(key, f"must be {names}, not {value!r}")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in options:
            raise self.err(key, f"must be one of {', '.join(options)}, not {value!r}")
        return value

    def port(self, key: str, default: int | None) -> int | None:
        value = self.get(key, int, default)
        if value is not None and not 1 <= value <= 65535:
            raise self.err(key, f"must be a port number (1-65535), not {value}")
        return value

    def sub(self, key: str) -> Fields:
        self.seen.add(key)
        return Fields(
            self.path,
            self.node.get(key),
            f"{self.where}.{key}" if self.where else key,
            self.line(key),
        )

    def done(self) -> None:
        for key in self.node:
            if key not in self.seen:
                known = ", ".join(sorted(self.seen))
                raise self.err(str(key), f"unknown field (known here: {known})")


def item_line(seq: CommentedSeq, index: int, fallback: int | None) -> int | None:
    """The 1-based line of a sequence item (flow or block), for errors."""
    try:
        line: int = seq.lc.data[index][0]  # ruamel's LineCol is untyped: 0-based
        return line + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        return fallback
