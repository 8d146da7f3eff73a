"""`carla-launch`: the click group. Each command lives in `commands/<name>.py` and is imported
only when it runs, so that `sync` (a pre-commit hook) starts fast and the daemon never imports
pyinfra."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from carla_launcher import __version__
from carla_launcher.errors import LauncherError

# name -> (module, attribute, one-line help shown in `carla-launch --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
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
    "deploy": (
        "carla_launcher.commands.deploy",
        "deploy",
        "Make a fresh GPU box run the CARLA server.",
    ),
    "server": (
        "carla_launcher.commands.server",
        "server",
        "Start, stop, restart, inspect the remote server.",
    ),
    "address": (
        "carla_launcher.commands.address",
        "address",
        "Print the address agents should use for a box.",
    ),
    "env": (
        "carla_launcher.commands.env",
        "env",
        "Print CARLA_LAUNCH_HOST/PORT for env-mode variants.",
    ),
    "up": ("carla_launcher.commands.up", "up", "Server, variants and agent up; attach to both."),
    "down": (
        "carla_launcher.commands.up",
        "down",
        "Agent down, session closed (--server: server too).",
    ),
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
    "init": ("carla_launcher.commands.init", "init", "Write a profile for this project."),
    "doctor": (
        "carla_launcher.commands.doctor",
        "doctor",
        "Check this machine (and a box): local or distributed?",
    ),
    "gpu": ("carla_launcher.commands.gpu", "gpu", "GPUs, VRAM and who uses it, here or on a box."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (as tmuxp and pip keep start-up small)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, (mod, _, _) in COMMANDS.items() if importlib.util.find_spec(mod))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):  # a wrong COMMANDS entry, not user input
            raise TypeError(f"{module}.{attr} is not a click command")
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LauncherError as e:  # one line, no traceback: the user's input was wrong
            click.echo(f"carla-launch: {e}", err=True)
            ctx.exit(e.exit_code)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="carla-launch")
def cli() -> None:
    """Run the CARLA server on a remote GPU box and your agent locally.

    carla-launch keeps a distributed variant of every compose file (simulator removed,
    agents pointed at the box), deploys and watches the server, and shows both side by side.

    Shell completion (bash; zsh and fish alike):

        eval "$(_CARLA_LAUNCH_COMPLETE=bash_source carla-launch)"
    """


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="carla-launch", standalone_mode=True)
