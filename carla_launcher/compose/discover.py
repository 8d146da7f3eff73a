"""Which files of a folder are compose entry files, and what their variants are called.

Reads only the files' heads; never parses more than it must to tell a compose file apart.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from carla_launcher.compose.yamlio import MAX_SOURCE_BYTES, too_deep
from carla_launcher.fsutil import read_regular

COMPOSE_SUFFIXES = (".yaml", ".yml")
GENERATED_MARK = "# carla-launch: source-hash="
HEAD_BYTES = 64 << 10  # how much of an oversized file is read to tell whether it is compose
_TOP_KEY = re.compile(r"^(services|include)\s*:", re.M)


def is_generated(text: str) -> bool:
    return GENERATED_MARK in text[:2000]


def find_entries(folder: Path) -> list[Path]:
    """Compose files in a folder: YAML with top-level `services:` or `include:`, not generated.

    A file that cannot be read is an entry when it may be one (its name says compose, or it
    has a variant), so that planning says why rather than a stale variant staying silently.
    """
    found = []
    names = {p.name: p for p in sorted(folder.iterdir())}
    for name, p in names.items():
        if p.suffix not in COMPOSE_SUFFIXES or name.startswith("."):
            continue
        if _is_entry(p, may_be=_may_be_entry(name, names)):
            found.append(p)
    # a hand-made variant of another entry (the old way) is a variant, not an entry; a name is
    # never its own variant's name, so one set of the entries' variant names tells (linear)
    variants = {variant_name(p.name) for p in found}
    return [p for p in found if p.name not in variants]


def _may_be_entry(name: str, names: dict[str, Path]) -> bool:
    return "compose" in name or variant_name(name) in names


def _is_entry(p: Path, may_be: bool) -> bool:
    """Reads the head of one file; never all of an oversized one, never blocks on a FIFO."""
    try:
        st = p.stat()
    except FileNotFoundError:
        return may_be and p.is_symlink()  # a dangling symlink: planning says "not found"
    except OSError:
        return may_be
    if not stat.S_ISREG(st.st_mode):
        return False  # a folder, FIFO or device is no compose file
    oversized = st.st_size > MAX_SOURCE_BYTES
    try:
        data = read_regular(p, HEAD_BYTES if oversized else None)
    except OSError:
        return may_be
    if oversized:  # planning refuses it by its size, with the file's name: if it is compose
        head = data.decode("utf-8", errors="replace")
        return not is_generated(head) and bool(_TOP_KEY.search(head))
    try:
        head = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return True  # let planning say it is not UTF-8, rather than skip it silently
    if is_generated(head):
        return False
    return bool(_TOP_KEY.search(head)) or _top_level_compose(head)


def _top_level_compose(text: str) -> bool:
    """Flow-style (JSON) compose files: parse to see whether `services` is a top-level key."""
    if not re.search(r"""^\s*[{"']|^\s*["']?(services|include)["']?\s*:""", text, re.M):
        return False
    says_compose = bool(re.search(r"""["']?(services|include)["']?\s*:""", text))
    if too_deep(text) is not None:
        return says_compose  # hostile: planning refuses it with its line
    try:
        from ruamel.yaml import YAML

        doc = YAML(typ="safe").load(text)
    except RecursionError:
        return says_compose
    except Exception:  # noqa: BLE001  odd input raises more than YAMLError: all mean "not compose"
        return False
    return isinstance(doc, dict) and ("services" in doc or "include" in doc)


def variant_name(name: str) -> str:
    """docker-compose.yml -> docker-compose.distributed.yml;
    compose.yaml -> compose.distributed.yaml; NAME.EXT -> NAME-distributed.EXT."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        return name + "-distributed"
    if stem in ("docker-compose", "compose"):
        return f"{stem}.distributed.{ext}"
    return f"{stem}-distributed.{ext}"
