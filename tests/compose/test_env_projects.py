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


HOSTS_COMPOSE = """\
services:
  carla-simulator:
    image: carlasim/carla:0.9.15
  agent:  # list form: ours is added after the source's own
    image: agent:latest
    environment: [CARLA_SIM_HOST=carla-simulator]
    extra_hosts:
      - "ros-master:10.0.0.9"
  planner:  # mapping form
    image: planner:latest
    command: ["plan", "--host", "carla-simulator"]
    extra_hosts:
      ros-master: 10.0.0.9
  monitor:  # its own entry for the name: kept, never doubled
    image: monitor:latest
    environment: {CARLA_HOST: carla-simulator}
    extra_hosts: [host.docker.internal=10.0.0.1]
  vpn:  # the network the sidecar runs in: its /etc/hosts is the sidecar's
    image: vpn:latest
  sidecar:
    image: sidecar:latest
    network_mode: service:vpn
    command: --carla-host carla-simulator
  web:  # does not name the simulator: left alone
    image: web:latest
"""


def test_env_variants_map_host_docker_internal_for_the_services_that_name_the_simulator(
    tmp_path: Path, run: Cli
) -> None:
    """The env address may be an SSH tunnel's end on this machine, which containers reach as
    host.docker.internal: the variant maps it to docker's host-gateway, as the real compose
    loader reads it, beside the source's own entries and never twice."""
    write_files(
        tmp_path, {"docker-compose.yaml": HOSTS_COMPOSE, "profiles/default.yaml": ENV_PROFILE}
    )
    assert run("sync").exit_code == 0
    env = {ENV_HOST: "host.docker.internal", ENV_PORT: "2003", ENV_URL_HOST: "host.docker.internal"}
    services = load_model(tmp_path / VARIANT, env=env)["services"]
    ours = "host.docker.internal=host-gateway"  # how compose's model writes the entry
    assert sorted(services["agent"]["extra_hosts"]) == [ours, "ros-master=10.0.0.9"]
    assert services["agent"]["environment"]["CARLA_SIM_HOST"] == "host.docker.internal"
    assert sorted(services["planner"]["extra_hosts"]) == [ours, "ros-master=10.0.0.9"]
    assert services["monitor"]["extra_hosts"] == ["host.docker.internal=10.0.0.1"]
    assert services["vpn"]["extra_hosts"] == [ours]
    assert "extra_hosts" not in services["sidecar"] and "extra_hosts" not in services["web"]
    text = (tmp_path / VARIANT).read_text()
    assert text.count("host-gateway") == 3
    assert '      - "host.docker.internal:host-gateway"\n' in text  # in the list's own style
    assert run("sync", "--check").exit_code == 0
    assert "wrote" not in run("sync").output  # idempotent: nothing added twice


def test_an_inherited_extra_hosts_is_kept_beside_ours(tmp_path: Path, run: Cli) -> None:
    """`extends:` a base in another file with its own extra_hosts: compose merges the two."""
    base = 'services:\n  agent:\n    image: agent:latest\n    extra_hosts: ["nas:10.0.0.7"]\n'
    entry = (
        "services:\n  carla-simulator:\n    image: carlasim/carla:0.9.15\n"
        "  agent:\n    extends: {file: base.yaml, service: agent}\n"
        "    environment: [CARLA_SIM_HOST=carla-simulator]\n"
    )
    write_files(
        tmp_path,
        {"base.yaml": base, "docker-compose.yaml": entry, "profiles/default.yaml": ENV_PROFILE},
    )
    assert run("sync").exit_code == 0
    env = {ENV_HOST: "10.0.0.2", ENV_PORT: "2000", ENV_URL_HOST: "10.0.0.2"}
    agent = load_model(tmp_path / VARIANT, env=env)["services"]["agent"]
    assert sorted(agent["extra_hosts"]) == ["host.docker.internal=host-gateway", "nas=10.0.0.7"]


def test_literal_variants_need_no_host_gateway(tmp_path: Path, run: Cli) -> None:
    write_files(tmp_path, {"docker-compose.yaml": HOSTS_COMPOSE})
    assert run("sync", "--dir", ".", "--address", "10.0.0.5").exit_code == 0
    text = (tmp_path / VARIANT).read_text()
    assert "10.0.0.5" in text and "host-gateway" not in text
    assert (
        run("sync", "--dir", ".", "--address", "host.docker.internal", "--port", "2003").exit_code
        == 0
    )
    agent = load_model(tmp_path / VARIANT)["services"]["agent"]
    assert sorted(agent["extra_hosts"]) == [
        "host.docker.internal=host-gateway",
        "ros-master=10.0.0.9",
    ]
