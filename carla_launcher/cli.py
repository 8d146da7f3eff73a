"""`carla-launch`: the click group. Each command lives in `commands/<name>.py` and is imported
only when it runs, so that `sync` (a pre-commit hook) starts fast and the daemon never imports
pyinfra."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from carla_launcher import __version__
from carla_launcher.errors import LauncherError

# name -> (module, attribute, one-line help shown in `carla-launch --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "sync": ("carla_launcher.commands.sync", "sync", "Write the distributed variants of the compose files."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (as tmuxp and pip keep start-up small)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

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
    try:
        return cli.main(args=argv, prog_name="carla-launch", standalone_mode=True)
    except LauncherError as e:  # raised outside a command's own handling
        click.echo(f"carla-launch: {e}", err=True)
        sys.exit(e.exit_code)
