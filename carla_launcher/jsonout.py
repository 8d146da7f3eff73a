"""What every `--json` output shares: the schema version, one way to write times, and where
the JSON Schemas live. Pure, but for reading a schema file.

The rules scripts can rely on, whatever the command:
- the top level is an object with `"schema_version": 1` (raised only when a key changes
  meaning or goes away; new keys may appear without it);
- per-host facts sit in a `hosts` list, for one host as for a pool;
- a point in time is an ISO 8601 string with its offset (`iso`), a duration a number of
  seconds whose key ends in `_s`;
- `carla_launcher/schemas/NAME.schema.json` (JSON Schema draft 2020-12) says the rest;
  `common.schema.json` holds the time and duration types they share.
"""

from __future__ import annotations

import datetime as _dt
import json
from importlib import resources
from typing import Any

SCHEMA_VERSION = 1

#: The outputs with a schema: `NAME` of `carla_launcher/schemas/NAME.schema.json`.
SCHEMAS = ("status", "server-status", "deploy", "gpu", "doctor", "daemon-status")


def document(**fields: Any) -> dict[str, Any]:
    """A top-level `--json` object: `schema_version` first, then `fields` in their order."""
    return {"schema_version": SCHEMA_VERSION, **fields}


def dumps(doc: dict[str, Any]) -> str:
    """How every command prints its document (2-space indent, key order kept)."""
    return json.dumps(doc, indent=2)


def iso(epoch: float | None) -> str | None:
    """A time as scripts read it: ISO 8601 in UTC, to the second.

    >>> iso(1796040000)
    '2026-11-30T12:00:00+00:00'
    >>> iso(None) is None
    True
    """
    if epoch is None:
        return None
    return _dt.datetime.fromtimestamp(epoch, tz=_dt.timezone.utc).isoformat(timespec="seconds")


def seconds(value: float | None) -> float | None:
    """A duration as scripts read it: seconds, to the millisecond.

    >>> seconds(1.23456), seconds(None)
    (1.235, None)
    """
    return None if value is None else round(float(value), 3)


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema of output `name` (one of SCHEMAS), as installed with the package."""
    if name not in SCHEMAS:
        raise ValueError(f"no JSON schema named {name!r}; known: {', '.join(SCHEMAS)}")
    return schema_files()[f"{name}.schema.json"]


def schema_files() -> dict[str, dict[str, Any]]:
    """Every schema file by its name (the outputs' and `common`, which they refer to by
    relative `$ref`, so a validator needs them all)."""
    folder = resources.files("carla_launcher").joinpath("schemas")
    return {
        f.name: json.loads(f.read_text(encoding="utf-8"))
        for f in folder.iterdir()
        if f.name.endswith(".schema.json")
    }
