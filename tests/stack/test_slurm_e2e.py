"""`up`, `status`, a job cancelled by hand, and `down` of CARLA servers run as Slurm jobs, for
real (issue 14, `server.mode: slurm`).

A real one-node Slurm cluster (Debian's slurmctld, slurmd and munge, tests/harness/slurm.py)
in a network-namespace box whose sshd is the login node and whose firewall lets only ssh in:
the "compute node" is reachable from here only through the login node, as on real clusters.
The node has two GPUs. The stand-in CARLA package is on the shared file system, the agents
run in a real dockerd (an env-mode agent that asks its server for its version every two
seconds and prints where it connected, tests/harness/parallel.py), the panes in a real tmux.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from carla_launcher.box.ports import triple
from carla_launcher.box.tunnel import AGENT_HOST
from carla_launcher.box.tunnel_local import listening_ports
from carla_launcher.profile import read_profile
from tests.harness.agent import cli
from tests.harness.dockerd import DockerDaemon
from tests.harness.netns_box import Box
from tests.harness.parallel import (
    Report,
    agent_reports,
    answered_since,
    status_json,
    version_at,
    write_env_agent,
)
from tests.harness.polling import wait_for
from tests.harness.slurm import Cluster

VERSION = "0.9.15"


def _cluster_profile(
    box: Box, dockerd: DockerDaemon, tmux_socket: str, tmp_path: Path, **slurm: Any
) -> dict[str, str]:
    """The stand-in on the shared file system, a slurm-mode profile with `slurm` and the
    env-mode agent; the environment `carla-launch` runs in (the dockerd, the tmux socket)."""
    build = tmp_path / "proj" / "build"
    write_env_agent(build, dockerd.image())
    box.preinstall()
    box.write_profile(
        server={"mode": "slurm", "slurm": {"partition": "gpu", **slurm}},
        compose={"dir": str(build), "simulator": "carla-simulator", "address": "env"},
    )
    return {**dockerd.environ(), "CARLA_LAUNCH_TMUX_SOCKET": tmux_socket}


def _ours(cluster: Cluster, user: str) -> dict[str, dict[str, str]]:
    """The server user's jobs that run, by name."""
    return {j["name"]: j for j in cluster.jobs(user=user) if j["state"] == "RUNNING"}


@pytest.mark.root
@pytest.mark.docker
@pytest.mark.slow
def test_two_servers_as_slurm_jobs_through_the_login_node(
    slurm_box: tuple[Box, Cluster],
    dockerd: DockerDaemon,
    tmux_socket: str,
    tmp_path: Path,
    own_projects: None,
) -> None:
    box, cluster = slurm_box
    env = _cluster_profile(box, dockerd, tmux_socket, tmp_path, jobs=2, time="30:00")
    box.firewall()  # only ssh gets in: the node's ports are reached through the login node
    profile = read_profile(box.profile_path)
    user = box.server_user

    up = cli(box, env, "up", str(box.profile_path), "--no-attach")
    assert up.returncode == 0, up.stderr + up.stdout
    tunnels = re.findall(
        rf"^{re.escape(box.alias)} server (\d): through an SSH tunnel, "
        rf"{re.escape(dockerd.gateway)}:(\d+) -> {re.escape(box.alias)}:\d+ "
        r"\(server.mode: slurm: compute nodes are reached through the login node\)$",
        up.stdout,
        re.M,
    )
    assert sorted(k for k, _ in tunnels) == ["0", "1"], up.stdout
    local = {int(k): int(lp) for k, lp in tunnels}

    # two jobs run, one per server, each on the node with one GPU
    running = _ours(cluster, user)
    assert set(running) == {"carla-launch-carla", "carla-launch-carla-1"}, running
    assert {j["node"] for j in running.values()} == {cluster.node}
    # each agent reaches its own server through its tunnel (`up` leaves the agents starting)
    _, status = status_json(box, env)
    pairs = {p["server"]["slot"]: p for p in status["pairs"]}
    assert {k: p["tunnel"]["local_port"] for k, p in pairs.items()} == local
    for k, pair in pairs.items():
        project = pair["agent"]["project"]
        got = wait_for(partial(answered_since, dockerd, project, 0), 60, f"agent {k}'s answer")
        assert got[-1] == Report(AGENT_HOST, local[k], VERSION), got
    code, status = status_json(box, env)
    assert code == 0, status["problems"]
    servers = {s["slot"]: s for s in status["hosts"][0]["servers"]}
    for k, name in ((0, "carla-launch-carla"), (1, "carla-launch-carla-1")):
        job = servers[k]["job"]
        assert job["id"] == int(running[name]["id"]) and job["state"] == "RUNNING"
        assert (job["node"], job["address"]) == (cluster.node, box.address)
    ports = {servers[k]["job"]["port"] for k in (0, 1)}
    assert len(ports) == 2  # two servers on one node: two port triples

    # job 1 cancelled by hand: carla-launch submits it again, the tunnel follows the new job,
    # agent 1 gets answers again; server 0 and its agent never noticed
    old = running["carla-launch-carla-1"]["id"]
    cluster.run(f"scancel {old}")
    wait_for(lambda: version_at(dockerd.gateway, local[1]) is None, 30, "job 1 to end")
    again = wait_for(
        lambda: (j := _ours(cluster, user).get("carla-launch-carla-1")) and j["id"] != old and j,
        60,
        "job 1 submitted again",
    )
    assert again["node"] == cluster.node
    wait_for(lambda: version_at(dockerd.gateway, local[1]), 60, "CARLA through the new job")
    seen = len(agent_reports(dockerd, pairs[1]["agent"]["project"]))
    got = wait_for(
        partial(answered_since, dockerd, pairs[1]["agent"]["project"], seen),
        60,
        "agent 1's answer from the new job",
    )
    assert got[-1] == Report(AGENT_HOST, local[1], VERSION)
    assert _ours(cluster, user)["carla-launch-carla"]["id"] == running["carla-launch-carla"]["id"]
    assert version_at(dockerd.gateway, local[0]) == VERSION
    code, status = status_json(box, env)
    assert code == 0, status["problems"]
    servers = {s["slot"]: s for s in status["hosts"][0]["servers"]}
    assert servers[1]["job"]["id"] == int(again["id"]) and servers[1]["restarts"] == 1
    logs = cli(box, env, "server", "logs", str(box.profile_path), "--only", "1")
    assert f"job {old} ended: CANCELLED" in logs.stdout, logs.stdout
    assert f"job {again['id']} on {cluster.node}: starting CARLA" in logs.stdout, logs.stdout

    # down --keep-server keeps the jobs; attach builds the pairs again, tunnels included
    kept = cli(box, env, "down", str(box.profile_path), "--keep-server")
    assert kept.returncode == 0, kept.stderr + kept.stdout
    assert len(_ours(cluster, user)) == 2
    attach = cli(box, env, "attach", str(box.profile_path), "--no-attach")
    assert attach.returncode == 0, attach.stderr + attach.stdout
    code, status = status_json(box, env)
    for pair in status["pairs"]:
        lp = pair["tunnel"]["local_port"]
        wait_for(lambda lp=lp: version_at(dockerd.gateway, lp), 30, f"CARLA through {lp}")
        assert pair["tunnel"]["why"].startswith("server.mode: slurm"), pair["tunnel"]
    local = {p["server"]["slot"]: p["tunnel"]["local_port"] for p in status["pairs"]}

    # down: agents, tunnels and both jobs go
    down = cli(box, env, "down", str(box.profile_path))
    assert down.returncode == 0, down.stderr + down.stdout
    assert cluster.jobs(user=user) == [] or all(
        j["state"] not in ("RUNNING", "PENDING") for j in cluster.jobs(user=user)
    )
    for lp in local.values():
        assert not triple(lp) & listening_ports()
    stopped = cli(box, env, "server", "status", str(box.profile_path))
    assert stopped.returncode == 1 and "stopped on purpose" in stopped.stdout, stopped.stdout
    assert profile.key  # the profile's state stays readable after down


@pytest.mark.root
@pytest.mark.slow
def test_server_start_and_stop_of_a_job_also_when_its_loop_was_killed(
    slurm_box: tuple[Box, Cluster],
) -> None:
    """`server start` submits and waits until the job runs; a loop killed outright leaves a job
    that runs with nothing to submit it again ("loop gone"), and `server stop` still cancels
    it, as it cancels every job of the server."""
    box, cluster = slurm_box
    box.preinstall()
    box.write_profile(
        server={
            "mode": "slurm",
            "slurm": {
                "partition": cluster.partition,
                "time": "10:00",
                "sbatch": ["--comment=carla eval run 7"],
            },
        },
        compose={"address": "env"},
    )
    prof = str(box.profile_path)
    deploy = box.cli("deploy", prof)
    assert deploy.returncode == 0, deploy.stderr
    # a job runs when Slurm says: the deploy does not claim a server it did not see answer
    assert "1 server(s) submitted as Slurm jobs from this login node" in deploy.stdout
    assert "ready" not in deploy.stdout and "GPU" not in deploy.stderr, deploy.stderr
    start = box.cli("server", "start", prof)
    assert start.returncode == 0, start.stderr + start.stdout
    (job,) = _ours(cluster, box.server_user).values()
    assert re.search(
        rf"job {job['id']} running on {cluster.node}, \d+:\d\d left, CARLA at "
        rf"{re.escape(box.address)}:2000 there",
        start.stdout,
    ), start.stdout
    comment = cluster.run(f"squeue -h -j {job['id']} -o %k").stdout.strip()
    assert comment == "carla eval run 7"  # the profile's own sbatch line reached Slurm

    status = box.cli("server", "status", prof)
    assert status.returncode == 0, status.stdout
    assert f"job {job['id']} running on {cluster.node}" in status.stdout

    state = box.session_dir / "status"
    loop = next(ln[5:] for ln in state.read_text().splitlines() if ln.startswith("loop="))
    box.run(f"kill -KILL {int(loop)}")
    gone = box.cli("server", "status", prof)
    assert "running, restart loop gone" in gone.stdout, gone.stdout
    assert "carla-launch server restart" in gone.stderr, gone.stderr

    stop = box.cli("server", "stop", prof)
    assert stop.returncode == 0, stop.stderr + stop.stdout
    assert cluster.jobs(user=box.server_user) == []
    stopped = box.cli("server", "status", prof)
    assert stopped.returncode == 1 and "stopped on purpose" in stopped.stdout, stopped.stdout

    # an edited slurm section is drift: `server start` redeploys the loop with the new job;
    # a partition Slurm does not have fails at once, in sbatch's own words
    box.write_profile(server={"slurm": {"partition": "nope"}})
    bad = box.cli("server", "start", prof)
    assert bad.returncode == 1, bad.stdout
    assert "server.slurm changed since the last deploy (--partition: gpu -> nope)" in bad.stderr
    assert "sbatch refused the job: sbatch: error: invalid partition specified: nope" in (
        bad.stderr
    ), bad.stderr
    assert cluster.jobs(user=box.server_user) == []


@pytest.mark.root
@pytest.mark.docker
@pytest.mark.slow
def test_a_job_that_stays_queued_does_not_hold_up_the_others(
    slurm_box: tuple[Box, Cluster],
    dockerd: DockerDaemon,
    tmux_socket: str,
    tmp_path: Path,
    own_projects: None,
) -> None:
    """Three servers on a cluster of two GPUs: the third job waits for Resources. `up` waits
    for it up to `queue_timeout`, then starts the two agents whose servers run, says which job
    waits and why (exit 1); the queued job stays queued, and `down` cancels all three."""
    box, cluster = slurm_box
    env = _cluster_profile(box, dockerd, tmux_socket, tmp_path, jobs=3, queue_timeout=4)
    up = cli(box, env, "up", str(box.profile_path), "--no-attach")
    assert up.returncode == 1, up.stderr + up.stdout
    waiting = re.search(
        r"^warning: \S+ server (\d): job (\d+) pending \(Resources\), 1st of 1 in partition "
        r"gpu after server.slurm.queue_timeout \(4 s\); it stays queued",
        up.stderr,
        re.M,
    )
    assert waiting, up.stderr
    queued = waiting.group(2)
    assert up.stdout.count("(CARLA 0.9.15); agent:") == 2, up.stdout
    jobs = {j["id"]: j["state"] for j in cluster.jobs(user=box.server_user)}
    assert jobs[queued] == "PENDING" and sorted(jobs.values()) == ["PENDING", "RUNNING", "RUNNING"]

    code, status = status_json(box, env)
    assert code == 1
    servers = {s["slot"]: s for s in status["hosts"][0]["servers"]}
    k = int(waiting.group(1))
    job = servers[k]["job"]
    assert (job["id"], job["state"], job["reason"], job["position"]) == (
        int(queued),
        "PENDING",
        "Resources",
        1,
    )
    agents = {p["server"]["slot"]: p["agent"] for p in status["pairs"]}
    assert agents[k] is None and all(agents[s] for s in agents if s != k), agents

    down = cli(box, env, "down", str(box.profile_path))
    assert down.returncode == 0, down.stderr + down.stdout
    assert cluster.jobs(user=box.server_user) == []
