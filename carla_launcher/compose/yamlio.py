"""Round-trip YAML that keeps a compose file's own style, and errors that point at a line."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carla_launcher.errors import InputError

if TYPE_CHECKING:
    from ruamel.yaml import YAML

# ruamel is imported where a document is parsed or dumped, not with this module: finding
# compose files and checking current variants (`sync --check`) never need it.

Doc = Any  # a ruamel round-trip document (CommentedMap for compose files)

# A compose file larger than this is refused unread: real ones are a few KB.
MAX_SOURCE_BYTES = 1 << 20
# Real compose files nest a dozen levels and expand to a few thousand nodes; anything far
# beyond is hostile (a RecursionError in the parser, or a billion-laughs alias bomb).
MAX_DEPTH = 100
MAX_NODES = 100_000


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
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=style.mapping, sequence=style.sequence, offset=style.offset)
    return y


def load(text: str, path: Path | str | None = None) -> tuple[Doc, Style]:
    """Parse one compose file for editing. Invalid YAML becomes an InputError at its line, and
    so does hostile YAML: nesting too deep to parse, aliases that expand without bound."""
    deep = too_deep(text)
    if deep is not None:
        raise InputError(path, deep, f"nested deeper than {MAX_DEPTH} levels; refused unparsed")
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    style = guess_style(text)
    try:
        doc = _yaml(style).load(text)
        _check_size(doc, path)  # first thing after parsing: nothing may walk a bomb before it
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = (e.problem or e.context or "invalid YAML").strip()
        raise InputError(path, line, f"invalid YAML: {problem}") from None
    except YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "invalid YAML"
        raise InputError(path, None, f"invalid YAML: {first}") from None
    except RecursionError:  # the pre-scan's backstop
        raise InputError(path, None, "nested too deeply to parse") from None
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


class _TooBig(Exception):
    def __init__(self, node: Any) -> None:
        self.node = node


def _check_size(doc: Doc, path: Path | str | None) -> None:
    """Refuse a document whose aliases expand to more than MAX_NODES nodes, and keep its anchors.

    ruamel shares an aliased node instead of copying it, so parsing a bomb is cheap; walking it
    (env_to_dict, str(), derive) is what explodes. Each distinct node is sized once (memoised
    by id), so this costs one pass over what the parser built.
    """
    try:
        _expanded(doc, {})
    except _TooBig as e:
        raise InputError(
            path,
            line_of(e.node),
            f"aliases expand to more than {MAX_NODES} nodes (an alias bomb?); refused",
        ) from None


def _expanded(node: Any, sizes: dict[int, int]) -> int:
    """Nodes under `node` with every alias expanded (1 + its children's). Also marks anchors to
    be dumped: ruamel drops anchors nobody references, and a user's `x-tmpl: &t` must survive."""
    if isinstance(node, dict):
        children: Any = [*node.keys(), *node.values()]
    elif isinstance(node, (list, tuple)):
        children = node
    else:
        _keep_anchor(node)
        return 1
    known = sizes.get(id(node))
    if known is not None:
        return known
    _keep_anchor(node)
    sizes[id(node)] = MAX_NODES + 1  # in progress: a node that contains itself is infinite
    total = 1
    for child in children:
        total += _expanded(child, sizes)
        if total > MAX_NODES:
            raise _TooBig(node)
    sizes[id(node)] = total
    return total


def _keep_anchor(node: Any) -> None:
    anchor = getattr(node, "anchor", None)
    if anchor is not None and getattr(anchor, "value", None):
        anchor.always_dump = True


# -- nesting, from the text alone ---------------------------------------------------------------
_LEAD = re.compile(r"^[ \t-]*", re.M)
_DQ_END = re.compile(r'(?:[^"\\]|\\.)*"')
_SQ_END = re.compile(r"(?:[^']|'')*'")


def too_deep(text: str) -> int | None:
    """The line where nesting passes MAX_DEPTH, or None: before the parser recurses into it.

    A bound first (indentation and bracket counts), so a normal file costs two counts and a
    regex; the scan proper follows flow brackets and block indentation, skipping quoted
    strings, comments and block scalars. It may be off by a level or two; it is a guard.
    """
    lead = max((len(m) for m in _LEAD.findall(text)), default=0)
    if 2 * (lead + 1) + text.count("[") + text.count("{") <= MAX_DEPTH:
        return None
    return _scan_depth(text)


def _scan_depth(text: str) -> int | None:
    flow = 0  # open flow brackets
    quote = ""  # the quote of a quoted scalar that goes on to the next line
    scalar_parent = -1  # indentation of the line that opened a block scalar (| or >)
    stack: list[int] = []  # columns of the open block collections
    for n, line in enumerate(text.split("\n"), 1):
        body = line.lstrip(" ")
        indent = len(line) - len(body)
        if scalar_parent >= 0:
            if not body.strip() or indent > scalar_parent:
                continue
            scalar_parent = -1
        i = 0
        if not quote and not flow:
            if not body.strip() or body.startswith("#"):
                continue
            while stack and stack[-1] >= indent:
                stack.pop()
            i = indent
            stack.append(i)
            while line.startswith("- ", i) or line[i:].rstrip() == "-":  # `- - x` nests
                i += 1
                while i < len(line) and line[i] == " ":
                    i += 1
                stack.append(i)
            if len(stack) > MAX_DEPTH:
                return n
        start = True  # where a value may begin: a bracket or quote here opens one
        while i < len(line):
            if quote:
                m = (_DQ_END if quote == '"' else _SQ_END).match(line, i)
                if m is None:
                    break
                quote, i, start = "", m.end(), False
                continue
            c = line[i]
            i += 1
            if c in " \t":
                continue
            if c == "#" and (i == 1 or line[i - 2] in " \t"):
                break
            if start and c in "\"'":
                quote = c
            elif (flow or start) and c in "[{":
                flow += 1
                if len(stack) + flow > MAX_DEPTH:
                    return n
            elif flow and c in "]}":
                flow -= 1
            elif start and not flow and c in "|>":
                scalar_parent = indent
                break
            start = c in "[{,?" if flow else c in ":?" and (i == len(line) or line[i] in " \t")
            if flow and c == ":":
                start = True
    return None


def line_of(node: Any, key: Any = None) -> int | None:
    """1-based line of a mapping key (or sequence index), or of the node itself."""
    from ruamel.yaml.comments import CommentedBase, CommentedMap, CommentedSeq

    if not isinstance(node, CommentedBase):
        return None
    try:
        line: int = node.lc.line  # ruamel's LineCol is untyped: these are 0-based ints
        own = node.lc.data
        if key is not None and (
            (isinstance(node, CommentedMap) and key in own)
            or (isinstance(node, CommentedSeq) and isinstance(key, int) and key in own)
        ):
            line = own[key][0]
        return line + 1
    except (AttributeError, KeyError, TypeError):
        return None


# -- keeping a scalar's style when its text changes ----------------------------------------------
def like(old: Any, new: str) -> Any:
    """The new text in the old scalar's style (quotes, block scalar, chomping, folds)."""
    from ruamel.yaml.scalarstring import FoldedScalarString, ScalarString

    if not isinstance(old, ScalarString):
        return new
    styled = type(old)(new)
    if hasattr(old, "comment"):
        styled.comment = old.comment
    folds = getattr(old, "fold_pos", None)  # a slot ruamel sets only on folded scalars it read
    if isinstance(old, FoldedScalarString) and folds:
        styled.fold_pos = _moved_positions(str(old), new, folds)
    return styled


def _moved_positions(old: str, new: str, positions: list[int]) -> list[int]:
    """Where the folds of a `>` scalar land after some words of it were replaced."""
    import difflib  # not at import: a current folder's `sync --check` never loads it

    moved = []
    ops = difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
    for p in positions:
        for tag, i1, i2, j1, _ in ops:
            if tag == "equal" and i1 <= p < i2:
                moved.append(j1 + p - i1)
                break
    return moved
