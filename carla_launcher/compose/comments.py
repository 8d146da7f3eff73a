"""Delete a mapping key without moving anybody's comments.

ruamel keeps the lines between two siblings (blank line, next key's `# heading`) on the
last node of the previous sibling. A plain `del` therefore keeps the deleted block's
heading and loses the next one's. These helpers move the deleted subtree's tail to where
it belongs.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString
from ruamel.yaml.tokens import CommentToken

_BLOCK = (LiteralScalarString, FoldedScalarString)
_Slot = tuple[Any, Any]  # (owner, index) of one comment slot in ruamel's `ca` structures


def _slot(node: Any) -> _Slot | None:
    """(owner, index) of the comment slot after the node's last line."""
    if not isinstance(node, (CommentedMap, CommentedSeq)) or not len(node) or node.fa.flow_style():
        return None
    if node.ca.end:
        return node.ca, "end"
    if isinstance(node, CommentedMap):
        own = node.lc.data or {k: (i, 0) for i, k in enumerate(node)}
        last = max(own, key=lambda k: own[k][0])
        child, idx = node[last], 2
    else:
        last, child, idx = len(node) - 1, node[-1], 0
    deeper = _slot(child)
    if deeper and _read(*deeper)[1]:
        return deeper
    return node.ca.items.setdefault(last, [None] * 4), idx


def _read(owner: Any, idx: Any) -> tuple[CommentToken | None, str]:
    """(end-of-line comment token or None, text of the following comment lines)."""
    if idx == "end":
        text = "".join(
            (" " * t.column if t.value.startswith("#") else "") + t.value for t in owner.end or []
        )
        return None, text
    tok = owner[idx]
    if tok is None:
        return None, ""
    if isinstance(tok, list):  # pre-comment lists (rare): flatten
        return None, "".join(t.value for t in tok if t is not None)
    if tok.value.startswith("#"):
        head, _, rest = tok.value.partition("\n")
        return CommentToken(head + "\n", CommentMark(tok.column), None), rest
    return None, tok.value


def _write(owner: Any, idx: Any, eol: CommentToken | None, text: str) -> None:
    if idx == "end":
        owner.end = [
            CommentToken(
                line.lstrip(" ") + "\n", CommentMark(len(line) - len(line.lstrip(" "))), None
            )
            for line in text.splitlines()
        ] or None
    elif eol is None and not text:
        owner[idx] = None
    else:
        owner[idx] = CommentToken(
            (eol.value if eol else "") + text, CommentMark(eol.column if eol else 0), None
        )


def delete_key(
    m: CommentedMap, key: Any, parent: CommentedMap | None = None, parent_key: Any = None
) -> None:
    """`del m[key]`, keeping the comments of the neighbours where they were."""
    own = m.lc.data
    if key not in own or len(own) != len([k for k in m if k in own]):
        # merged keys or no position data: a plain delete is all we can do
        del m[key]
        own.pop(key, None)
        return
    keys = sorted(own, key=lambda k: own[k][0])
    i = keys.index(key)
    slot = _slot(m[key])
    tail = _read(*slot)[1] if slot else ""
    if slot is None and key in m.ca.items and m.ca.items[key][2] is not None:
        tail = _read(m.ca.items[key], 2)[1]
    del m[key]
    own.pop(key, None)
    m.ca.items.pop(key, None)
    if i == 0:
        col = own[keys[1]][1] if len(keys) > 1 else 0
        if len(keys) > 1:  # the new first key needs no blank line above it
            pre = m.ca.items.get(keys[1], [None] * 4)[1]
            while pre and pre[0] is not None and not pre[0].value.strip():
                pre.pop(0)
        toks = [
            CommentToken(line.strip() + "\n", CommentMark(col), None)
            for line in tail.splitlines()
            if line.strip()
        ] or None
        if parent is None:  # top level: the lines above the first key are the file's own
            keep = list(m.ca.comment[1] or []) if m.ca.comment else []
            toks = (keep + (toks or [])) or None
        if m.ca.comment:
            m.ca.comment[1] = toks
        elif toks:
            m.ca.comment = [None, toks]
        if parent is not None and parent_key in parent.ca.items:
            parent.ca.items[parent_key][3] = toks
        return
    prev: _Slot = _slot(m[keys[i - 1]]) or (m.ca.items.setdefault(keys[i - 1], [None] * 4), 2)
    eol, _deleted_heading = _read(*prev)
    _write(*prev, eol, tail)


def _slot_after(m: CommentedMap, key: Any) -> _Slot:
    """The comment slot after key's value, for a value we just put there."""
    value = m[key]
    if isinstance(value, CommentedSeq) and len(value) and not value.fa.flow_style():
        return value.ca.items.setdefault(len(value) - 1, [None] * 4), 0
    if isinstance(value, CommentedMap) and len(value) and not value.fa.flow_style():
        return value.ca.items.setdefault(list(value)[-1], [None] * 4), 2
    return m.ca.items.setdefault(key, [None] * 4), 2


def append_key(m: CommentedMap, key: Any, value: Any) -> None:
    """Add a key after the last own key; the comment lines below that key stay below ours."""
    own = m.lc.data
    last_keys = [k for k in sorted(own, key=lambda k: own[k][0]) if k in m]
    tail = ""
    if last_keys:
        last = last_keys[-1]
        slot: _Slot = _slot(m[last]) or (m.ca.items.setdefault(last, [None] * 4), 2)
        eol, tail = _read(*slot)
        _write(*slot, eol, "")
        # a block scalar ends its own last line; any other value leaves that newline to us
        if isinstance(m[last], _BLOCK) and _slot(m[last]) is None:
            tail = "\n" + tail
    m[key] = value
    if tail:
        if isinstance(value, _BLOCK) and tail.startswith("\n"):
            tail = tail[1:]
        _write(*_slot_after(m, key), None, tail)


def append_item(seq: CommentedSeq, value: Any) -> None:
    """Append to a block sequence; the comment lines below its last item stay below ours."""
    tail = ""
    if len(seq) and not seq.fa.flow_style():
        slot: _Slot = _slot(seq) or (seq.ca.items.setdefault(len(seq) - 1, [None] * 4), 0)
        eol, tail = _read(*slot)
        _write(*slot, eol, "")
    seq.append(value)
    if tail:
        _write(seq.ca.items.setdefault(len(seq) - 1, [None] * 4), 0, None, tail)
