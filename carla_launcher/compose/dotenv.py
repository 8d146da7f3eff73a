"""Read `.env` and `env_file:` files the way compose does, enough to see a CARLA host in them.

Pure: text in, variables out. Compose's dialect: `KEY=VALUE`, an optional `export `, single
quotes literal, double quotes with escapes, `#` comments (inline only after a space when the
value is unquoted), blank lines ignored, `KEY` alone means "from the environment" (skipped).
"""

from __future__ import annotations

import re

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*)$")


def parse(text: str) -> dict[str, str]:
    """The variables a dotenv text sets, in order; malformed lines are ignored."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        out[m.group(1)] = _value(m.group(2))
    return out


def _value(raw: str) -> str:
    raw = raw.strip()
    if raw[:1] in ("'", '"'):
        q = raw[0]
        end = raw.find(q, 1)
        while q == '"' and end > 0 and raw[end - 1] == "\\":
            end = raw.find(q, end + 1)
        inner = raw[1:end] if end > 0 else raw[1:]
        return inner.replace('\\"', '"').replace("\\n", "\n") if q == '"' else inner
    return re.split(r"\s+#", raw, maxsplit=1)[0].strip()
