"""The contract of a distributed variant (DESIGN.md), one compose pattern per case.

Every variant is loaded by the real compose loader, and its model must equal the source's
model with exactly the contract's changes, computed by tests/harness/oracle.py on its own.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.harness.cli import write_files
from tests.harness.judge import judge_variant

ADDR = "10.77.0.2"

SIM = """\
  carla-simulator:
    image: carlasim/carla:0.9.15
    command: ./CarlaUE4.sh -RenderOffScreen
"""


def d(text: str) -> str:
    return textwrap.dedent(text)


def svcs(text: str) -> str:
    """Service definitions written at column 0, indented to sit under `services:`."""
    return textwrap.indent(textwrap.dedent(text), "  ")


CASES: dict[str, dict] = {
    "env list and depends_on list": {
        "files": {
            "docker-compose.yml": "services:\n"
            + SIM
            + svcs("""\
              agent:
                image: agent
                environment:
                  - CARLA_SIM_HOST=carla-simulator
                  - LOG=carla-simulator-logs
                depends_on:
                  - carla-simulator
            """)
        },
        "variant": "docker-compose.distributed.yml",
    },
    "env map, depends_on map with condition": {
        "files": {
            "compose.yaml": d("""\
            services:
              sim:
                image: ghcr.io/x/carla-leaderboard:2.0
                healthcheck: {test: ["CMD", "true"]}
              agent:
                image: agent
                environment:
                  CARLA_SIM_HOST: sim
                  OTHER: "simulator sim:2000"
                depends_on:
                  sim:
                    condition: service_healthy
                  redis:
                    condition: service_started
              redis:
                image: redis
            """)
        },
        "variant": "compose.distributed.yaml",
        "sim": "sim",
    },
    "links with alias, hostname, container_name, network aliases": {
        "files": {
            "docker-compose.leaderboard.yaml": d("""\
            services:
              carla:
                image: carlasim/carla:0.9.15
                hostname: carla-host
                container_name: carla-box
                networks:
                  net:
                    aliases: [simulator, carla.internal]
              agent:
                image: agent
                links:
                  - carla:sim-link
                  - db
                networks: [net]
                environment:
                  - A=sim-link
                  - B=carla-host
                  - C=carla-box
                  - D=http://simulator:2000/x
                  - E=carla.internal
                  - F=/opt/carla/PythonAPI
              db:
                image: postgres
                networks: [net]
            networks:
              net: {}
            """)
        },
        "variant": "docker-compose.leaderboard-distributed.yaml",
        "sim": "carla",
    },
    "compose-generated container names": {
        "files": {
            "compose.yaml": d("""\
            name: proj
            services:
              carla_sim:
                image: carlasim/carla:0.9.15
              agent:
                image: agent
                environment:
                  - HOST1=${COMPOSE_PROJECT_NAME}-carla_sim-1
                  - HOST2=proj-carla_sim-1
                  - HOST3=proj_carla_sim_1
                  - KEEP=proj-carla_sim-logs
            """)
        },
        "variant": "compose.distributed.yaml",
        "sim": "carla_sim",
    },
    "command string, list and block scalar; entrypoint": {
        "files": {
            "compose.yaml": d("""\
            services:
              carla-simulator:
                image: carlasim/carla:0.9.15
              a:
                image: agent
                command: python run.py --host carla-simulator --port 2000
              b:
                image: agent
                command: ["python", "run.py", "--host=carla-simulator", "--carla-host", "carla-simulator"]
              c:
                image: agent
                entrypoint: |
                  /bin/sh -c "until nc -z carla-simulator 2000; do sleep 1; done;
                  exec python agent.py --host carla-simulator"
              e:
                image: agent
                entrypoint: >-
                  python evaluator.py
                  --host=carla-simulator
                  --routes=r.xml
            """)  # noqa: E501  compose text as users write it: the long line is part of the case
        },
        "variant": "compose.distributed.yaml",
    },
    "CARLA host variables and --host on network_mode host": {
        "files": {
            "compose.yaml": d("""\
            services:
              carla-simulator:
                image: carlasim/carla:0.9.15
                network_mode: host
              agent:
                image: agent
                network_mode: host
                environment:
                  CARLA_HOST: localhost
                  CARLA_SERVER_IP: 127.0.0.1
                  CARLA_ADDR: carla-simulator
                  CARLA_ROOT: /opt/carla
                  TM_HOST: localhost
                command: ["run", "--host", "127.0.0.1", "--carla-host=localhost", "--tm-host", "localhost"]
            """)  # noqa: E501  compose text as users write it: the long line is part of the case
        },
        "variant": "compose.distributed.yaml",
    },
    "port variables follow the remote port": {
        "files": {
            "compose.yaml": d("""\
            services:
              carla-simulator:
                image: carlasim/carla:0.9.15
                command: ./CarlaUE4.sh -RenderOffScreen -carla-rpc-port=2000
              agent:
                image: agent
                environment:
                  - CARLA_SIM_HOST=carla-simulator
                  - CARLA_SIM_PORT=2000
                  - CARLA_TM_PORT=8000
                  - OTHER_PORT=2000
                command: python run.py --host carla-simulator --port 2000 --trafficManagerPort 8000
            """)
        },
        "variant": "compose.distributed.yaml",
        "port": 3000,
    },
    "interpolations and $$ escapes kept as written": {
        "files": {
            "compose.yaml": d("""\
            services:
              carla-simulator:
                image: carlasim/carla:${CARLA_VERSION:-0.9.15}
              agent:
                image: agent
                environment:
                  - CARLA_HOST=${CARLA_HOST:-carla-simulator}
                  - SCRIPT=$$HOME/run --host carla-simulator
                command: sh -c 'echo $${ROUTE} ${ROUTE:-r.xml}; run --host carla-simulator'
            """)
        },
        "variant": "compose.distributed.yaml",
        "text": [
            "CARLA_HOST=${CARLA_HOST:-10.77.0.2}",
            "SCRIPT=$$HOME/run --host 10.77.0.2",
            "echo $${ROUTE} ${ROUTE:-r.xml}; run --host 10.77.0.2",
        ],
    },
    "include short syntax of a simulator-only file is dropped": {
        "files": {
            "carla.yaml": "services:\n" + SIM,
            "compose.yaml": d("""\
                include:
                  - carla.yaml
                services:
                  agent:
                    image: agent
                    environment: [CARLA_SIM_HOST=carla-simulator]
                    depends_on: [carla-simulator]
                """),
        },
        "variant": "compose.distributed.yaml",
        "absent": ["carla.yaml", "include:"],
        "no_variant": ["carla-distributed.yaml"],
    },
    "include long syntax with a path list": {
        "files": {
            "carla.yaml": "services:\n" + SIM,
            "extra.yaml": "services:\n  redis:\n    image: redis\n",
            "compose.yaml": d("""\
                include:
                  - path: [carla.yaml, extra.yaml]
                  - path: carla.yaml
                services:
                  agent:
                    image: agent
                    environment: [CARLA_SIM_HOST=carla-simulator]
                """),
        },
        "variant": "compose.distributed.yaml",
        "text": ["path: [extra.yaml]"],
    },
    "include of a file that mixes the simulator with others gets its own variant": {
        "files": {
            "stack.yaml": "services:\n"
            + SIM
            + svcs("""\
                  bridge:
                    image: ros-bridge
                    command: bridge --host carla-simulator
                """),
            "compose.yaml": d("""\
                include:
                  - stack.yaml
                services:
                  agent:
                    image: agent
                    environment: [CARLA_SIM_HOST=carla-simulator]
                """),
        },
        "variant": "compose.distributed.yaml",
        "text": ["- stack-distributed.yaml"],
        "also": ["stack-distributed.yaml"],
    },
    "included file without the simulator but naming it gets a variant": {
        "files": {
            "carla.yaml": "services:\n" + SIM,
            "agents.yaml": (
                "services:\n  agent:\n    image: agent\n"
                "    environment:\n      - CARLA_SIM_HOST=carla-simulator\n"
            ),
            "compose.yaml": "include:\n  - carla.yaml\n  - agents.yaml\n",
        },
        "variant": "compose.distributed.yaml",
        "text": ["- agents-distributed.yaml"],
        "also": ["agents-distributed.yaml"],
    },
    "extends from another file: inherited references overridden in the variant": {
        "files": {
            "base.yaml": d("""\
                services:
                  agent-base:
                    image: agent
                    environment:
                      - CARLA_SIM_HOST=carla-simulator
                      - ROUTE=r.xml
                    depends_on: [carla-simulator, redis]
                    links: [carla-simulator]
                    command: ["run", "--host", "carla-simulator"]
                  redis:
                    image: redis
                """),
            "compose.yaml": "services:\n"
            + SIM
            + svcs("""\
                  redis:
                    image: redis
                  agent:
                    extends:
                      file: base.yaml
                      service: agent-base
                """),
        },
        "variant": "compose.distributed.yaml",
        "unchanged": ["base.yaml"],
    },
    "extends in the same file": {
        "files": {
            "compose.yaml": d("""\
            services:
              carla-simulator:
                image: carlasim/carla:0.9.15
              base:
                image: agent
                environment: {CARLA_SIM_HOST: carla-simulator}
              agent:
                extends: base
                command: run --host carla-simulator
            """)
        },
        "variant": "compose.distributed.yaml",
    },
    "anchors and merge keys": {
        "files": {
            "compose.yaml": d("""\
            x-env: &env
              CARLA_HOST: carla-simulator
              MODE: eval
            x-unused: &unused
              keep: me
            services:
              carla-simulator: &sim
                image: carlasim/carla:0.9.15
              agent:
                image: agent
                environment:
                  <<: *env
                  EXTRA: "1"
              agent2:
                image: agent
                environment: *env
            """)
        },
        "variant": "compose.distributed.yaml",
        "text": ["x-unused: &unused", "<<: *env", "environment: *env"],
    },
}


def _sync(run, *args: str):
    return run("sync", "--dir", ".", "--address", ADDR, *args)


@pytest.mark.parametrize("name", list(CASES))
def test_variant_model_is_source_model_with_contract_changes(
    name: str, tmp_path: Path, run, compose_loader
) -> None:
    case = CASES[name]
    write_files(tmp_path, case["files"])
    sim = case.get("sim", "carla-simulator")
    port = case.get("port")
    before = {n: (tmp_path / n).read_bytes() for n in case["files"]}
    args = ["--simulator", sim] + (["--port", str(port)] if port else [])
    result = _sync(run, *args)
    assert result.exit_code == 0, result.output + result.stderr
    judge_variant(case, tmp_path, ADDR, port, sim)
    assert (tmp_path / case["variant"]).read_text().startswith("# Generated by carla-launch from ")
    # sources (and extends bases) are never edited
    for n, data in before.items():
        assert (tmp_path / n).read_bytes() == data
    # a second run changes nothing and says so
    again = _sync(run, *args)
    assert again.exit_code == 0 and "wrote" not in again.output


def test_folded_scalar_keeps_its_line_breaks(tmp_path: Path, run) -> None:
    write_files(tmp_path, CASES["command string, list and block scalar; entrypoint"]["files"])
    assert _sync(run).exit_code == 0
    text = (tmp_path / "compose.distributed.yaml").read_text()
    assert (
        "entrypoint: >-\n      python evaluator.py\n      --host=10.77.0.2\n      --routes=r.xml\n"
        in text
    )
    assert 'exec python agent.py --host 10.77.0.2"\n' in text


def test_agent_without_visible_reference_is_a_warning(tmp_path: Path, run) -> None:
    write_files(
        tmp_path,
        {
            "compose.yaml": "services:\n"
            + SIM
            + "  agent:\n    image: agent\n    depends_on: [carla-simulator]\n"
        },
    )
    result = _sync(run)
    assert result.exit_code == 0
    assert "warning:" in result.stderr and "agent" in result.stderr
    assert (tmp_path / "compose.distributed.yaml").is_file()
