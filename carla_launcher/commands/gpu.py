"""`carla-launch gpu [P] [--watch] [--json]`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from carla_launcher.commands.options import profile_argument

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

NEED_HELP = "VRAM (GB) server and agent together need on one GPU for local mode (default 10)."


@click.command()
@profile_argument(
    "The box(es) of profile P (a name, profiles/P.yaml, or a path); left out: this machine."
)
@click.option(
    "--watch", "-w", is_flag=True, help="Refresh in place once a second (Ctrl-C to quit)."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the facts as JSON (schemas/gpu.schema.json)."
)
@click.option(
    "--need-gb",
    type=click.FloatRange(min=0.5),
    envvar="CARLA_LAUNCH_NEED_GB",
    show_envvar=True,
    help=NEED_HELP,
)
def gpu(profile: str | None, watch: bool, as_json: bool, need_gb: float | None) -> None:
    """GPUs, VRAM and who uses it: this machine, or the box(es) of profile P over ssh.

    Shows each GPU's used/total/free memory and utilisation, and the processes holding GPU
    memory, CARLA's and the agent's marked. Ends with what it means: enough for server and
    agent here (more than 10 GB on one GPU), or room for the server on the box.

    \b
    Exit codes: 0 GPUs read, 1 no usable GPU (or the box did not answer), 2 bad input.
    """
    from carla_launcher.gpu.remote import reports
    from carla_launcher.gpu.render import render, to_json
    from carla_launcher.gpu.vram import DEFAULT_NEED_MIB

    if watch and as_json:
        raise click.UsageError("--watch and --json do not go together")
    need_mib = int(need_gb * 1024) if need_gb else DEFAULT_NEED_MIB
    prof = None
    if profile is not None:
        from carla_launcher.profile import load_profile

        prof = load_profile(profile)
    box = prof is not None
    if watch:
        _watch(prof, need_mib)
        return
    found = reports(prof)
    if as_json:
        from carla_launcher.jsonout import document, dumps

        hosts: list[str | None] = list(prof.remote.hosts) if prof is not None else []
        entries = [
            to_json(r, box=box, need_mib=need_mib, host=h)
            for r, h in zip(found, hosts or [None] * len(found), strict=True)
        ]
        click.echo(dumps(document(hosts=entries)))
    else:
        click.echo("\n\n".join(render(r, box=box, need_mib=need_mib) for r in found))
    if any(r.status != "ok" for r in found):
        sys.exit(1)


def _watch(prof: Profile | None, need_mib: int) -> None:
    """This machine redrawn from a fresh report each second; boxes from their streams."""
    from carla_launcher.gpu.local import local_report
    from carla_launcher.gpu.render import render
    from carla_launcher.gpu.watch import BoxStream, watch

    if prof is None:
        watch(lambda: render(local_report(), box=False, need_mib=need_mib), "carla-launch gpu")
        return
    streams = [BoxStream(prof, h) for h in (prof.remote.hosts or (None,))]
    try:
        watch(
            lambda: "\n\n".join(render(s.latest, box=True, need_mib=need_mib) for s in streams),
            f"carla-launch gpu {prof.name}",
        )
    finally:
        for s in streams:
            s.close()
