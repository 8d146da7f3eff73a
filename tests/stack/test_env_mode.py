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
from carla_launcher.targeting import sharing_warning
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


def test_two_literal_profiles_on_one_folder_warn(tmp_path: Path) -> None:
    p = _profiles(
        tmp_path,
        {
            "a": "remote:\n  host: box-a\n  address: 10.0.0.1\n",
            "b": "remote:\n  host: box-b\n  address: 10.0.0.2\n",
            "c": "remote:\n  host: box-c\n  address: 10.0.0.3\ncompose:\n  dir: other\n",
            "d": "remote:\n  host: box-a\n  address: 10.0.0.1\n",
        },
    )
    line = sharing_warning(p["a"], "10.0.0.1", [(p[k], p[k].remote.address) for k in "bcd"])
    assert line is not None and "\n" not in line
    assert "b.yaml (10.0.0.2)" in line and "c.yaml" not in line and "d.yaml" not in line
    assert "compose.address: env" in line
    # the other's address unknown yet: another box is enough to tell
    assert sharing_warning(p["a"], "10.0.0.1", [(p["b"], None)]) is not None


def test_env_profiles_share_a_folder_without_warning(tmp_path: Path) -> None:
    env = "compose:\n  address: env\n"
    p = _profiles(
        tmp_path,
        {
            "a": "remote:\n  host: box-a\n" + env,
            "b": "remote:\n  host: box-b\n" + env,
            "c": "remote:\n  host: box-c\n",
        },
    )
    assert sharing_warning(p["a"], "10.0.0.1", [(p["b"], "10.0.0.2")]) is None
    mixed = sharing_warning(p["a"], "10.0.0.1", [(p["c"], None)])
    assert mixed is not None and "c.yaml (compose.address: literal)" in mixed


def test_up_warns_when_a_sibling_profile_writes_the_same_variants(tmp_path: Path) -> None:
    from carla_launcher.stack.variants import warn_shared_folder

    write_files(
        tmp_path,
        {
            "profiles/a.yaml": "remote:\n  host: box-a\n",
            "profiles/b.yaml": "remote:\n  host: box-b\n",
            "profiles/broken.yaml": "remote: [\n",
        },
    )  # skipped, not an error
    learn(load_profile("b", tmp_path), "box-b", address="10.0.0.2")
    said: list[str] = []
    warn_shared_folder(load_profile("a", tmp_path), "10.0.0.1", said.append)
    assert len(said) == 1 and said[0].startswith("warning: b.yaml (10.0.0.2) also writes"), said


def test_the_agent_env_up_used_is_remembered_for_down_and_attach(tmp_path: Path) -> None:
    from carla_launcher.records import SessionRecord, remember_session
    from carla_launcher.stack.env import agent_env, compose_environ, remembered_env

    write_files(tmp_path, {"profiles/gpu.yaml": "remote:\n  host: gpu-box\n"})
    prof = load_profile("gpu", tmp_path)
    assert remembered_env(prof) is None
    remember_session(prof, SessionRecord(tmp_path / VARIANT, "s", agent_env("10.0.0.7", 2003)))
    assert remembered_env(prof) == {
        ENV_HOST: "10.0.0.7",
        ENV_PORT: "2003",
        ENV_URL_HOST: "10.0.0.7",
    }
    assert compose_environ(prof)[ENV_HOST] == "10.0.0.7"
    tampered = SessionRecord(tmp_path / VARIANT, "s", agent_env("$(id)", 2003))
    remember_session(prof, tampered)  # tampered state
    assert remembered_env(prof) is None


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

        for n, box in enumerate((a, b)):  # a compose project per user, as on two machines
            env = {**base, "COMPOSE_PROJECT_NAME": f"e2e{n}"}
            up = cli(proj, env, "up", box.profile_path.stem, "--no-attach")
            assert up.returncode == 0, up.stderr + up.stdout
            assert "also write" not in up.stderr, up.stderr  # env mode: no clash warning
            assert f"-f {Path('build') / VARIANT} up" in up.stdout
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

        for n, box in enumerate((a, b)):
            env = {**base, "COMPOSE_PROJECT_NAME": f"e2e{n}"}
            down = cli(proj, env, "down", box.profile_path.stem, "--server")
            assert down.returncode == 0, down.stderr
            assert "agent containers of" in down.stdout, down.stdout + down.stderr
        assert dockerd.docker("ps", "-aq").stdout.strip() == ""
    finally:
        kill_server(socket)
