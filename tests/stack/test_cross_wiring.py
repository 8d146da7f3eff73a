"""The cross-wiring of issue 13, as a regression test, with real parts only: a box (network
namespace, real sshd) running two stand-in CARLA servers for two profiles of one compose folder
(env address mode; each profile its own server.tmux_session and server.port), a real dockerd
for the agents, a real tmux for the local windows.

Before each agent was a compose project of its own, `up gpu2` recreated gpu's agent, which
then talked to gpu2's server; `status gpu` still said "agent running"; `down gpu2` removed
gpu's agent too; and an agent `attach` started was unknown to `down`. Each agent here prints
the address and port it asked and the version that answered, so its own output says which
server it talks to.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from carla_launcher.profile import read_profile
from tests.harness.agent import VERSION_CALL, cli
from tests.harness.netns_box import Box
from tests.harness.parallel import ENV_AGENT, agent_reports, containers
from tests.harness.polling import wait_for

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.slow]

# The env-mode agent of tests/harness/parallel.py (it prints the address and port it asked and
# the version that answered), with a fixed container_name: one variant runs as two projects.
AGENT = ENV_AGENT.replace(
    "    init: true\n", "    init: true\n    container_name: cross_agent\n", 1
)
assert "container_name" in AGENT


def _ids(dockerd: Any, project: str, *, running: bool = False) -> list[str]:
    return sorted(containers(dockerd, project, every=not running))


def _reports(dockerd: Any, project: str) -> list[tuple[str, int, str]]:
    """(address, port, version) of every line the project's agent printed, in order."""
    return [(r.address, r.port, r.version) for r in agent_reports(dockerd, project)]


def _answered(dockerd: Any, project: str, after: int = 0) -> list[tuple[str, int, str]]:
    """The reports, once there are more than `after` and the last one got an answer."""
    found = _reports(dockerd, project)
    return found if len(found) > after and found[-1][2] else []


def _profiles(box: Box, proj: Path) -> dict[str, Path]:
    """gpu and gpu2: the box's profile, twice, in one profiles/ folder; gpu2's server is a
    second one on the same box (its own tmux session, state folder and port)."""
    out = {}
    for name, server in (("gpu", {}), ("gpu2", {"tmux_session": "carla2", "port": 2010})):
        data = json.loads(json.dumps(box.profile_data))
        data["server"].update(server)
        data["compose"] = {"dir": "build", "simulator": "carla-simulator", "address": "env"}
        path = proj / "profiles" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))  # JSON is YAML
        out[name] = path
    return out


def test_two_profiles_on_one_folder_keep_their_own_agents(
    box_factory: Any, dockerd: Any, tmp_path: Path, tmux_socket: str
) -> None:
    from tests.commands.test_json_outputs import checked

    box: Box = box_factory(login="user")
    box.preinstall()
    proj = tmp_path / "proj"
    (proj / "build").mkdir(parents=True)
    (proj / "build" / "docker-compose.yaml").write_text(
        AGENT.format(image=dockerd.image(), call=VERSION_CALL)
    )
    paths = _profiles(box, proj)
    project = {n: read_profile(p).key.lower() for n, p in paths.items()}
    env = {**dockerd.environ(), "CARLA_LAUNCH_TMUX_SOCKET": tmux_socket}

    def run(*args: str) -> Any:
        done = cli(proj, env, *args)
        assert done.returncode in (0, 1), done.stderr + done.stdout
        return done

    try:
        up = run("up", "gpu", "--no-attach")
        assert up.returncode == 0, up.stderr
        assert f"-p {project['gpu']} -f" in up.stdout
        first = wait_for(lambda: _answered(dockerd, project["gpu"]), 90, "gpu's agent")
        assert first[-1] == (box.address, 2000, "0.9.15")
        gpu_ids = _ids(dockerd, project["gpu"], running=True)
        assert gpu_ids

        up2 = run("up", "gpu2", "--no-attach")
        assert up2.returncode == 0, up2.stderr
        assert "also write" not in up2.stderr  # env mode: one variant for both, no refusal
        second = wait_for(lambda: _answered(dockerd, project["gpu2"]), 90, "gpu2's agent")
        assert second[-1] == (box.address, 2010, "0.9.15")
        # gpu's agent was not recreated, and still talks to ITS server
        assert _ids(dockerd, project["gpu"], running=True) == gpu_ids
        later = wait_for(
            lambda: _answered(dockerd, project["gpu"], len(first)), 30, "gpu's agent again"
        )
        assert {r[:2] for r in later} == {(box.address, 2000)}

        # status of each profile: its own pair, its own containers
        for name, port in (("gpu", 2000), ("gpu2", 2010)):
            st = run("status", name, "--json")
            doc = checked("status", st.stdout)
            (pair,) = doc["pairs"]
            assert (pair["host"], pair["slot"], pair["port"]) == (box.alias, 0, port)
            assert pair["server"]["running"] and pair["server"]["version"] == "0.9.15"
            agent = pair["agent"]
            assert agent["project"] == project[name] and agent["running"], agent
            # container_name: of the variant took each project's suffix: no clash
            assert [c["name"] for c in agent["containers"]] == [f"cross_agent-{project[name]}"]
            assert doc["agent"]["containers"] == agent["containers"]
            assert st.returncode == 0, doc["problems"]

        down2 = run("down", "gpu2")
        assert down2.returncode == 0, down2.stderr
        assert _ids(dockerd, project["gpu2"]) == []
        assert _ids(dockerd, project["gpu"], running=True) == gpu_ids  # untouched
        status = run("status", "gpu")
        assert status.returncode == 0, status.stderr
        assert re.search(
            rf"^agent +\S+ \(project {project['gpu']}\): agent running$", status.stdout, re.M
        ), status.stdout

        # attach starts nothing that down does not know: the agent it starts is recorded
        down = run("down", "gpu")
        assert down.returncode == 0, down.stderr
        assert _ids(dockerd, project["gpu"]) == []
        attach = run("attach", "gpu", "--no-attach")
        assert attach.returncode == 0, attach.stderr
        wait_for(lambda: _answered(dockerd, project["gpu"]), 90, "the agent attach started")
        st = run("status", "gpu", "--json")
        (pair,) = checked("status", st.stdout)["pairs"]
        assert pair["agent"]["project"] == project["gpu"] and pair["agent"]["running"]
        down = run("down", "gpu", "--server")
        assert down.returncode == 0, down.stderr
        assert "agent containers of docker-compose.distributed.yaml removed" in down.stdout
        assert "server on" in down.stdout, down.stdout
        assert _ids(dockerd, project["gpu"]) == []
        down2 = run("down", "gpu2", "--server")
        assert down2.returncode == 0, down2.stderr
        assert not ({2000, 2001, 2002, 2010, 2011, 2012} & box.listening())
    finally:
        for name in paths:  # whatever happened, nothing of ours stays on the shared daemon
            cli(proj, env, "down", name, "--server")
