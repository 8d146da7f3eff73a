"""Which files of a folder are compose entry files, and what their variants are called.

Reads only the files' heads; never parses more than it must to tell a compose file apart.
"""

from __future__ import annotations

import re
from pathlib import Path

COMPOSE_SUFFIXES = (".yaml", ".yml")
GENERATED_MARK = "# carla-launch: source-hash="


def is_generated(text: str) -> bool:
    return GENERATED_MARK in text[:2000]


def find_entries(folder: Path) -> list[Path]:
    """Compose files in a folder: YAML with top-level `services:` or `include:`, not generated."""
    found = []
    for p in sorted(folder.iterdir()):
        if p.suffix not in COMPOSE_SUFFIXES or not p.is_file() or p.name.startswith("."):
            continue
        try:
            head = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            found.append(p)  # let planning say it is not UTF-8, rather than skip it silently
            continue
        except OSError:
            continue
        if is_generated(head):
            continue
        if re.search(r"^(services|include)\s*:", head, re.M) or _top_level_compose(head):
            found.append(p)
    names = {p.name for p in found}
    # a hand-made variant of another entry (the old way) is a variant, not an entry
    return [p for p in found if not any(variant_name(n) == p.name for n in names if n != p.name)]


def _top_level_compose(text: str) -> bool:
    """Flow-style (JSON) compose files: parse to see whether `services` is a top-level key."""
    if not re.search(r"""^\s*[{"']|^\s*["']?(services|include)["']?\s*:""", text, re.M):
        return False
    try:
        from ruamel.yaml import YAML

        doc = YAML(typ="safe").load(text)
    except Exception:  # an invalid file is not a compose file we can tell apart
        return False
    return isinstance(doc, dict) and ("services" in doc or "include" in doc)


def variant_name(name: str) -> str:
    """docker-compose.yml -> docker-compose.distributed.yml; compose.yaml -> compose.distributed.yaml;
    NAME.EXT -> NAME-distributed.EXT."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        return name + "-distributed"
    if stem in ("docker-compose", "compose"):
        return f"{stem}.distributed.{ext}"
    return f"{stem}-distributed.{ext}"
