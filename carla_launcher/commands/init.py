"""`carla-launch init`: write a profile for this project."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from carla_launcher import __version__
from carla_launcher.compose.detect import CANDIDATE_DIRS, detect
from carla_launcher.errors import InputError, display_path
from carla_launcher.fsutil import atomic_write
from carla_launcher.profile import PROFILE_DIR, parse_profile
from carla_launcher.profile.schema import MODELINE, SCHEMA_FILE
from carla_launcher.profile.schema import render as render_schema
from carla_launcher.profile.template import render


def _validate(text: str, target: Path) -> None:
    """Refuse flags the profile loader would refuse, before anything is written."""
    try:
        parse_profile(text, target)
    except InputError as e:
        raise click.BadParameter(f"{e.field}: {e.message}") from None


DEFAULT_URL = (
    "https://leaderboard-public-contents.s3.us-west-2.amazonaws.com/CARLA_Leaderboard_2.0.tar.xz"
)


@click.command()
@click.argument("name", default="default")
@click.option("--host", help="SSH host or ~/.ssh/config alias of the GPU box.")
@click.option("--user", help="SSH user.")
@click.option("--ssh-port", type=click.IntRange(1, 65535), help="SSH port.")
@click.option("--identity-file", help="SSH key.")
@click.option("--address", help="Address agents connect to (default: discovered over SSH).")
@click.option(
    "--local", "local", is_flag=True, help="The server runs on this machine (connector: local)."
)
@click.option(
    "--server-port",
    type=click.IntRange(1, 65533),
    default=2000,
    show_default=True,
    help="CARLA world port.",
)
@click.option(
    "--package-url",
    default=DEFAULT_URL,
    show_default=False,
    help="CARLA package (http(s) URL or local file). Default: the Leaderboard 2.0 package.",
)
@click.option("--sha256", help="Expected sha256 of the package.")
@click.option("--compose-dir", help="Compose folder (default: detected).")
@click.option("--simulator", help="Simulator service (default: detected).")
@click.option("--force", is_flag=True, help="Overwrite an existing profile.")
@click.option(
    "--schema",
    "schema_only",
    is_flag=True,
    help=f"Only (re)write profiles/{SCHEMA_FILE}, for editors (after an upgrade).",
)
def init(
    name: str,
    schema_only: bool,
    host: str | None,
    user: str | None,
    ssh_port: int | None,
    identity_file: str | None,
    address: str | None,
    local: bool,
    server_port: int,
    package_url: str,
    sha256: str | None,
    compose_dir: str | None,
    simulator: str | None,
    force: bool,
) -> None:
    """Write profiles/NAME.yaml for this project (NAME defaults to "default").

    The compose folder and the simulator service are detected; flags set the rest. Asks for
    a missing host only when stdin is a terminal. Every field is written, under a comment that
    says what it is for; profiles/profile.schema.json, written beside it, lets editors with
    the YAML language server complete and check profiles.
    """
    root = Path.cwd()
    if schema_only:
        schema = write_schema(root / PROFILE_DIR)
        click.echo(f"wrote {display_path(schema)}; a profile whose first line is `{MODELINE}`")
        click.echo("is completed and checked by editors with the YAML language server")
        return
    if local:
        host = host or "localhost"
    if not host:
        if sys.stdin.isatty():
            host = click.prompt("SSH host of the GPU box (or alias from ~/.ssh/config)")
        else:
            raise click.UsageError("--host is required (or --local for this machine)")
    found = detect(root, (compose_dir,) if compose_dir else CANDIDATE_DIRS)
    if found is not None:
        folder = compose_dir or os.path.relpath(found.folder, root)
        sim = simulator or found.simulator
    elif compose_dir is not None and simulator is not None:
        folder, sim = compose_dir, simulator
    else:
        where = compose_dir or "., build, docker, compose, deploy"
        raise InputError(
            None,
            None,
            f"no compose file with a CARLA simulator found in {where}; "
            "pass --compose-dir DIR --simulator NAME",
        )
    target = root / PROFILE_DIR / f"{name}.yaml"
    if target.exists() and not force:
        raise InputError(target, None, "exists; use --force to overwrite it")
    given = {
        "remote.host": host,
        "remote.connector": "local" if local else "ssh",
        "remote.user": user,
        "remote.port": ssh_port,
        "remote.identity_file": identity_file,
        "remote.address": address,
        "server.port": server_port,
        "server.package.url": package_url,
        "server.package.sha256": sha256,
        "compose.dir": folder,
        "compose.simulator": sim,
    }
    text = render({k: v for k, v in given.items() if v is not None}, __version__)
    _validate(text, target)
    target.parent.mkdir(exist_ok=True)
    atomic_write(target, text)
    schema = write_schema(target.parent)
    click.echo(f"wrote {display_path(target)} (compose folder {folder}, simulator {sim})")
    click.echo(
        f"wrote {display_path(schema)} (editors with the YAML language server complete and "
        "check profiles with it)"
    )
    ref = "" if name == "default" else f" {name}"
    click.echo(f"next: carla-launch doctor{ref}   then   carla-launch up{ref or ' default'}")


def write_schema(folder: Path) -> Path:
    """profiles/profile.schema.json, from this version's table of fields (when it differs)."""
    path = folder / SCHEMA_FILE
    text = render_schema()
    try:
        if path.read_text(encoding="utf-8") == text:
            return path
    except OSError:
        pass
    folder.mkdir(exist_ok=True)
    atomic_write(path, text)
    return path
