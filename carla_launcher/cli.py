"""`carla-launch`: the click group. Each command lives in `commands/<name>.py` and is imported
only when it runs, so that `sync` (a pre-commit hook) starts fast and the daemon never imports
pyinfra.

The group also holds what every command shares: the help's sections and examples (one table,
so that the examples read as one walkthrough and a test can check that none is missing) and
the one shape of an error line, for our errors and click's usage errors alike."""

from __future__ import annotations

import importlib
import importlib.util
from typing import IO, Any

import click

from carla_launcher import __version__
from carla_launcher.commands.messages import error_line
from carla_launcher.errors import LauncherError

PROG = "carla-launch"

# name -> (module, attribute, one-line help shown in `carla-launch --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("carla_launcher.commands.init", "init", "Write a profile for this project."),
    "doctor": (
        "carla_launcher.commands.doctor",
        "doctor",
        "Check this machine (and a box): local or distributed?",
    ),
    "deploy": (
        "carla_launcher.commands.deploy",
        "deploy",
        "Make a fresh GPU box run the CARLA server.",
    ),
    "up": ("carla_launcher.commands.up", "up", "Server, variants and agent up; attach to both."),
    "attach": (
        "carla_launcher.commands.attach",
        "attach",
        "Server and agent panes side by side (tmux).",
    ),
    "status": (
        "carla_launcher.commands.status",
        "status",
        "One table: server, address, daemon, agent, session.",
    ),
    "logs": (
        "carla_launcher.commands.logs",
        "logs",
        "The agent's container logs (docker compose).",
    ),
    "down": (
        "carla_launcher.commands.up",
        "down",
        "Agent down, session closed (--server: server too).",
    ),
    "sync": (
        "carla_launcher.commands.sync",
        "sync",
        "Write the distributed variants of the compose files.",
    ),
    "daemon": (
        "carla_launcher.commands.daemon",
        "daemon",
        "Keep the variants current as files change (systemd unit).",
    ),
    "env": (
        "carla_launcher.commands.env",
        "env",
        "Print CARLA_LAUNCH_HOST/PORT for env-mode variants.",
    ),
    "server": (
        "carla_launcher.commands.server",
        "server",
        "Start, stop, restart, inspect the remote server.",
    ),
    "gpu": ("carla_launcher.commands.gpu", "gpu", "GPUs, VRAM and who uses it, here or on a box."),
    "address": (
        "carla_launcher.commands.address",
        "address",
        "Print the address agents should use for a box.",
    ),
}

# The commands in `--help`, in the order people use them.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Set up", ("init", "doctor", "deploy")),
    ("Run", ("up", "attach", "status", "logs", "down")),
    ("Variants", ("sync", "daemon", "env")),
    ("Box", ("server", "gpu", "address")),
)

# Command path -> examples (one per line; `#` starts a comment), shown at the end of its help.
# The profile is called `gpu`, as in the README's walkthrough.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "": (
        "carla-launch init gpu --host gpu-box --user me",
        "carla-launch doctor gpu",
        "carla-launch up gpu",
        "carla-launch down gpu --server",
    ),
    "init": (
        "carla-launch init gpu --host gpu-box --user me # writes profiles/gpu.yaml",
        "carla-launch init here --local # the server on this machine",
    ),
    "doctor": (
        "carla-launch doctor # this machine: can it run server and agent?",
        "carla-launch doctor gpu # and the box of profiles/gpu.yaml",
    ),
    "deploy": (
        "carla-launch deploy gpu --dry-run # what would change on the box",
        "carla-launch deploy gpu",
    ),
    "up": (
        "carla-launch up # the only (or the default) profile",
        "carla-launch up gpu -f docker-compose.leaderboard.yaml",
        "carla-launch up gpu -- --build agent # rest goes to `docker compose up`",
        "carla-launch up pool # server.gpus on a pool: a server per GPU, an agent per server",
        "carla-launch up gpu # with remote.tunnel: auto, an SSH tunnel if the box's ports are shut",
        "carla-launch up cluster # server.mode: slurm: sbatch jobs, tunnels via the login node",
    ),
    "attach": (
        "carla-launch attach gpu",
        "carla-launch attach gpu --gpu --rw # a GPU pane; keys reach the server",
        "carla-launch attach gpu --no-attach # build the windows only (scripts)",
    ),
    "status": (
        "carla-launch status gpu",
        "carla-launch status pool --json | jq '.pairs[] | [.host, .slot, .port, .agent.project]'",
        "carla-launch status gpu --json | jq '.pairs[].tunnel | [.bind, .local_port, .up]'",
        "carla-launch status cluster --json | jq '.hosts[].servers[].job | [.id, .state, .node]'",
    ),
    "logs": (
        "carla-launch logs gpu # every container of the agent's project",
        "carla-launch logs gpu agent -f -n 20",
        "carla-launch logs pool --only 1 --host gpu-1 -f # one agent of several",
    ),
    "down": ("carla-launch down gpu", "carla-launch down gpu --server # every server of it too"),
    "sync": (
        "carla-launch sync --profile gpu",
        "carla-launch sync --dir build --address 10.0.0.5",
        "carla-launch sync --check # exit 1 when a variant is stale",
    ),
    "daemon": (
        "carla-launch daemon --dir build # in the foreground",
        "carla-launch daemon install --dir build # as a systemd user unit",
    ),
    "daemon install": ("carla-launch daemon install --dir build --profile gpu",),
    "daemon uninstall": ("carla-launch daemon uninstall --dir build",),
    "daemon status": ("carla-launch daemon status --dir build --json",),
    "env": (
        'eval "$(carla-launch env gpu)"',
        "carla-launch env gpu --format dotenv > .env.carla",
        "docker compose --env-file .env.carla -f build/docker-compose.distributed.yaml up",
        "carla-launch env gpu --only 1 --format dotenv # server 1 of several",
    ),
    "server": ("carla-launch server status gpu", "carla-launch server restart gpu"),
    "server start": ("carla-launch server start gpu --host gpu-box-2",),
    "server stop": ("carla-launch server stop gpu", "carla-launch server stop gpu --only 1"),
    "server restart": ("carla-launch server restart gpu --no-wait",),
    "server status": ("carla-launch server status gpu --json",),
    "server logs": ("carla-launch server logs gpu -f -n 200",),
    "server uninstall": (
        "carla-launch server uninstall gpu --dry-run # what would be removed",
        "carla-launch server uninstall gpu --yes",
    ),
    "gpu": (
        "carla-launch gpu # this machine",
        "carla-launch gpu gpu --watch # the box of profiles/gpu.yaml, refreshed",
    ),
    "address": ("carla-launch address gpu", 'CARLA_HOST="$(carla-launch address gpu)"'),
}


def examples_epilog(path: str) -> str | None:
    """The `Examples:` block of a command's help, comments in one column (`\\b`: click keeps
    the lines as they are)."""
    lines = EXAMPLES.get(path)
    if not lines:
        return None
    split = [(cmd.rstrip(), note) for cmd, _, note in (line.partition(" # ") for line in lines)]
    width = max(len(cmd) for cmd, note in split if note) if any(n for _, n in split) else 0
    rows = [f"  {cmd:<{width}}  # {note.strip()}" if note else f"  {cmd}" for cmd, note in split]
    return "\b\nExamples:\n" + "\n".join(rows)


def _attach_examples(command: click.Command, path: str) -> None:
    """Examples as the epilog of a command and of its subcommands (server, daemon)."""
    if command.epilog is None:
        command.epilog = examples_epilog(path)
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            _attach_examples(sub, f"{path} {name}")


def usage_error_text(e: click.ClickException) -> str:
    """click's error in our shape: usage and hint as click shows them, then `error: ...`."""
    line = error_line(e.format_message())
    if isinstance(e, click.UsageError) and e.ctx is not None:
        hint = f"Try '{e.ctx.command_path} -h' for help."
        return f"{e.ctx.get_usage()}\n{hint}\n\n{line}"
    return line


class _Shown(click.ClickException):
    """A click exception that click's `main` shows in our shape (and exits with its code)."""

    def __init__(self, original: click.ClickException) -> None:
        super().__init__(original.message)
        self.original = original

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(usage_error_text(self.original), err=True)


class _ShownUsage(_Shown):
    exit_code = click.UsageError.exit_code


class _Help(click.ClickException):
    """A group run without a command: its help on stdout, exit 0 (as `git remote` lists)."""

    exit_code = 0

    def __init__(self, ctx: click.Context) -> None:
        super().__init__("")
        self.help = ctx.get_help()

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.help)


def _ours(e: click.ClickException) -> click.ClickException:
    if isinstance(e, _Shown | _Help):
        return e
    if isinstance(e, click.exceptions.NoArgsIsHelpError) and e.ctx is not None:
        return _Help(e.ctx)
    return _ShownUsage(e) if isinstance(e, click.UsageError) else _Shown(e)


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (as tmuxp and pip keep start-up small)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [
            name
            for _, names in SECTIONS
            for name in names
            if name in COMMANDS and importlib.util.find_spec(COMMANDS[name][0])
        ]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):  # a wrong COMMANDS entry, not user input
            raise TypeError(f"{module}.{attr} is not a click command")
        _attach_examples(command, name)
        return command

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as e:  # the group's own options, or no arguments at all
            raise _ours(e) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LauncherError as e:  # one line, no traceback: the user's input was wrong
            click.echo(error_line(str(e)), err=True)
            ctx.exit(e.exit_code)
        except click.ClickException as e:  # a command's usage error, or a group's bare call
            raise _ours(e) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        listed = set(self.list_commands(ctx))
        for title, names in SECTIONS:
            rows = [(name, COMMANDS[name][2]) for name in names if name in listed]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


@click.group(
    PROG,
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples_epilog(""),
)
@click.version_option(__version__, "-V", "--version", prog_name=PROG)
def cli() -> None:
    """Run the CARLA server on a remote GPU box and your agent locally.

    carla-launch keeps a distributed variant of every compose file (simulator removed,
    agents pointed at the box), deploys and watches the server, and shows both side by side.
    P, where a command takes it, is a profile (profiles/P.yaml); left out, it is the only
    profile, else `default`.

    Shell completion of commands, options, profiles and compose files (bash; zsh, fish alike):

        eval "$(_CARLA_LAUNCH_COMPLETE=bash_source carla-launch)"
    """


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name=PROG, standalone_mode=True)
