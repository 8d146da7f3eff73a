"""Whether an entry's variants are current, from their headers alone: no YAML is parsed.

An entry's variant carries a key over everything its derivation read: the tool's derivation
code, the flags as the user gave them, the entry folder's name (compose's default project
name), and each file it consulted (relative path, and text or "absent"), and after it, on the same
header line, what recomputes it: the inputs' relative paths, the other variants the entry
wrote (with the hash of each), the entries of its closure whose plan is skipped, its warnings.
When the key and every hash match, the plan would give exactly what is on disk; anything else
(no key, another key, a file edited, a variant missing) goes to the full derivation (sync.py).

This module imports no ruamel and no derivation code: `sync --check` over a current folder
loads only it, variants.py and discover.py.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from carla_launcher import __version__
from carla_launcher.compose.discover import find_entries, is_generated, variant_name
from carla_launcher.compose.variants import Variant, read_key
from carla_launcher.errors import InputError
from carla_launcher.fsutil import read_regular

NO_SIMULATOR = "no simulator in it"
# Bump when the derivation changes, so that `sync --check` sees old variants as stale.
DERIVATION = "3"
# The modules whose code decides a variant's text: a change in any of them changes every key
# (and every variant's source hash), so variants made by other code read as stale.
DERIVATION_MODULES = (
    "comments",
    "derive",
    "dotenv",
    "environ",
    "fields",
    "gateway",
    "hosts",
    "keys",
    "project",
    "reach",
    "simulator",
    "sync",
    "variants",
    "yamlio",
)


@dataclass(frozen=True)
class Target:
    """Where the simulator runs: what agents should connect to."""

    address: str | None  # None in the env address mode
    port: int | None = None
    simulator: str | None = None
    env: bool = False  # env address mode: variants read ENV_HOST / ENV_PORT (hosts.py) at `up`


@dataclass
class Result:
    """What a plan found for one entry file."""

    entry: Path
    variants: list[Variant] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: InputError | None = None
    skipped: str | None = None  # why no variant (e.g. no simulator in it)
    inputs: list[Path] = field(default_factory=list)  # every file read for it (watch these)
    fresh: bool = False  # known current from the keys alone: `variants` are what is on disk


# -- the tool's own part of every key ------------------------------------------------------------
_DIGEST: list[str] = []


def tool_digest() -> str:
    """The package version, DERIVATION and the source of the derivation modules: a different
    tool (a release, a local edit of the derivation) makes every key and source hash differ."""
    if not _DIGEST:
        h = hashlib.sha256(f"{__version__}\0{DERIVATION}\0".encode())
        here = Path(__file__).parent
        for name in DERIVATION_MODULES:
            try:
                h.update(name.encode() + b"\0" + read_regular(here / f"{name}.py") + b"\0")
            except OSError:  # installed without sources: the version and DERIVATION decide
                h.update(name.encode() + b"\0?\0")
        _DIGEST.append(h.hexdigest()[:16])
    return _DIGEST[0]


# -- the key -------------------------------------------------------------------------------------
def relative(path: Path, base: Path) -> str:
    return os.path.relpath(path, base)


def key_flags(target: Target, sim: str, world_port: int) -> tuple[object, ...]:
    """The flags as they shaped the variant: the address, the port where it differs from the
    simulator's own (no --port and --port 2000 agree there), the simulator derived for
    (--simulator S and no flag agree where S is the one found), the env mode."""
    port = None if target.env or target.port in (None, world_port) else target.port
    return (target.address, port, sim, target.env)


def input_digest(text: str | None) -> str:
    """An input's part of a key: the hash of its text, or "-" where it is absent."""
    if text is None:
        return "-"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def entry_key(
    entry: Path | str, flags: tuple[object, ...], inputs: list[tuple[str, str]], meta: str
) -> str:
    """The key of an entry: its flags (key_flags), the folder's name, each input (relative
    path and input_digest) and the rest of the key's line (`meta`)."""
    folder, name = os.path.split(os.path.abspath(entry))  # noqa: PTH100  as _fresh has it
    h = hashlib.sha256()
    head = f"key1\0{tool_digest()}\0{flags!r}\0{folder.rpartition('/')[2]}\0{name}\0"
    h.update(head.encode())
    h.update(meta.encode("utf-8", "surrogateescape") + b"\0")
    for rel, digest in inputs:
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0" + digest.encode() + b"\0")
    return h.hexdigest()[:16]


def full_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


# The rest of the key's line: ` inputs=A,B` (the entry first), ` variants=REL:HASH,...` (the
# other variants its plan writes), ` skipped=REL:,REL:SIM` (files beside it whose own plan is
# skipped: no simulator, or only simulator SIM), ` warnings=W,...`, ` simulator=S:PORT:FOUND`
# (the simulator derived for, its world port, the one found without --simulator; the key
# holds the flags as they shaped the variant). Items are %-escaped.
_FIELDS = ("inputs", "variants", "skipped", "warnings", "simulator")
_ESCAPED = re.compile(r"[%\s,:]")


def _esc(s: str) -> str:
    return _ESCAPED.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), s)


def _unesc(s: str) -> str:
    if "%" not in s:
        return s
    return re.sub(
        r"(?:%[0-9A-F]{2})+",
        lambda m: bytes.fromhex(m.group().replace("%", "")).decode("utf-8", "surrogateescape"),
        s,
    )


def key_meta(
    inputs: list[str],
    variants: list[tuple[str, str]],
    skipped: list[tuple[str, str | None]],
    warnings: list[str],
    simulator: tuple[str, int, str | None],
) -> str:
    """What follows the key on its line. `skipped`: (file, None) no simulator in it, (file,
    SIM) only the simulator SIM. `simulator`: (derived for, its world port, found alone)."""
    name, port, found = simulator
    fields = {
        "inputs": [_esc(rel) for rel in inputs],
        "variants": [f"{_esc(rel)}:{h}" for rel, h in variants],
        "skipped": [f"{_esc(rel)}:{_esc(sim or '')}" for rel, sim in skipped],
        "warnings": [_esc(w) for w in warnings],
        "simulator": [f"{_esc(name)}:{port}:{_esc(found or '')}"],
    }
    return "".join(f" {name}={','.join(items)}" for name, items in fields.items() if items)


@dataclass
class _Meta:
    inputs: list[str] = field(default_factory=list)
    variants: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    simulator: tuple[str, int, str | None] | None = None


def _meta(text: str) -> _Meta:
    meta = _Meta()
    for part in text.split(" ")[1:]:
        name, eq, value = part.partition("=")
        if not eq or name not in _FIELDS:
            raise _Unsure
        items = value.split(",")
        if name == "inputs":
            meta.inputs = [_unesc(i) for i in items]
        elif name == "warnings":
            meta.warnings = [_unesc(i) for i in items]
        elif name == "simulator":
            parts = value.split(":")
            if len(parts) != 3 or not parts[1].isdigit():
                raise _Unsure
            meta.simulator = (_unesc(parts[0]), int(parts[1]), _unesc(parts[2]) or None)
        else:
            pairs = [i.split(":") for i in items]
            if any(len(p) != 2 for p in pairs):
                raise _Unsure
            if name == "variants":
                meta.variants = [(_unesc(a), b) for a, b in pairs]
            else:
                meta.skipped = [
                    (_unesc(a), f"only the simulator ({_unesc(b)})" if b else NO_SIMULATOR)
                    for a, b in pairs
                ]
    return meta


# -- reading -------------------------------------------------------------------------------------
class _Unsure(Exception):
    """Something the fast path does not decide: the full derivation will."""


def _text(path: Path | str, missing_ok: bool = False) -> str | None:
    try:
        data = read_regular(path)
    except (FileNotFoundError, NotADirectoryError):
        if missing_ok:
            return None
        raise _Unsure from None
    except OSError:
        raise _Unsure from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _Unsure from None


def _variant_text(path: Path | str) -> str:
    text = _text(path)
    if text is None or "\r" in text:  # compare() would normalise it: let it
        raise _Unsure
    return text


@dataclass
class Fresh:
    """An entry known current from its keys, and the entries of its folder its plan skips."""

    result: Result
    skipped: dict[str, str]  # absolute path (normalised) -> why its plan is skipped


class Reads:
    """What the fast check read in one folder: each input's digest and path, so that a base
    file shared by a thousand entries is read and hashed once."""

    def __init__(self) -> None:
        self.digests: dict[str, str] = {}
        self.paths: dict[str, Path] = {}

    def digest(self, path: str) -> str:
        d = self.digests.get(path)
        if d is None:
            try:
                d = input_digest(_text(path, missing_ok=True))
            except _Unsure:
                d = _UNREADABLE
            self.digests[path] = d
        if d == _UNREADABLE:
            raise _Unsure
        return d

    def path(self, path: str) -> Path:
        p = self.paths.get(path)
        if p is None:
            p = self.paths[path] = Path(path)
        return p


_UNREADABLE = "!"


def fresh_entry(entry: Path, target: Target, reads: Reads | None = None) -> Fresh | None:
    """The entry's result without parsing, when its variant's key and every hash match; else
    None (the caller derives it). `reads`: shared by the entries of one folder."""
    try:
        return _fresh(entry, target, reads or Reads())
    except _Unsure:
        return None


def _fresh(entry: Path, target: Target, reads: Reads) -> Fresh | None:
    # strings, not pathlib: Path objects cost more than the rest of the check
    where = os.path.abspath(entry)  # noqa: PTH100  resolve() would follow symlinks
    base, name = os.path.split(where)
    vname = variant_name(name)
    text = _variant_text(f"{base}/{vname}")
    keyed = read_key(text)
    if keyed is None:
        return None
    key, line, _ = keyed
    meta = _meta(line)
    if not meta.inputs or meta.inputs[0] != name or meta.simulator is None:
        return None
    sim, world_port, found = meta.simulator
    if (target.simulator or found) != sim:
        return None  # another simulator named, or the one found is not the one derived for
    paths = [os.path.normpath(f"{base}/{rel}") for rel in meta.inputs]
    inputs = [(rel, reads.digest(p)) for rel, p in zip(meta.inputs, paths, strict=True)]
    if entry_key(where, key_flags(target, sim, world_port), inputs, line) != key:
        return None
    source = reads.path(where)
    variants = [Variant(source, source.with_name(vname), text)]
    for rel, h in meta.variants:
        src = reads.path(os.path.normpath(f"{base}/{rel}"))
        path = src.with_name(variant_name(src.name))
        other = _variant_text(path)
        if full_hash(other) != h:
            return None
        variants.append(Variant(src, path, other))
    present = [reads.path(p) for p, (_, d) in zip(paths, inputs, strict=True) if d != "-"]
    result = Result(entry, variants, list(meta.warnings), inputs=present, fresh=True)
    skipped = {os.path.normpath(f"{base}/{rel}"): why for rel, why in meta.skipped}
    return Fresh(result, skipped)


# -- a folder ------------------------------------------------------------------------------------
def entries_of(folder: Path, files: list[Path] | None) -> list[Path]:
    """The entry files of a folder, or of FILES as pre-commit passes them (any YAML that
    changed; variants among them left out)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, None, "no such folder", "--dir")
    return find_entries(folder) if files is None else [f for f in files if not _generated(f)]


def _generated(path: Path) -> bool:
    try:
        return is_generated(read_regular(path, 2000).decode("utf-8", errors="replace"))
    except OSError:
        return False


def folder_problem(folder: Path, results: list[Result], listed: bool = True) -> InputError | None:
    """What is wrong with a folder as a whole (`sync` and the daemon word it alike)."""
    if not results and listed:
        return InputError(
            folder, None, "no compose files here (YAML with `services:` or `include:`)"
        )
    if results and all(r.skipped == NO_SIMULATOR for r in results):
        return InputError(
            folder,
            None,
            "no compose file here has a simulator service "
            "(one that runs CarlaUE4 or uses a carla image); name it with --simulator NAME",
        )
    return None
