"""`carla-launch doctor [P] [--json]`."""

from __future__ import annotations

import sys

import click

from carla_launcher.commands.options import profile_argument


@click.command()
@profile_argument(
    "Also check the box of profile P (a name, profiles/P.yaml, or a path); left out: only "
    "this machine."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the verdict and the checks as JSON (schemas/doctor.schema.json).",
)
@click.option(
    "--mode",
    type=click.Choice(["local", "distributed"]),
    help="Judge the exit code for this mode instead of the verdict's.",
)
@click.option(
    "--need-gb",
    type=click.FloatRange(min=0.5),
    envvar="CARLA_LAUNCH_NEED_GB",
    show_envvar=True,
    help="VRAM (GB) server and agent together need on one GPU for local mode (default 10).",
)
def doctor(profile: str | None, as_json: bool, mode: str | None, need_gb: float | None) -> None:
    """Check this machine (and the box of profile P): run locally or distributed?

    Each check is ok, warning or failing, with a one-line fix: local VRAM against the 10 GB
    rule, docker and its compose plugin, the NVIDIA container toolkit, tmux, ssh; with P also
    the box: reachable, host key, user, GPU driver, Vulkan, free VRAM, disk, ports, package.
    The verdict says `local` (everything here) or `distributed` (the server on the box), and why.

    \b
    Exit codes: 0 nothing blocks the chosen mode, 1 a failing check does, 2 bad input.
    """
    from carla_launcher.doctor.gather import run_doctor
    from carla_launcher.doctor.model import Mode
    from carla_launcher.doctor.render import render, to_json
    from carla_launcher.gpu.vram import DEFAULT_NEED_MIB

    prof = None
    if profile is not None:
        from carla_launcher.profile import load_profile

        prof = load_profile(profile)
    need_mib = int(need_gb * 1024) if need_gb else DEFAULT_NEED_MIB
    forced: Mode | None = "local" if mode == "local" else "distributed" if mode else None
    report = run_doctor(prof, need_mib, forced)
    if as_json:
        from carla_launcher.jsonout import dumps

        click.echo(dumps(to_json(report)))
    else:
        click.echo(render(report, prof))
    sys.exit(report.exit_code)
