"""The pre-commit hook as another project uses it: the real `pre-commit`, this repository (a copy
of the working tree, committed) as the hook's repo at one sha, a project with two profiles and
`address: null` (what `init` writes), on a machine that knows no box. Offline: pre-commit's
pip takes the wheels tests/setup fetched."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fresh_clone import REPO, VENV_BIN, copy_worktree, offline_env
from tests.harness.cli import write_files

PROFILE = "remote:\n  host: {host}\n  user: me\n  address: null\ncompose:\n  dir: build\n"
GIT_ID = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, env=GIT_ENV
    ).stdout.strip()


GIT_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **GIT_ID}


@pytest.mark.slow
def test_hook_passes_on_current_variants_and_names_the_stale_one(tmp_path: Path) -> None:
    pre_commit = VENV_BIN / "pre-commit"
    if not pre_commit.is_file():
        pytest.skip("pre-commit is not in .venv: run tests/setup (the dev extra has it)")
    # this repository at one commit: pre-commit clones the hook's repo at `rev`
    hooks = copy_worktree(tmp_path / "carla-launcher")
    _git(hooks, "init", "-q")
    _git(hooks, "add", "-A")
    _git(hooks, "commit", "-q", "-m", "the hook's revision")
    rev = _git(hooks, "rev-parse", "HEAD")

    # a project with two boxes, neither address known, and the hook in its config
    project = tmp_path / "project"
    shutil.copytree(
        REPO / "build",
        project / "build",
        ignore=shutil.ignore_patterns("*-distributed.yaml", "*.distributed.yaml"),
    )
    write_files(
        project,
        {
            "profiles/gpu-a.yaml": PROFILE.format(host="gpu-a"),
            "profiles/gpu-b.yaml": PROFILE.format(host="gpu-b"),
            ".pre-commit-config.yaml": (
                f"repos:\n  - repo: {hooks}\n    rev: {rev}\n"
                "    hooks:\n      - id: carla-launch-sync-check\n"
            ),
        },
    )
    env = offline_env(
        tmp_path / "home",
        "/usr/bin:/bin",
        PRE_COMMIT_HOME=str(tmp_path / "pre-commit-cache"),
        **GIT_ID,
    )
    (tmp_path / "home").mkdir()
    # the variants, written once by whoever knew the box (the hook's own code, as that user ran it)
    wrote = subprocess.run(
        [sys.executable, "-m", "carla_launcher", "sync", "--dir", "build", "--address", "10.0.0.5"],
        cwd=project,
        env={**env, "PYTHONPATH": str(hooks)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrote.returncode == 0, wrote.stderr
    assert "wrote build/docker-compose.distributed.yaml" in wrote.stdout

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    assert run("git", "init", "-q").returncode == 0
    assert run(str(pre_commit), "install").returncode == 0
    run("git", "add", "-A")
    first = run("git", "commit", "-q", "-m", "variants for gpu-a")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "distributed compose variants are current" in first.stdout + first.stderr

    # a source changes and its variant does not: the commit is refused, naming that variant only
    source = project / "build" / "docker-compose.yaml"
    source.write_text(source.read_text().replace("viewer:latest", "viewer:v2"))
    run("git", "add", "build/docker-compose.yaml")
    second = run("git", "commit", "-q", "-m", "a new viewer")
    said = second.stdout + second.stderr
    assert second.returncode != 0, said
    assert "build/docker-compose.distributed.yaml: stale" in said
    assert "+    image: ghcr.io/example/viewer:v2" in said
    assert "leaderboard-distributed.yaml: stale" not in said
    assert "2 of 3 variants current, 1 stale; `carla-launch sync` brings them" in said
    assert _git(project, "log", "--format=%s") == "variants for gpu-a"
