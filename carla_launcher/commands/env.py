"""`carla-launch env P`: the variables an env-mode variant reads, for shells, .env files, tools."""

from __future__ import annotations

import json
import shlex

import click

from carla_launcher.commands.options import only_option, profile_argument
from carla_launcher.profile import load_profile

FORMATS = ("shell", "dotenv", "json")


def render(env: dict[str, str], fmt: str) -> str:
    """The variables in one format (pure). Values are addresses and ports (validated data), so
    dotenv needs no quoting; shell quotes anyway, as it is meant for `eval`."""
    if fmt == "json":
        return json.dumps(env, indent=2) + "\n"
    prefix = "export " if fmt == "shell" else ""
    quote = shlex.quote if fmt == "shell" else str
    return "".join(f"{prefix}{k}={quote(v)}\n" for k, v in env.items())


@click.command()
@profile_argument()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="shell",
    show_default=True,
    help="shell: export lines for eval; dotenv: KEY=VALUE for --env-file; json: an object.",
)
@click.option("--host", metavar="HOST", help="One host of a pool (default: the first).")
@only_option("Server K of the box", 0)
def env(profile: str | None, fmt: str, host: str | None, only: int) -> None:
    """Print CARLA_LAUNCH_HOST, CARLA_LAUNCH_PORT and CARLA_LAUNCH_URL_HOST for profile P.

    Variants made in the env address mode (`compose.address: env` in the profile, or
    `sync --address-env`) read the box's address and port from these variables when they
    run, so one committed variant serves every box. `up` and `attach` set them themselves;
    this is for running a variant by hand. The address is the profile's remote.address, else
    the one recorded by `deploy`/`up`/`address`, else discovered over SSH (as `up` finds it);
    the port is the one recorded by the last deploy or `up`, else server.port. With several
    servers per box (`server.gpus`), --only K gives server K's port (each agent `up` starts
    gets its own server's).
    CARLA_LAUNCH_URL_HOST is the address as URLs and host:port need it (bracketed for IPv6).
    """
    from carla_launcher.stack.env import known_env

    prof = load_profile(profile)
    if host is not None and host not in prof.remote.hosts:
        raise click.BadParameter(
            f"not a host of {prof.path.name}: {host!r} (hosts: {', '.join(prof.remote.hosts)})",
            param_hint="--host",
        )
    click.echo(render(known_env(prof, host, only), fmt), nl=False)
