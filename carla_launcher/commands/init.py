"""`carla-launch init`: write a profile for this project."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import click
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.representer import RoundTripRepresenter

from carla_launcher.compose.detect import CANDIDATE_DIRS, detect
from carla_launcher.errors import InputError, display_path
from carla_launcher.fsutil import atomic_write
from carla_launcher.profile import parse_profile

HEADER = "Written by `carla-launch init`. Fields: see profiles/default.yaml and the README."
COMMENT_COLUMN = 30  # where the end-of-line comments start, like the examples in profiles/


class _Representer(RoundTripRepresenter):
    """Writes null as `null`: `address: null` says "discover" where `address:` says nothing.
    A subclass, so that other YAML writers in this process keep ruamel's default."""


_Representer.add_representer(
    type(None),
    lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"),
)


def _commented(values: dict[str, object], comments: dict[str, str]) -> CommentedMap:
    node = CommentedMap(values)
    for key, text in comments.items():
        node.yaml_add_eol_comment(text, key, column=COMMENT_COLUMN)
    return node


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
    remote: dict[str, object] = {"host": host}
    if connector != "ssh":
        remote["connector"] = connector
    if user:
        remote["user"] = user
    if ssh_port:
        remote["port"] = ssh_port
    if identity_file:
        remote["identity_file"] = identity_file
    remote["address"] = address
    args = CommentedSeq(["-RenderOffScreen", "-nosound"])
    args.fa.set_flow_style()
    server = {
        "mode": "package",
        "package": CommentedMap({"url": package_url, "sha256": sha256}),
        "args": args,
        "port": server_port,
        "restart": "on-failure",
        "tmux_session": "carla",
    }
    doc = CommentedMap(
        {
            "remote": _commented(
                remote,
                {
                    "host": "ssh host or ~/.ssh/config alias",
                    "address": "what agents connect to; null = discover over SSH",
                },
            ),
            "server": _commented(
                server, {"port": "world port; the server also uses port+1 and port+2"}
            ),
            "compose": CommentedMap({"dir": compose_dir, "simulator": simulator}),
        }
    )
    doc.yaml_set_start_comment(HEADER)
    yaml = YAML()
    yaml.Representer = _Representer
    yaml.width = 4096  # a long package URL stays on its line
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


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
