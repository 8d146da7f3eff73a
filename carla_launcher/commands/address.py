"""`carla-launch address [P]`: the address agents should use, alone on stdout (for scripts)."""

from __future__ import annotations

import click

from carla_launcher import records
from carla_launcher.box.address import discover_address
from carla_launcher.commands.options import (
    accept_new_host_key_option,
    chosen_hosts,
    host_option,
    profile_argument,
)
from carla_launcher.profile import load_profile


@click.command()
@profile_argument()
@host_option
@accept_new_host_key_option
def address(profile: str | None, host: str | None, accept_new_host_key: bool) -> None:
    """Print the address agents should use to reach the box of profile P.

    The profile's remote.address if set; else the address the SSH connection reached on the
    box (server side of SSH_CONNECTION); else the box's own addresses without loopback,
    link-local and container bridges (docker0, br-*, veth*, ...). Each must be reachable from
    here. One line per host, each recorded (the first host's is what `carla-launch sync` uses).
    """
    prof = load_profile(profile)
    hosts = chosen_hosts(prof, host)
    found = [discover_address(prof, h, accept_new_host_key) for h in hosts]
    for h, a in zip(hosts, found, strict=True):
        records.learn(prof, h, address=a)
    for a in found:
        click.echo(a)
