"""The parent side of a deploy: what the user sees of the child's output, and what is remembered."""

from __future__ import annotations

from pathlib import Path

from carla_launcher.deploy.runner import DeployReport, HostResult, record, relay_line
from carla_launcher.profile import read_profile
from carla_launcher.records import ServerRecord, profile_address, server


def test_child_lines_as_the_user_sees_them() -> None:
    assert (
        relay_line("[gpu-1] downloading CARLA.tar.xz (20.1 GB)\n")
        == "gpu-1: downloading CARLA.tar.xz (20.1 GB)"
    )
    assert relay_line("\x1b[1m[gpu-1]\x1b[0m unpacking") == "gpu-1: unpacking"
    assert relay_line("[@local] starting CARLA") == "localhost: starting CARLA"
    assert (
        relay_line("[gpu-1] carla-launch: error: checksum mismatch") is None
    )  # once, in the summary
    assert relay_line("   \n") is None


def test_a_deploy_remembers_addresses_and_ports(tmp_path: Path) -> None:
    p = tmp_path / "profiles" / "pool.yaml"
    p.parent.mkdir()
    p.write_text("remote:\n  host: [gpu-1, gpu-2]\n")
    prof = read_profile(p)
    record(
        prof,
        DeployReport(
            "pool",
            False,
            [
                HostResult("gpu-1", False, error="unreachable"),
                HostResult("gpu-2", True, address="10.0.0.2", port=2003, version="0.9.15"),
            ],
        ),
    )
    assert profile_address(prof) == "10.0.0.2"  # what `carla-launch sync` uses
    assert server(prof, "gpu-2").port == 2003
    assert server(prof, "gpu-1") == ServerRecord("gpu-1")
