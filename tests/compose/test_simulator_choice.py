"""Which service is the simulator, strongest evidence first (DESIGN.md, "The distributed variant").

Each case is a compose file as public CARLA projects write them: ROS bridge stacks, scenario_runner,
leaderboard agents, RL stacks, carlaviz. The choice is checked on the model and end to end: the
variant `sync` writes lacks the simulator and keeps everything else.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from carla_launcher.compose.project import Project, Service
from carla_launcher.compose.simulator import find_simulator
from carla_launcher.errors import InputError
from tests.harness.cli import Cli, write_files

ADDR = "10.77.0.2"


def d(text: str) -> str:
    return textwrap.dedent(text)


def svcs(text: str) -> str:
    """Services written at column 0, indented to sit under `services:`."""
    return textwrap.indent(d(text), "  ")


SERVER = """\
  carla:
    image: carlasim/carla:0.9.15
    runtime: nvidia
"""

CASES: dict[str, tuple[str, str]] = {
    # -- named as the CARLA host by another service --------------------------------------------
    "ros2 bridge names the server with host:=": (
        "carla",
        "services:\n"
        + SERVER
        + svcs("""\
          ros-bridge:
            image: ghcr.io/x/carla-ros-bridge:0.9.12
            command: ros2 launch carla_ros_bridge carla_ros_bridge.launch.py host:=carla timeout:=20
        """),
    ),
    "ros1 bridge, quoted host:= in an exec list": (
        "simulator",
        d("""\
        services:
          simulator:
            image: carlasim/carla:0.9.13
            command: ["/bin/bash", "./CarlaUE4.sh", "-RenderOffScreen"]
          bridge:
            image: carla-ros-bridge
            command: ["roslaunch", "carla_ros_bridge", "carla_ros_bridge.launch",
                      "host:='simulator'"]
          sensors:
            image: someorg/carla-sensor-lib
        """),
    ),
    "bridge names a custom server image through CARLA_HOST": (
        "sim",
        d("""\
        services:
          sim:
            image: registry.example.com/robotics/sim-server:2024.1
          bridge:
            image: carla-ros-bridge:0.9.12
            environment:
              CARLA_HOST: sim
              CARLA_PORT: "2000"
        """),
    ),
    "scenario_runner with --host and a server whose image is a custom carla build": (
        "carla-server",
        d("""\
        services:
          carla-server:
            image: myorg/carla-server:0.9.13
            command: /bin/bash ./CarlaUE4.sh -RenderOffScreen -carla-rpc-port=2000
          scenario-runner:
            image: myorg/carla-scenario-runner:0.9.13
            command: python scenario_runner.py --host carla-server --scenario FollowLeadingVehicle_1
            depends_on: [carla-server]
        """),
    ),
    "leaderboard agent with --host= and a ${VAR:-default} host variable": (
        "carla",
        d("""\
        services:
          carla:
            image: carlasim/carla:0.9.10.1
            command: ["/bin/bash", "-c", "./CarlaUE4.sh -opengl -nosound -carla-rpc-port=2000"]
          leaderboard:
            image: carla-leaderboard:latest
            environment:
              - CARLA_SERVER_HOST=${CARLA_SERVER_HOST:-carla}
            command: >
              python leaderboard/leaderboard_evaluator.py --host=carla --port=2000
              --agent=agents/npc_agent.py --routes=routes_devtest.xml
        """),
    ),
    "RL stack names the server's static IP": (
        "simulator",
        d("""\
        services:
          simulator:
            image: myorg/carla-sim:0.9.14
            networks:
              carla-net:
                ipv4_address: 172.28.0.10
          trainer:
            image: myorg/carla-rl:latest
            environment:
              CARLA_SERVER_IP: 172.28.0.10
              CARLA_PORT: 2000
            networks:
              carla-net:
                ipv4_address: 172.28.0.20
        networks:
          carla-net:
            ipam:
              config:
                - subnet: 172.28.0.0/16
        """),
    ),
    "carlaviz names the server as CARLA_SERVER_HOST": (
        "carla",
        "services:\n"
        + SERVER
        + svcs("""\
          carlaviz:
            image: mjxu96/carlaviz:0.9.15
            environment:
              - CARLAVIZ_BACKEND_HOST=localhost
              - CARLA_SERVER_HOST=carla
              - CARLA_SERVER_PORT=2000
            ports:
              - "8080-8081:8080-8081"
        """),
    ),
    "agent reaches the server by a link alias, with a URL": (
        "carla",
        d("""\
        services:
          carla:
            image: ghcr.io/org/carla:0.9.14
          agent:
            image: ghcr.io/org/carla-agent:0.9.14
            links: ["carla:sim"]
            environment:
              CARLA_ADDRESS: http://sim:2000
        """),
    ),
    "agent names the compose-made container name": (
        "world",
        d("""\
        services:
          world:
            image: localhost:5000/simulators/town-server
          agent-a:
            image: carla-agent
            environment: ["CARLA_HOST=${COMPOSE_PROJECT_NAME}-world-1"]
          agent-b:
            image: carla-agent
            command: python run.py --carla-host $$COMPOSE_PROJECT_NAME-world-1
          agent-c:
            image: carla-agent
            environment: ["CARLA_SIM_HOST=stack_world_1:2000"]
        """),
    ),
    "agent names the server's hostname and sets it inline in a shell script": (
        "carla",
        d("""\
        services:
          carla:
            image: carlasim/carla:0.9.15
            hostname: carla-box
          bridge:
            image: carla-ros-bridge
          agent:
            image: python:3.8
            command: sh -c "pip install carla && CARLA_HOST=carla-box python agent.py"
        """),
    ),
    # -- runs CARLA itself ----------------------------------------------------------------------
    "the server runs CarlaUE4.sh; the bridge takes its host from a params file": (
        "sim",
        d("""\
        services:
          bridge:
            image: carla-ros-bridge:0.9.12
            command: roslaunch carla_ros_bridge carla_ros_bridge.launch
          sim:
            image: registry.example.com/sim:1
            entrypoint: ["/bin/bash", "-c"]
            command: ["./CarlaUE4.sh -RenderOffScreen -quality-level=Low"]
        """),
    ),
    "the server runs CarlaUnreal-Linux-Shipping as another user": (
        "ue5",
        d("""\
        services:
          ue5:
            image: myorg/sim-ue5:0.10.0
            command: sudo -u carla /home/carla/CarlaUnreal/Binaries/Linux/CarlaUnreal-Linux-Shipping
          recorder:
            image: myorg/carla-recorder
        """),
    ),
    # -- an image named carla, over images that merely contain it --------------------------------
    "server without a command; agent passes --carla-path .../CarlaUE4.sh": (
        "carla",
        d("""\
        services:
          carla:
            image: carlasim/carla:0.9.15
          agent:
            image: myorg/carla-agent
            command: python eval.py --carla-path /opt/CarlaUE4.sh
        """),
    ),
    "server without a command; agent kills CarlaUE4 before it starts": (
        "simulator",
        d("""\
        services:
          agent:
            image: myorg/carla-garage:latest
            command: bash -c "pkill -f CarlaUE4 || true; python team_code/eval.py"
          simulator:
            image: carlasim/carla:0.9.15
        """),
    ),
    "agent checks for CarlaUE4.sh with test -f in an exec list": (
        "carla",
        d("""\
        services:
          agent:
            image: myorg/agent
            command: ["sh", "-c", "test -f /opt/carla/CarlaUE4.sh && python run.py"]
          carla:
            image: carla:latest
        """),
    ),
    "ROS bridge and a sensor library next to the real server": (
        "carla",
        d("""\
        services:
          carla:
            image: carlasim/carla:0.9.15
            command: ["/bin/bash", "./CarlaUE4.sh", "-RenderOffScreen"]
          bridge:
            image: ghcr.io/x/carla-ros-bridge:0.9.12
          sensors:
            image: someorg/carla-sensor-lib
          rviz:
            image: osrf/ros:noetic-desktop
        """),
    ),
    # -- weak evidence ---------------------------------------------------------------------------
    "a server image that only publishes the world port": (
        "sim",
        d("""\
        services:
          sim:
            image: registry.example.com/sim:1
            ports: ["2000-2002:2000-2002"]
          agent:
            image: registry.example.com/agent:1
        """),
    ),
    "of two images containing carla, the one publishing 2000": (
        "server",
        d("""\
        services:
          bridge:
            image: carla-ros-bridge:0.9.12
          server:
            image: myorg/carla-server:0.9.15
            expose: ["2000/tcp"]
        """),
    ),
}


def _choose(
    tmp_path: Path, text: str, wanted: str | None = None, required: bool = True
) -> Service | None:
    path = tmp_path / "compose.yaml"
    path.write_text(text)
    services = Project().model(path)
    return find_simulator(path, services, wanted, required)


def _variant_services(path: Path) -> set[str]:
    return set(YAML(typ="safe").load(path.read_text())["services"])


@pytest.mark.parametrize("name", list(CASES))
def test_the_strongest_evidence_picks_the_simulator(name: str, tmp_path: Path) -> None:
    sim, text = CASES[name]
    chosen = _choose(tmp_path, text)
    assert chosen is not None and chosen.name == sim


@pytest.mark.parametrize("name", list(CASES))
def test_sync_writes_a_variant_without_the_simulator(name: str, tmp_path: Path, run: Cli) -> None:
    sim, text = CASES[name]
    write_files(tmp_path, {"compose.yaml": text})
    others = _variant_services(tmp_path / "compose.yaml") - {sim}
    r = run("sync", "--dir", ".", "--address", ADDR)
    assert r.exit_code == 0, r.output + r.stderr
    assert _variant_services(tmp_path / "compose.distributed.yaml") == others


def test_the_flag_overrides_the_evidence(tmp_path: Path) -> None:
    _, text = CASES["ros2 bridge names the server with host:="]
    chosen = _choose(tmp_path, text, wanted="ros-bridge")
    assert chosen is not None and chosen.name == "ros-bridge"
    with pytest.raises(InputError, match="no service named 'nope'"):
        _choose(tmp_path, text, wanted="nope")


TWO_SERVERS = d("""\
    services:
      carla-town01:
        image: carlasim/carla:0.9.15
        command: ./CarlaUE4.sh -RenderOffScreen -carla-rpc-port=2000
        ports: ["2000-2002:2000-2002"]
      carla-town02:
        image: carlasim/carla:0.9.15
        command: ./CarlaUE4.sh -RenderOffScreen -carla-rpc-port=3000
        ports: ["3000-3002:3000-3002"]
      agent-01:
        image: myorg/agent
        environment: [CARLA_HOST=carla-town01]
      agent-02:
        image: myorg/agent
        environment: [CARLA_HOST=carla-town02, CARLA_PORT=3000]
    """)

AMBIGUOUS = {
    "two servers, each named by an agent": TWO_SERVERS,
    "two carla images, nobody names either": d("""\
        services:
          carla-a:
            image: carlasim/carla:0.9.15
          carla-b:
            image: ghcr.io/org/carla:0.9.14
          agent:
            image: myorg/agent
        """),
    "two custom images that both run CarlaUE4": d("""\
        services:
          carla-a:
            image: myorg/sim:1
            command: ["./CarlaUE4.sh", "-RenderOffScreen"]
          carla-b:
            image: myorg/sim:1
            command: exec /opt/carla/CarlaUE4.sh -nosound
          agent:
            image: myorg/agent
        """),
}


@pytest.mark.parametrize("name", list(AMBIGUOUS))
def test_two_candidates_are_refused_naming_both(name: str, tmp_path: Path, run: Cli) -> None:
    text = AMBIGUOUS[name]
    with pytest.raises(InputError) as err:
        _choose(tmp_path, text)
    a, b = [n for n in YAML(typ="safe").load(text)["services"] if not n.startswith("agent")]
    message = str(err.value)
    assert re.search(rf"several candidate simulators: {a} \(compose.yaml:2\), {b} \(", message)
    assert "--simulator NAME" in message and "compose.simulator" in message
    r = run("sync", "--dir", ".", "--address", ADDR)
    assert r.exit_code == 2
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and a in lines[0] and b in lines[0], r.stderr
    assert not (tmp_path / "compose.distributed.yaml").exists()


def test_the_refusal_says_what_each_candidate_has(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        _choose(tmp_path, TWO_SERVERS)
    message = str(err.value)
    assert "carla-town01: named as CARLA host by agent-01, runs CarlaUE4.sh" in message
    assert "carla-town02: named as CARLA host by agent-02, runs CarlaUE4.sh" in message
    assert "\n" not in message


def test_a_client_is_never_a_candidate(tmp_path: Path) -> None:
    # the only carla image and the only published world port belong to clients
    text = d("""\
        services:
          sim:
            image: registry.example.com/sim:1
          viewer:
            image: carlasim/carla:0.9.15
            environment: [CARLA_HOST=sim]
            ports: ["2000:2000"]
          agent:
            image: myorg/agent
            command: ["python", "run.py", "--host", "sim"]
        """)
    chosen = _choose(tmp_path, text)
    assert chosen is not None and chosen.name == "sim"


def test_no_evidence_at_all(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: nginx\n    ports: ['8080:80']\n  db:\n    image: redis\n"
    assert _choose(tmp_path, text, required=False) is None
    with pytest.raises(InputError, match=r"no simulator found .*CARLA host.*CarlaUE4.*port 2000"):
        _choose(tmp_path, text)
