"""`carla-launch gpu [P] [--watch] [--json]`."""

from __future__ import annotations

import json
import sys

import click

NEED_HELP = "VRAM (GB) server and agent together need on one GPU for local mode (default 10)."


@click.command()
@click.argument("profile", required=False, metavar="[P]")
@click.option(
    "--watch", "-w", is_flag=True, help="Refresh in place once a second (Ctrl-C to quit)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
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
    from carla_launcher import gpu as G
    from carla_launcher import resources as R

    if watch and as_json:
        raise click.UsageError("--watch and --json do not go together")
    need_mib = int(need_gb * 1024) if need_gb else R.DEFAULT_NEED_MIB
    prof = None
    if profile is not None:
        from carla_launcher.profile import load_profile

        prof = load_profile(profile)
    box = prof is not None
    if watch:
        _watch(G, prof, need_mib)
        return
    reports = G.reports(prof)
    if as_json:
        click.echo(
            json.dumps(
                {"machines": [G.to_json(r, box=box, need_mib=need_mib) for r in reports]}, indent=2
            )
        )
    else:
        click.echo("\n\n".join(G.render(r, box=box, need_mib=need_mib) for r in reports))
    if any(r.status != "ok" for r in reports):
        sys.exit(1)


def _watch(G, prof, need_mib: int) -> None:  # type: ignore[no-untyped-def]
    box = prof is not None
    if prof is None:
        G.watch(
            lambda: G.render(G.local_report(), box=False, need_mib=need_mib), "carla-launch gpu"
        )
        return
    streams = [G.BoxStream(prof, h) for h in (prof.remote.hosts or (None,))]
    try:
        G.watch(
            lambda: "\n\n".join(G.render(s.latest, box=box, need_mib=need_mib) for s in streams),
            f"carla-launch gpu {prof.name}",
        )
    finally:
        for s in streams:
            s.close()
