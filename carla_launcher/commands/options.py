"""Options several commands share, declared once so that their names and help read the same."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

gpu_pane_option = click.option(
    "--gpu", is_flag=True, help="A third pane with `carla-launch gpu P --watch`."
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
    )(f)
    return f
