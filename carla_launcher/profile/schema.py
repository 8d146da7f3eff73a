"""The profile's JSON Schema and the README's table of fields, both made from `fields.py`.

Editors that speak the YAML language server (VS Code's YAML extension, neovim, Helix, ...)
complete and check a profile whose first line is `# yaml-language-server: $schema=FILE`.
`carla-launch init` writes FILE (`profile.schema.json`) next to the profile it writes; this
repository commits the same file as `profiles/profile.schema.json`:

    python -m carla_launcher.profile.schema            # (re)write profiles/profile.schema.json
    python -m carla_launcher.profile.schema --check    # exit 1 when it differs from the table
    python -m carla_launcher.profile.schema --markdown # the README's table of fields

The schema says what the loader checks that a schema can say (types, allowed values, ranges,
patterns, unknown keys); the loader alone checks what needs code (an address is an address).
It is a little stricter than the loader in one way: text fields must be strings, where the
loader also reads a bare number as text.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from carla_launcher.fsutil import atomic_write
from carla_launcher.profile.fields import PROFILE, REMOTE, TOKEN, Field, Section, walk

SCHEMA_FILE = "profile.schema.json"
MODELINE = f"# yaml-language-server: $schema={SCHEMA_FILE}"
DRAFT = "http://json-schema.org/draft-07/schema#"


def _default(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _describe(f: Field | Section) -> str:
    return f"{f.help} (README: {f.readme})"


def field_schema(f: Field) -> dict[str, Any]:
    """One field: its type (null always allowed: it means the default), rules and help."""
    s: dict[str, Any] = {"description": _describe(f)}
    if f.default is not None:
        s["default"] = _default(f.default)
    text: dict[str, Any] = {"type": "string"}
    if f.pattern:
        text["pattern"] = f.pattern
    if f.kind == "bool":
        s["type"] = ["boolean", "null"]
    elif f.kind == "int":
        s["type"] = ["integer", "null"]
        if f.minimum is not None:
            s["minimum"] = f.minimum
        if f.maximum is not None:
            s["maximum"] = f.maximum
    elif f.kind == "list":
        s["type"] = ["array", "null"]
        s["items"] = text
    elif f.kind == "gpus":
        index = {"type": "integer", "minimum": 0}
        s["anyOf"] = [
            {"const": "all"},
            {"type": "array", "items": index, "minItems": 1, "uniqueItems": True},
            {"type": "null"},
        ]
    elif f.kind == "switch":
        s["enum"] = [False, True, "auto", None]
    elif f.kind == "hosts":
        s["anyOf"] = [text, {"type": "array", "items": text, "minItems": 1}, {"type": "null"}]
    elif f.choices:
        s["enum"] = [*f.choices, None]
    else:
        s["type"] = ["string", "null"]
        if f.pattern:
            s["pattern"] = f.pattern
    return s


def section_schema(section: Section) -> dict[str, Any]:
    """A mapping: its fields, nothing else (unknown keys are refused, as the loader does)."""
    props: dict[str, Any] = {}
    for f in section.fields:
        props[f.key] = section_schema(f) if isinstance(f, Section) else field_schema(f)
    return {
        "type": ["object", "null"],
        "description": _describe(section),
        "properties": props,
        "additionalProperties": False,
    }


def schema() -> dict[str, Any]:
    """The JSON Schema (draft-07, what editors support best) of a profile."""
    s = section_schema(PROFILE)
    s["type"] = "object"
    s["required"] = ["remote"]
    # remote.host is required unless the server runs here (`connector: local`)
    local = {"properties": {"connector": {"const": "local"}}, "required": ["connector"]}
    host = {"type": "string", "pattern": TOKEN}
    s["properties"][REMOTE.key] |= {
        "if": local,
        "else": {
            "required": ["host"],
            "properties": {
                "host": {"anyOf": [host, {"type": "array", "items": host, "minItems": 1}]}
            },
        },
    }
    s["properties"][REMOTE.key]["type"] = "object"
    return {
        "$schema": DRAFT,
        "$comment": "Generated from carla_launcher/profile/fields.py; do not edit by hand.",
        "title": "carla-launch profile",
        **s,
    }


def render() -> str:
    """The schema file's text (stable: sorted by the table, two-space indent)."""
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


def _md_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def markdown() -> str:
    """The README's table: every field, its default and what it is for."""
    rows = ["| field | default | what it is |", "|---|---|---|"]
    for name, f in walk():
        allowed = " (" + " \\| ".join(f.choices) + ")" if f.choices else ""
        help_text = f.help.replace("|", "\\|")
        more = "" if f.readme == "Profiles" else f"; see {f.readme.split(':')[0]}"
        rows.append(f"| `{name}` | `{_md_value(f.default)}`{allowed} | {help_text}{more} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str]) -> int:
    """`[--check] [FILE]`: write the schema to FILE (default: profiles/profile.schema.json
    here), or exit 1 when FILE differs from the table; `--markdown` prints the README's table."""
    if "--markdown" in argv:
        sys.stdout.write(markdown())
        return 0
    names = [a for a in argv if not a.startswith("--")]
    target = Path(names[0] if names else f"profiles/{SCHEMA_FILE}")
    text = render()
    if "--check" in argv:
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        if current != text:
            sys.stderr.write(
                f"{target}: out of date; run python -m carla_launcher.profile.schema\n"
            )
            return 1
        return 0
    atomic_write(target, text)
    sys.stdout.write(f"wrote {target}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
