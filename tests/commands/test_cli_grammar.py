"""One CLI grammar: help with examples, commands in the order of use, one error prefix, P
optional everywhere, completion of profiles and compose files, and `up -f FILE -- ARGS`."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click
import pytest

from carla_launcher.cli import COMMANDS, SECTIONS, cli
from carla_launcher.profile import load_profile
from carla_launcher.stack.panes import session_panes
from tests.harness.cli import REPO, Cli, child, write_files

ONE_PROFILE = {"profiles/gpu.yaml": "remote:\n  host: gpu-box\n  address: 10.0.0.5\n"}


def _walk(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under a group, subgroups (server, daemon) included."""
    ctx = click.Context(group)
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += _walk(command, (*path, name))
    return found


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        sub = command.get_command(click.Context(command), name)
        assert sub is not None, path
        command = sub
    return command


ALL = _walk(cli)


# -- help ------------------------------------------------------------------------------------------
def test_bare_carla_launch_prints_the_help_and_exits_0(tmp_path: Path) -> None:
    bare = child(cwd=tmp_path)
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.startswith("Usage: carla-launch") and "Set up:" in bare.stdout
    assert bare.stderr == ""


def test_help_lists_the_commands_grouped_in_the_order_people_use_them(run: Cli) -> None:
    out = run("--help").output
    titles = [title for title, _ in SECTIONS]
    assert [t for t in titles if f"\n{t}:\n" in out] == titles
    listed = [n for _, names in SECTIONS for n in names]
    assert sorted(listed) == sorted(COMMANDS), "every command in exactly one section"
    rows = [ln.split()[0] for ln in out.splitlines() if ln.startswith("  ") and ln.split()]
    assert [r for r in rows if r in COMMANDS] == listed, "listed in the sections' order"
    assert out.index("Set up:") < out.index("\n  init ") < out.index("Run:") < out.index("\n  up ")


@pytest.mark.parametrize("path", ALL, ids=" ".join)
def test_every_command_and_subcommand_help_has_an_example(run: Cli, path: tuple[str, ...]) -> None:
    r = run(*path, "--help")
    assert r.exit_code == 0, r.output
    examples = r.output.split("Examples:\n", 1)
    assert len(examples) == 2, f"no Examples: in `carla-launch {' '.join(path)} --help`"
    lines = [ln.strip() for ln in examples[1].splitlines() if ln.strip()]
    assert any(ln.startswith(f"carla-launch {' '.join(path)}") for ln in lines), lines


def test_the_walk_reaches_the_subcommands_of_server_and_daemon() -> None:
    assert {("server", "logs"), ("daemon", "install"), ("logs",)} <= set(ALL)


# -- one error prefix ------------------------------------------------------------------------------
BAD_INPUTS = [
    pytest.param(["up", "--bogus"], 2, "No such option '--bogus'", id="unknown option"),
    pytest.param(["nosuch"], 2, "No such command 'nosuch'", id="unknown command"),
    pytest.param(["--bogus"], 2, "No such option '--bogus'", id="unknown option of the group"),
    pytest.param(["status", "nope"], 2, "no profile named 'nope'", id="unknown profile"),
    pytest.param(["env", "gpu", "--host", "x"], 2, "not a host of gpu.yaml", id="bad --host"),
    pytest.param(["gpu", "--watch", "--json"], 2, "do not go together", id="bad combination"),
    pytest.param(["doctor", "--need-gb", "0"], 2, "'--need-gb'", id="out of range"),
    pytest.param(["logs", "gpu"], 1, "no agent started by `up`", id="nothing to show"),
    pytest.param(["sync", "-q"], 2, "invalid YAML", id="a broken compose file"),
]


@pytest.mark.parametrize(("argv", "code", "says"), BAD_INPUTS)
def test_every_error_starts_with_the_one_prefix(
    tmp_path: Path, argv: list[str], code: int, says: str
) -> None:
    write_files(tmp_path, {**ONE_PROFILE, "build/compose.yaml": "services: [\n"})
    r = child(*argv, cwd=tmp_path)
    assert r.returncode == code, (r.stdout, r.stderr)
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert errors and all(ln.startswith("error: ") for ln in errors), r.stderr
    assert says in r.stderr
    assert not [ln for ln in r.stderr.splitlines() if ln.startswith(("Error", "carla-launch:"))]


@click.command()
def failing() -> None:
    """A command that fails the way click's own exceptions do (a file it cannot open)."""
    raise click.FileError("settings.ini", "Permission denied")


def test_click_s_other_errors_have_the_prefix_too(
    monkeypatch: pytest.MonkeyPatch, run: Cli
) -> None:
    monkeypatch.setitem(COMMANDS, "failing", (__name__, "failing", "Fails."))
    r = run("failing")
    assert r.exit_code == 1
    assert r.stderr == "error: Could not open file 'settings.ini': Permission denied\n"


def test_a_usage_error_keeps_the_usage_and_the_help_hint(tmp_path: Path) -> None:
    r = child("up", "--bogus", cwd=tmp_path)
    lines = r.stderr.splitlines()
    assert lines[0] == "Usage: carla-launch up [OPTIONS] [P] [-- ARGS...]"
    assert lines[1] == "Try 'carla-launch up -h' for help."
    assert lines[-1].startswith("error: No such option '--bogus'")


def test_a_group_without_its_subcommand_shows_its_help(run: Cli) -> None:
    r = run("server")
    assert r.exit_code == 0 and r.output.startswith("Usage: carla-launch server")


# -- P optional ------------------------------------------------------------------------------------
def _takes_profile(path: tuple[str, ...]) -> bool:
    return any(p.name == "profile" for p in _command(path).params if isinstance(p, click.Argument))


@pytest.mark.parametrize(
    "path",
    [p for p in ALL if _takes_profile(p)],
    ids=" ".join,
)
def test_p_is_optional_and_reads_the_same_in_every_command(path: tuple[str, ...]) -> None:
    (p,) = [p for p in _command(path).params if p.name == "profile"]
    assert isinstance(p, click.Argument)
    assert not p.required and p.metavar == "[P]" and p.help
    usage = _command(path).get_usage(click.Context(_command(path), info_name=" ".join(path)))
    assert "[P]" in usage and "[[P]]" not in usage


def test_address_and_env_use_the_only_profile_without_p(tmp_path: Path, run: Cli) -> None:
    write_files(tmp_path, ONE_PROFILE)
    address = run("address")
    assert address.exit_code == 0, address.stderr
    assert address.stdout == "10.0.0.5\n"
    env = run("env", "--format", "dotenv")
    assert env.exit_code == 0 and "CARLA_LAUNCH_HOST=10.0.0.5" in env.stdout


# -- completion: the real CLI, asked as bash asks it -----------------------------------------------
def _complete(cwd: Path, line: str) -> list[str]:
    """What `carla-launch` offers for the last word of `line` (empty after a space)."""
    words = shlex.split(line)
    cword = len(words) if line.endswith(" ") else len(words) - 1
    env = {
        **os.environ,
        "_CARLA_LAUNCH_COMPLETE": "bash_complete",
        "COMP_WORDS": line,
        "COMP_CWORD": str(cword),
    }
    r = child(cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    return [ln.split(",", 1)[1] for ln in r.stdout.splitlines() if ln.startswith("plain,")]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_files(
        tmp_path,
        {
            "profiles/gpu.yaml": "remote:\n  host: gpu-box\n",
            "profiles/lab.yml": "remote:\n  host: lab-box\n",
            "profiles/notes.txt": "not a profile\n",
        },
    )
    (tmp_path / "build").mkdir()
    for name in ("docker-compose.yaml", "docker-compose.leaderboard.yaml"):
        (tmp_path / "build" / name).write_text((REPO / "build" / name).read_text())
    return tmp_path


def test_completion_offers_the_profiles_found_from_here_upwards(project: Path) -> None:
    below = project / "build"
    assert _complete(below, "carla-launch up ") == ["gpu", "lab"]
    assert _complete(below, "carla-launch status l") == ["lab"]
    assert _complete(below, "carla-launch sync --profile g") == ["gpu"]
    assert _complete(below, "carla-launch daemon status -p ") == ["gpu", "lab"]
    assert _complete(below, "carla-launch lo") == ["logs"]


def test_completion_offers_the_compose_files_of_the_named_profile(project: Path) -> None:
    files = ["docker-compose.leaderboard.yaml", "docker-compose.yaml"]
    assert _complete(project, "carla-launch up gpu -f ") == files
    assert _complete(project, "carla-launch up --gpu lab --file docker-compose.l") == files[:1]
    assert _complete(project, "carla-launch attach gpu -f ") == files


def test_completion_leaves_paths_to_the_shell(project: Path) -> None:
    assert _complete(project, "carla-launch up ./pro") == []
    write_files(project, {"elsewhere/profiles/x.yaml": "remote:\n  host: x\n"})
    assert _complete(project / "elsewhere", "carla-launch up ") == ["x"]


# -- up -f FILE -- ARGS ----------------------------------------------------------------------------
def test_up_takes_f_and_passes_what_follows_the_double_dash(tmp_path: Path) -> None:
    from carla_launcher.commands.up import up

    ctx = up.make_context("up", ["gpu", "-f", "compose.yaml", "--", "--build", "-d", "agent"])
    assert ctx.params["profile"] == "gpu" and ctx.params["compose"] == "compose.yaml"
    assert ctx.params["passed"] == ("--build", "-d", "agent")
    ctx = up.make_context("up", ["--", "--build"])  # P left out: `--build` is not taken for it
    assert ctx.params["profile"] is None and ctx.params["passed"] == ("--build",)
    ctx = up.make_context("up", ["gpu", "--no-attach"])
    assert ctx.params["passed"] == () and ctx.params["attach"] is False


def test_the_agent_pane_runs_docker_compose_up_with_the_passed_arguments(tmp_path: Path) -> None:
    write_files(tmp_path, ONE_PROFILE)
    variant = tmp_path / "build" / "docker-compose.distributed.yaml"
    passed = ["--build", "agent one"]
    panes = session_panes(
        load_profile("gpu", tmp_path),
        "gpu-box",
        variant,
        gpu=False,
        read_write=False,
        compose_args=passed,
    )
    (agent,) = [p for p in panes if p.role == "agent"]
    assert list(agent.argv) == ["docker", "compose", "-f", str(variant), "up", *passed]
    assert shlex.split(agent.shell)[-2:] == passed  # one word each in the pane's shell line
