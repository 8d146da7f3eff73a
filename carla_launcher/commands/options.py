"""Options several commands share, declared once so that their names and help read the same."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from carla_launcher.commands.completion import complete_compose_file, complete_profile

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

PROFILE_HELP = (
    "The profile: a name (profiles/P.yaml, found from here upwards) or a path. "
    "Default: the only profile, else `default`."
)


def profile_argument(
    text: str = PROFILE_HELP,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The optional P of every command that works on a profile: one metavar, help, completion."""
    return click.argument(
        "profile",
        metavar="[P]",
        required=False,
        help=text,
        shell_complete=complete_profile,
    )


def compose_file_option(text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """-f/--file FILE: the compose file, as docker compose's -f names it."""
    return click.option(
        "-f",
        "--file",
        "compose",
        metavar="FILE",
        help=text,
        shell_complete=complete_compose_file,
    )


class PassThroughCommand(click.Command):
    """A command whose arguments after `--` are kept, untouched, for another program
    (`carla-launch up P -- --build agent`): they land in the `passed` parameter, and the
    arguments before `--` are parsed as usual, so P cannot swallow them."""

    passed_metavar = "[-- ARGS...]"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        passed: tuple[str, ...] = ()
        if "--" in args:
            at = args.index("--")
            args, passed = args[:at], tuple(args[at + 1 :])
        rest = super().parse_args(ctx, args)
        ctx.params["passed"] = passed
        return rest

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*super().collect_usage_pieces(ctx), self.passed_metavar]


gpu_pane_option = click.option(
    "--gpu", is_flag=True, help="A third pane with `carla-launch gpu P --watch`."
)
host_option = click.option("--host", metavar="HOST", help="One host of a pool (default: all).")


def only_option(what: str, default: int | None = None) -> Callable[[Callable[..., Any]], Any]:
    """`--only K`: server K of each host (`server.gpus`: K is the GPU's place in the list,
    0 first); `what` says what K picks in this command."""
    return click.option(
        "--only",
        type=click.IntRange(min=0),
        default=default,
        metavar="K",
        help=f"{what} (server.gpus: K is the GPU's place in the list, 0 first"
        + (f"; default: {default})." if default is not None else ")."),
    )


accept_new_host_key_option = click.option(
    "--accept-new-host-key",
    is_flag=True,
    help="Trust a box whose host key is not in known_hosts yet (refused by default).",
)
read_write_option = click.option(
    "--rw",
    "read_write",
    is_flag=True,
    help="Let the server pane take keys (default read-only: Ctrl-C cannot kill the server).",
)


def address_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--profile / --address / --port / --simulator, shared by sync and daemon."""
    f = click.option(
        "--simulator",
        metavar="NAME",
        help="The simulator service (default: found by its image or command).",
    )(f)
    f = click.option(
        "--port",
        type=click.IntRange(1, 65533),
        help="The remote server's world port, when agents must use another one.",
    )(f)
    f = click.option(
        "--address", metavar="ADDR", help="Address agents connect to; wins over the profile."
    )(f)
    f = click.option(
        "--profile",
        "-p",
        "profile",
        metavar="P",
        help="Profile name (profiles/P.yaml) or path; default: the default profile.",
        shell_complete=complete_profile,
    )(f)
    return f


def chosen_hosts(profile: Profile, host: str | None) -> list[str]:
    """The hosts `--host` picks among the profile's (all of them without it); a host the
    profile does not name is a usage error, never a silent "all"."""
    if host is None:
        return list(profile.remote.hosts)
    if host not in profile.remote.hosts:
        names = ", ".join(profile.remote.hosts)
        raise click.BadParameter(
            f"{host!r} is not a host of {profile.name} ({names})", param_hint="--host"
        )
    return [host]
