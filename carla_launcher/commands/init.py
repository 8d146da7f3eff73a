"""`carla-launch init`: write a profile for this project."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click

from carla_launcher.compose.detect import CANDIDATE_DIRS, detect
from carla_launcher.errors import InputError, display_path
from carla_launcher.fsutil import atomic_write
from carla_launcher.profile import parse_profile


def _q(value: object) -> str:
    """A YAML scalar that reads back as the same string (JSON strings are YAML)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def render_profile(
    *,
    host: str,
    user: str | None,
    ssh_port: int | None,
    identity_file: str | None,
    address: str | None,
    connector: str,
    server_port: int,
    package_url: str | None,
    sha256: str | None,
    compose_dir: str,
    simulator: str | None,
) -> str:
    """The profile file, commented like the examples in profiles/."""
    lines = [
        "# Written by `carla-launch init`. Fields: see profiles/default.yaml and the README.",
        "remote:",
        f"  host: {_q(host)}                # ssh host or ~/.ssh/config alias",
    ]
    if connector != "ssh":
        lines.append(f"  connector: {_q(connector)}")
    if user:
        lines.append(f"  user: {_q(user)}")
    if ssh_port:
        lines.append(f"  port: {ssh_port}")
    if identity_file:
        lines.append(f"  identity_file: {_q(identity_file)}")
    lines += [
        f"  address: {_q(address)}          # what agents connect to; null = discover over SSH",
        "server:",
        "  mode: package",
        "  package:",
        f"    url: {_q(package_url)}",
        f"    sha256: {_q(sha256)}",
        "  args: [-RenderOffScreen, -nosound]",
        f"  port: {server_port}                 # world port; the server also uses port+1 and port+2",
        "  restart: on-failure",
        "  tmux_session: carla",
        "compose:",
        f"  dir: {_q(compose_dir)}",
        f"  simulator: {_q(simulator)}",
    ]
    return "\n".join(lines) + "\n"


def _validate(text: str, target: Path) -> None:
    """Refuse flags the profile loader would refuse, before anything is written."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / target.name
        probe.write_text(text)
        try:
            parse_profile(probe)
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
def init(
    name: str,
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
    a missing host only when stdin is a terminal.
    """
    root = Path.cwd()
    if local:
        host = host or "localhost"
    if not host:
        if sys.stdin.isatty():
            host = click.prompt("SSH host of the GPU box (or alias from ~/.ssh/config)")
        else:
            raise click.UsageError("--host is required (or --local for this machine)")
    found = detect(root, (compose_dir,) if compose_dir else CANDIDATE_DIRS)
    if found is None and (compose_dir is None or simulator is None):
        where = compose_dir or "., build, docker, compose, deploy"
        raise InputError(
            None,
            None,
            f"no compose file with a CARLA simulator found in {where}; "
            "pass --compose-dir DIR --simulator NAME",
        )
    folder = compose_dir or os.path.relpath(found.folder, root)  # type: ignore[union-attr]
    sim = simulator or found.simulator  # type: ignore[union-attr]
    target = root / "profiles" / f"{name}.yaml"
    if target.exists() and not force:
        raise InputError(target, None, "exists; use --force to overwrite it")
    text = render_profile(
        host=host,
        user=user,
        ssh_port=ssh_port,
        identity_file=identity_file,
        address=address,
        connector="local" if local else "ssh",
        server_port=server_port,
        package_url=package_url,
        sha256=sha256,
        compose_dir=folder,
        simulator=sim,
    )
    _validate(text, target)
    target.parent.mkdir(exist_ok=True)
    atomic_write(target, text)
    click.echo(f"wrote {display_path(target)} (compose folder {folder}, simulator {sim})")
    ref = "" if name == "default" else f" {name}"
    click.echo(f"next: carla-launch doctor{ref}   then   carla-launch up{ref or ' default'}")
