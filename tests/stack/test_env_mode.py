"""The env address mode: one committed variant for every box; the address comes from
CARLA_LAUNCH_HOST/CARLA_LAUNCH_PORT, which `up`/`attach` pass and `carla-launch env P` prints."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from carla_launcher.compose.hosts import ENV_HOST, ENV_PORT, ENV_URL_HOST
from carla_launcher.profile import load_profile, read_profile
from carla_launcher.records import learn
from tests.harness.agent import AGENT as E2E_AGENT
from tests.harness.agent import VERSION_CALL, cli, pane_text
from tests.harness.cli import SIMPLE_COMPOSE as COMPOSE
from tests.harness.cli import Cli, write_files
from tests.harness.polling import wait_for
from tests.harness.tmux import kill_server

VARIANT = "docker-compose.distributed.yaml"
ENV_PROFILE = "remote:\n  host: gpu-box\n  address: null\ncompose:\n  dir: .\n  address: env\n"


# -- (a) sync and sync --check with no address known anywhere ------------------------------------
def test_sync_check_passes_with_no_address_known(tmp_path: Path, run: Cli) -> None:
    write_files(tmp_path, {"docker-compose.yaml": COMPOSE, "profiles/default.yaml": ENV_PROFILE})
    first = run("sync")
    assert first.exit_code == 0, first.output
    text = (tmp_path / VARIANT).read_text()
    assert "${" + ENV_HOST in text
    check = run("sync", "--check")
    assert check.exit_code == 0, check.output


def test_address_env_flag_needs_no_profile_and_excludes_address(tmp_path: Path, run: Cli) -> None:
    write_files(tmp_path, {"docker-compose.yaml": COMPOSE})
    assert run("sync", "--dir", ".", "--address-env").exit_code == 0
    assert "${" + ENV_HOST in (tmp_path / VARIANT).read_text()
    assert run("sync", "--dir", ".", "--address-env", "--check").exit_code == 0
    both = run("sync", "--dir", ".", "--address-env", "--address", "10.0.0.5")
    assert both.exit_code == 2 and "--address-env: cannot be used with --address" in both.output
    port = run("sync", "--dir", ".", "--address-env", "--port", "2010")
    assert port.exit_code == 2 and "--port:" in port.output


def test_env_variant_does_not_depend_on_the_address(tmp_path: Path, run: Cli) -> None:
    write_files(tmp_path, {"docker-compose.yaml": COMPOSE, "profiles/default.yaml": ENV_PROFILE})
    assert run("sync").exit_code == 0
    before = (tmp_path / VARIANT).read_text()
    learn(load_profile(None, tmp_path), "gpu-box", address="10.9.9.9")
    write_files(tmp_path, {"profiles/default.yaml": ENV_PROFILE.replace("null", "10.1.2.3")})
    assert run("sync", "--check").exit_code == 0
    assert (tmp_path / VARIANT).read_text() == before and "10.1.2.3" not in before


def test_compose_address_is_validated(tmp_path: Path, run: Cli) -> None:
    bad = ENV_PROFILE.replace("address: env", "address: envv")
    write_files(tmp_path, {"docker-compose.yaml": COMPOSE, "profiles/default.yaml": bad})
    result = run("sync")
    assert result.exit_code == 2
    assert "profiles/default.yaml:6: compose.address: must be one of literal, env" in result.output


# -- (b) carla-launch env P ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "port"), [("10.0.0.5", 2000), ("fd00::5", 2010), ("gpu-box.lab.example", 3000)]
)
def test_env_prints_each_format(tmp_path: Path, run: Cli, address: str, port: int) -> None:
    write_files(
        tmp_path,
        {
            "profiles/gpu.yaml": f"remote:\n  host: gpu-box\n  address: {address}\n"
            f"server:\n  port: {port}\ncompose:\n  address: env\n"
        },
    )
    url_host = f"[{address}]" if ":" in address else address
    shell = run("env", "gpu")
    assert shell.exit_code == 0, shell.output
    assert shell.output == (
        f"export {ENV_HOST}={shlex.quote(address)}\n"
        f"export {ENV_PORT}={port}\n"
        f"export {ENV_URL_HOST}={shlex.quote(url_host)}\n"
    )
    env = {**os.environ}
    out = subprocess.run(
        ["sh", "-c", f'{shell.output}\necho "${ENV_HOST} ${ENV_PORT}"'],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert out == f"{address} {port}\n"
    dotenv = run("env", "gpu", "--format", "dotenv")
    assert dotenv.output == f"{ENV_HOST}={address}\n{ENV_PORT}={port}\n{ENV_URL_HOST}={url_host}\n"
    js = run("env", "gpu", "--format", "json")
    assert json.loads(js.output) == {ENV_HOST: address, ENV_PORT: str(port), ENV_URL_HOST: url_host}


def test_env_uses_the_remembered_address_when_the_profile_has_none(
    tmp_path: Path, run: Cli
) -> None:
    write_files(tmp_path, {"profiles/gpu.yaml": "remote:\n  host: gpu-box\n  address: null\n"})
    learn(load_profile("gpu", tmp_path), "gpu-box", address="10.77.3.2")
    result = run("env", "gpu", "--format", "dotenv")
    assert result.exit_code == 0, result.output
    assert result.output == f"{ENV_HOST}=10.77.3.2\n{ENV_PORT}=2000\n{ENV_URL_HOST}=10.77.3.2\n"
    assert "eval" in run("env", "--help").output


# -- up/attach: the agent pane gets the variables; two profiles on one folder ----------------------
def test_agent_pane_gets_the_address_the_server_pane_does_not(tmp_path: Path) -> None:
    from carla_launcher.stack.env import agent_env
    from carla_launcher.stack.panes import session_panes

    write_files(tmp_path, {"profiles/gpu.yaml": "remote:\n  host: gpu-box\n"})
    prof = load_profile("gpu", tmp_path)
    panes = {
        p.role: p
        for p in session_panes(
            prof,
            "gpu-box",
            tmp_path / VARIANT,
            gpu=False,
            read_write=False,
            env=agent_env("fd00::5", 2003),
        )
    }
    assert panes["agent"].env[ENV_HOST] == "fd00::5" and panes["agent"].env[ENV_PORT] == "2003"
    assert ENV_HOST not in panes["server"].env


def _profiles(tmp_path: Path, files: dict[str, str]) -> dict[str, object]:
    write_files(tmp_path, {f"profiles/{k}.yaml": v for k, v in files.items()})
    return {k: read_profile(tmp_path / "profiles" / f"{k}.yaml") for k in files}


def test_refused_when_a_sibling_profile_writes_the_variants_for_another_server(
    tmp_path: Path,
) -> None:
    from carla_launcher.stack.variants import shared_folder_refusal

    literal = "remote:\n  host: box-a\n  address: 10.0.0.1\n"
    p = _profiles(
        tmp_path,
        {
            "a": literal,
            "same": literal,  # the same server: the same variants, nothing to refuse
            "port": literal + "server:\n  port: 2010\n  tmux_session: carla2\n",
            "box": "remote:\n  host: box-b\n",
            "env": "remote:\n  host: box-a\ncompose:\n  address: env\n",
            "elsewhere": "remote:\n  host: box-b\ncompose:\n  dir: other\n",
        },
    )
    others = [p[k] for k in ("same", "port", "box", "env", "elsewhere")]
    line = shared_folder_refusal(p["a"], others)  # type: ignore[arg-type]
    assert line == (
        "port.yaml (server.port 2010), box.yaml (box box-b), env.yaml (compose.address: env) "
        "also write the variants of build for another server, and each `up` would point the "
        "other's agent at its own server: set `compose.address: env` in these profiles (one "
        "variant, each agent with its own server's address)"
    )
    assert shared_folder_refusal(p["a"], [p["same"], p["elsewhere"]]) is None  # type: ignore[arg-type]


def test_up_refuses_before_touching_a_box(tmp_path: Path, run: Cli) -> None:
    """Two literal profiles of one folder for two servers on one box (the cross-wiring of the
    issue), and several servers with literal variants: one line, exit 2, no SSH."""
    write_files(
        tmp_path,
        {
            "build/docker-compose.yaml": COMPOSE,
            "profiles/gpu.yaml": "remote:\n  host: gpu-box\n",
            "profiles/gpu2.yaml": "remote:\n  host: gpu-box\nserver:\n  port: 2010\n",
            "profiles/many.yaml": "remote:\n  host: [box-a, box-b]\ncompose:\n  dir: many\n",
            "many/docker-compose.yaml": COMPOSE,
        },
    )
    r = run("up", "gpu2", "--no-attach")
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith(
        "error: profiles/gpu2.yaml: compose.address: gpu.yaml (server.port 2000) also writes "
        "the variants of build for another server"
    ), r.stderr
    assert r.stderr.count("\n") == 1 and "compose.address: env" in r.stderr
    many = run("up", "many", "--no-attach")
    assert many.exit_code == 2, many.output
    assert many.stderr == (
        "error: profiles/many.yaml: compose.address: 2 servers (server.gpus, or a pool of "
        "hosts) need one variant for many addresses: set `compose.address: env` in the "
        "profile (each agent then gets its own server's CARLA_LAUNCH_HOST/PORT)\n"
    )
    assert not (tmp_path / "build" / VARIANT).exists()


def test_the_agent_env_up_used_is_remembered_for_down_and_attach(tmp_path: Path) -> None:
    """Each agent's environment is recorded (down, status and attach run its project with it:
    an env-mode variant does not load without it), and read back only as far as it is what
    `up` writes."""
    from carla_launcher import records
    from carla_launcher.compose.hosts import ENV_SUFFIX
    from carla_launcher.stack.env import checked_env
    from carla_launcher.stack.pairs import agent_environ

    write_files(tmp_path, {"profiles/gpu.yaml": "remote:\n  host: gpu-box\n"})
    prof = load_profile("gpu", tmp_path)

    def remembered(env: dict[str, str]) -> dict[str, str]:
        agent = records.AgentRecord("gpu-box", 1, "gpu-abc-1", tmp_path / VARIANT, env)
        records.remember_session(prof, records.SessionRecord.of("s", [agent]))
        (found,) = records.session(prof).pairs  # type: ignore[union-attr]
        return checked_env(found.env)

    assert remembered(agent_environ("10.0.0.7", 2003, "gpu-abc-1")) == {
        ENV_HOST: "10.0.0.7",
        ENV_PORT: "2003",
        ENV_URL_HOST: "10.0.0.7",
        ENV_SUFFIX: "-gpu-abc-1",
    }
    tampered = {ENV_HOST: "$(id)", ENV_PORT: "2003", ENV_SUFFIX: "-x;rm"}  # tampered state
    assert remembered(tampered) == {}
    assert remembered({ENV_HOST: "10.0.0.7", ENV_PORT: "20o3"}) == {}


# -- (c) end to end: two boxes, one committed env-mode variant, each up reaches its own box ---
AGENT = E2E_AGENT.replace("name: e2e\n", "")  # the end-to-end agent, without its project name


@pytest.mark.root
@pytest.mark.docker
@pytest.mark.slow
def test_two_boxes_share_one_env_variant(tmp_path: Path, box_factory: Any, dockerd: Any) -> None:
    a, b = box_factory(), box_factory()
    proj = tmp_path / "proj"
    build = proj / "build"
    build.mkdir(parents=True)
    agent = AGENT.format(image=dockerd.image(), call=VERSION_CALL)
    (build / "docker-compose.yaml").write_text(agent)
    profiles: dict[int, Path] = {}  # box number -> the profile in the shared folder
    for box in (a, b):  # both profiles in one profiles/ folder, as a team commits them
        box.install_standin()
        box.write_profile(
            compose={"dir": "build", "simulator": "carla-simulator", "address": "env"}
        )
        profiles[box.n] = proj / "profiles" / box.profile_path.name
        profiles[box.n].parent.mkdir(exist_ok=True)
        profiles[box.n].write_text(box.profile_path.read_text())
    socket = f"cl-env-{uuid.uuid4().hex[:8]}"
    base = {**dockerd.environ(), "CARLA_LAUNCH_TMUX_SOCKET": socket}
    try:
        # the committed variant, made where no box is known
        sync = cli(proj, base, "sync", "--dir", "build", "--address-env")
        assert sync.returncode == 0, sync.stderr
        variant = build / VARIANT
        committed = variant.read_text()
        assert "${" + ENV_HOST in committed
        stamp = variant.stat().st_mtime_ns

        for box in (a, b):  # each profile's agent is its own compose project
            env = base
            up = cli(proj, env, "up", box.profile_path.stem, "--no-attach")
            assert up.returncode == 0, up.stderr + up.stdout
            assert "also write" not in up.stderr, up.stderr  # env mode: no clash warning
            assert f"-f {Path('build') / VARIANT} up" in up.stdout
            assert f"-p {read_profile(profiles[box.n]).key.lower()} -f" in up.stdout
            printed = cli(proj, env, "env", box.profile_path.stem, "--format", "dotenv")
            assert printed.stdout == (
                f"{ENV_HOST}={box.address}\n{ENV_PORT}=2000\n{ENV_URL_HOST}={box.address}\n"
            ), printed.stderr
        assert variant.read_text() == committed and variant.stat().st_mtime_ns == stamp
        for box in (a, b):
            check = cli(proj, base, "sync", "--profile", box.profile_path.stem, "--check")
            assert check.returncode == 0, check.stderr + check.stdout

        for box in (a, b):  # each agent reached its own box through the one variant
            session = f"carla-{read_profile(profiles[box.n]).key}"

            def agent_output(s: str = session) -> str | bool:
                return "CARLA 0.9.15" in (t := pane_text(socket, s, "agent")) and t

            text = wait_for(agent_output, 60, f"agent output of {box.alias}")
            assert f"agent: connected to {box.address}:2000, CARLA 0.9.15" in text, text
            other = b if box is a else a
            assert other.address not in text

        for box in (a, b):
            down = cli(proj, base, "down", box.profile_path.stem, "--server")
            assert down.returncode == 0, down.stderr
            assert "agent containers of" in down.stdout, down.stdout + down.stderr
        assert dockerd.docker("ps", "-aq").stdout.strip() == ""
    finally:
        kill_server(socket)
