"""The profile `carla-launch init` writes: every field of `fields.py` with its value or default,
each under a comment that says what it is and which README section explains it, and the
modeline that points editors at the schema written next to it. Pure."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping

from ruamel.yaml import YAML
from ruamel.yaml.representer import RoundTripRepresenter

from carla_launcher.profile.fields import PROFILE, Section
from carla_launcher.profile.schema import MODELINE, SCHEMA_FILE

WIDTH = 99  # the comments' width, like the code's


class _Representer(RoundTripRepresenter):
    """Writes null as `null`: `address: null` says "discover" where `address:` says nothing.
    A subclass, so that other YAML writers in this process keep ruamel's default."""


_Representer.add_representer(
    type(None),
    lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"),
)


def yaml_value(value: object) -> str:
    """One value as YAML writes it on one line (quoted when it must be, lists in flow style)."""
    yaml = YAML()
    yaml.Representer = _Representer
    yaml.default_flow_style = True
    yaml.width = 1 << 16  # a long URL stays on its line
    out = io.StringIO()
    yaml.dump([list(value) if isinstance(value, tuple) else value], out)
    return out.getvalue().strip()[1:-1]  # the value inside `[...]`


def header(version: str) -> list[str]:
    return [
        MODELINE,
        f"# A carla-launch profile, written by `carla-launch init` (carla-launch {version}).",
        "# Every field is here with its value or its default (null: not set), under a comment",
        "# that says what it is for; the section of carla-launch's README that explains it is",
        "# named above each group of fields (and above a field explained elsewhere).",
        f"# Editors with the YAML language server complete and check it from {SCHEMA_FILE},",
        "# written next to this file (`carla-launch init --schema` rewrites it).",
    ]


def render(values: Mapping[str, object], version: str) -> str:
    """The profile's text; `values` holds dotted field names (`server.package.url`) that differ
    from the table's defaults."""
    lines = header(version)
    for section in PROFILE.fields:
        assert isinstance(section, Section)  # noqa: S101  the top level holds sections only
        lines += ["", *_section(section, values, section.key, 0)]
    return "\n".join(lines) + "\n"


def _section(section: Section, values: Mapping[str, object], name: str, depth: int) -> list[str]:
    pad = "  " * depth
    lines = _comment(f"{section.help} (README: {section.readme})", pad)
    lines.append(f"{pad}{section.key}:")
    for f in section.fields:
        if isinstance(f, Section):
            lines += _section(f, values, f"{name}.{f.key}", depth + 1)
            continue
        more = f" (README: {f.readme})" if f.readme != section.readme else ""
        inner = "  " * (depth + 1)
        lines += _comment(f.help + more, inner)
        lines.append(f"{inner}{f.key}: {yaml_value(values.get(f'{name}.{f.key}', f.default))}")
    return lines


def _comment(text: str, pad: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=f"{pad}# ", subsequent_indent=f"{pad}# ")
