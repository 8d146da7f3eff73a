"""Round-trip YAML that keeps a compose file's own style, and errors that point at a line."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedBase, CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from carla_launcher.errors import InputError

Doc = Any  # a ruamel round-trip document (CommentedMap for compose files)

# A compose file larger than this is refused unread: real ones are a few KB.
MAX_SOURCE_BYTES = 1 << 20


@dataclass(frozen=True)
class Style:
    """Indentation of a file, so that a dump changes only the lines we edit."""

    mapping: int = 2
    sequence: int = 4
    offset: int = 2


_KEY = re.compile(r"^( *)[^\s#-][^:#]*:(\s|$)")
_ITEM = re.compile(r"^( *)- ")


def guess_style(text: str) -> Style:
    """Read the indentation from the text itself (ruamel's guesser only sees sequences)."""
    mapping = None
    offset = None
    prev_key_indent: int | None = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ITEM.match(line)
        if m and prev_key_indent is not None and offset is None:
            offset = max(0, len(m.group(1)) - prev_key_indent)
            prev_key_indent = None
            continue
        k = _KEY.match(line)
        if k:
            indent = len(k.group(1))
            if mapping is None and prev_key_indent is not None and indent > prev_key_indent:
                mapping = indent - prev_key_indent
            prev_key_indent = indent
        else:
            prev_key_indent = None
        if mapping is not None and offset is not None:
            break
    mapping = mapping or 2
    offset = mapping if offset is None else offset
    return Style(mapping=mapping, sequence=offset + 2, offset=offset)


def _yaml(style: Style) -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=style.mapping, sequence=style.sequence, offset=style.offset)
    return y


def load(text: str, path: Path | str | None = None) -> tuple[Doc, Style]:
    """Parse one compose file for editing. Invalid YAML becomes an InputError at its line."""
    style = guess_style(text)
    try:
        doc = _yaml(style).load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = (e.problem or e.context or "invalid YAML").strip()
        raise InputError(path, line, f"invalid YAML: {problem}") from None
    except YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "invalid YAML"
        raise InputError(path, None, f"invalid YAML: {first}") from None
    _keep_anchors(doc)
    return doc, style


_PARSED: dict[str, tuple[Doc, Style]] = {}
_PARSED_MAX = 128  # a few versions of every file of a large project


def load_shared(text: str, path: Path | str | None = None) -> tuple[Doc, Style]:
    """`load`, memoised by content: a long-running daemon re-parses only what changed.

    The document is shared; whoever edits one must `forget(text)` first.
    """
    hit = _PARSED.get(text)
    if hit is not None:
        return hit
    parsed = load(text, path)
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.pop(next(iter(_PARSED)))
    _PARSED[text] = parsed
    return parsed


def forget(text: str) -> None:
    _PARSED.pop(text, None)


def dump(doc: Doc, style: Style) -> str:
    out = io.StringIO()
    _yaml(style).dump(doc, out)
    return out.getvalue()


def _keep_anchors(node: Any, seen: set[int] | None = None) -> None:
    """ruamel drops anchors nobody references on dump; a user's `x-tmpl: &t` must survive."""
    seen = seen if seen is not None else set()
    if id(node) in seen:
        return
    seen.add(id(node))
    anchor = getattr(node, "anchor", None)
    if anchor is not None and getattr(anchor, "value", None):
        anchor.always_dump = True
    if isinstance(node, CommentedMap):
        for value in node.values():
            _keep_anchors(value, seen)
    elif isinstance(node, CommentedSeq):
        for item in node:
            _keep_anchors(item, seen)


def line_of(node: Any, key: Any = None) -> int | None:
    """1-based line of a mapping key (or sequence index), or of the node itself."""
    if not isinstance(node, CommentedBase):
        return None
    try:
        if key is None:
            return node.lc.line + 1
        if isinstance(node, CommentedMap) and key in node.lc.data:
            return node.lc.data[key][0] + 1
        if isinstance(node, CommentedSeq) and isinstance(key, int) and key in node.lc.data:
            return node.lc.data[key][0] + 1
        return node.lc.line + 1
    except (AttributeError, KeyError, TypeError):
        return None
