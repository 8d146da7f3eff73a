"""Env-mode variants run as several compose projects at once (one per server, one per
profile on a shared folder): what must differ between the projects does."""

from __future__ import annotations

from pathlib import Path

from carla_launcher.compose.hosts import ENV_HOST, ENV_PORT, ENV_SUFFIX, ENV_URL_HOST
from tests.harness.cli import SIMPLE_COMPOSE as COMPOSE
from tests.harness.cli import Cli, write_files
from tests.harness.compose_loader import load_model

VARIANT = "docker-compose.distributed.yaml"
ENV_PROFILE = "remote:\n  host: gpu-box\n  address: null\ncompose:\n  dir: .\n  address: env\n"


def test_env_variant_container_names_take_a_suffix_per_project(tmp_path: Path, run: Cli) -> None:
    """One env-mode variant runs as several compose projects: a fixed `container_name` would
    clash, so the variant appends CARLA_LAUNCH_SUFFIX (empty when run by hand). Read back by
    the real compose loader."""

    source = COMPOSE.replace("  agent:\n", "  agent:\n    container_name: my_agent\n", 1)
    assert "container_name: my_agent" in source
    write_files(tmp_path, {"docker-compose.yaml": source, "profiles/default.yaml": ENV_PROFILE})
    synced = run("sync")
    assert synced.exit_code == 0, synced.output
    env = {ENV_HOST: "10.0.0.2", ENV_PORT: "2000", ENV_URL_HOST: "10.0.0.2"}

    def name(extra: dict[str, str]) -> str:
        model = load_model(tmp_path / VARIANT, env={**env, **extra})
        return str(model["services"]["agent"]["container_name"])

    assert name({}) == "my_agent"
    assert name({ENV_SUFFIX: "-gpu-1"}) == "my_agent-gpu-1"
    assert run("sync", "--check").exit_code == 0
