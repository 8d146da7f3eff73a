"""What the agents' environment holds beyond the compose text: the project's `.env` (which
compose interpolates with) and `env_file:` files. Sync cannot rewrite those files, so the
variant overrides what they set in its own text, and says so.
"""

from __future__ import annotations

from pathlib import Path

from carla_launcher.compose import dotenv
from carla_launcher.compose.hosts import Rewrite
from carla_launcher.compose.project import Project, SourceFile


def dotenv_path(entry: Path) -> Path:
    """Compose reads `.env` from the project folder: the entry file's."""
    return Path(entry).absolute().parent / ".env"


def project_dotenv(project: Project, entry: Path) -> tuple[tuple[str, str], ...]:
    text = project.env_text(dotenv_path(entry))
    return tuple(dotenv.parse(text).items()) if text else ()


def _env_files(project: Project, sf: SourceFile, name: str) -> list[tuple[str, Path]]:
    """(as written, resolved) for each env_file a service of this file reads, in order."""
    return [
        (raw, (sf.path.parent / raw).absolute())
        for raw in project.effective(sf.path, name).env_files
    ]


def env_files_read(project: Project, sf: SourceFile) -> list[Path]:
    """The env files the services of one compose file read (those that exist)."""
    out: list[Path] = []
    for name in sf.services:
        for _, p in _env_files(project, sf, str(name)):
            if p not in out and project.env_text(p) is not None:
                out.append(p)
    return out


def env_file_overrides(
    project: Project, sf: SourceFile, rewrite: Rewrite, skip: str
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """service -> {VAR: new value} for what its env files set to the simulator, and a note
    for each (environment wins over env_file in compose, so the variant sets it there)."""
    overrides: dict[str, dict[str, str]] = {}
    notes: list[str] = []
    for name in sf.services:
        if str(name) == skip:
            continue
        merged: dict[str, tuple[str, str]] = {}  # later files win, as in compose
        for raw, p in _env_files(project, sf, str(name)):
            for key, value in dotenv.parse(project.env_text(p) or "").items():
                merged[key] = (value, raw)
        own = project.effective(sf.path, str(name)).environment
        for key, (value, raw) in merged.items():
            if key in own or "$" in value:
                continue  # its own environment wins; compose interpolates `$` itself
            new = rewrite.env_value(key, value)
            if new != value:
                overrides.setdefault(str(name), {})[key] = new
                notes.append(
                    f"service {name}: {key} from env_file {raw} names the simulator; "
                    "the variant sets it in its own environment, which wins"
                )
    return overrides, notes
