"""The parent side of a deploy: what the user sees of the child's output, and what is remembered."""

from __future__ import annotations

from pathlib import Path

from carla_launcher.deploy.runner import DeployReport, HostResult, Relay, record, relay_line
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


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def relay_through(lines: list[tuple[float, str]]) -> list[str]:
    """What a log gets of the child's stderr lines, each (time it arrives, line)."""
    out: list[str] = []
    clock = Clock()
    relay = Relay(out.append, clock=clock)
    for t, line in lines:
        clock.now = t
        relay.feed(line + "\n")
    relay.close()
    return out


def test_several_hosts_each_get_their_own_paced_lines_and_their_last_one() -> None:
    mb = 2**20
    lines = []
    for t in range(31):  # two boxes, a line a second each, b at half a's speed
        lines.append((float(t), f"[gpu-a] carla-launch-progress download {t * mb} {30 * mb}"))
        lines.append((t + 0.5, f"[gpu-b] carla-launch-progress download {t * mb // 2} {30 * mb}"))
    out = relay_through(lines)
    a = [ln for ln in out if ln.startswith("gpu-a: ")]
    b = [ln for ln in out if ln.startswith("gpu-b: ")]
    assert len(a) + len(b) == len(out)  # every line names its host
    assert [ln.split()[2] for ln in a] == ["0%", "33%", "66%", "100%"]
    assert [ln.split()[2] for ln in b] == ["0%", "16%", "33%", "50%"]  # its last state, at the end
    assert a[-1] == "gpu-a: download 100% 30.0 MB of 30.0 MB, 1.0 MB/s"
    assert b[-1] == "gpu-b: download 50% 15.0 MB of 30.0 MB, 512 KB/s, 30 s left"


def test_a_phase_ends_with_its_last_state_before_what_comes_next() -> None:
    out = relay_through(
        [
            (0.0, "[gpu] downloading CARLA.tar.xz (100 B)"),
            (0.0, "[gpu] carla-launch-progress download 0 100"),
            (1.0, "[gpu] carla-launch-progress download 60 100"),
            (2.0, "[gpu] carla-launch-progress download 100 100"),
            (2.0, "[gpu] checking the sha256 of CARLA.tar.xz"),
            (3.0, "[gpu] carla-launch-progress checksum 50 100"),
            (3.5, "[gpu] carla-launch-progress checksum 70 100"),
            (4.0, "[gpu] carla-launch-progress unpack 10 100"),
            (4.5, "[gpu] carla-launch-progress unpack 20 100"),
            (5.0, "[gpu] warning: disk almost full"),
            (5.5, "[gpu] carla-launch-progress unpack 30 100"),
        ]
    )
    assert out == [
        "gpu: downloading CARLA.tar.xz (100 B)",
        "gpu: download 0% 0 B of 100 B",
        "gpu: download 100% 100 B of 100 B, 50 B/s",  # finished: printed at once
        "gpu: checking the sha256 of CARLA.tar.xz",
        "gpu: checksum 50% 50 B of 100 B",
        "gpu: checksum 70% 70 B of 100 B, 40 B/s, 1 s left",  # its last state, as unpack starts
        "gpu: unpack 10% 10 B of 100 B",
        "gpu: unpack 20% 20 B of 100 B, 20 B/s, 4 s left",  # before what the box said then
        "gpu: warning: disk almost full",
        "gpu: unpack 30% 30 B of 100 B, 13 B/s, 5 s left",  # the last one, when the child ends
    ]


WHERE = "10.0.0.5:2000"


def test_the_readiness_wait_reads_as_in_up_and_is_not_repeated_at_the_end() -> None:
    out = relay_through(
        [
            (t / 4, f"gpu: carla-launch-progress ready {t // 4} 30 {WHERE} connection refused")
            for t in range(25)
        ]
    )
    assert out == [
        "gpu: CARLA at 10.0.0.5:2000: waiting 0 s (connection refused)",
        "gpu: CARLA at 10.0.0.5:2000: waiting 5 s (connection refused)",
    ]


def test_protocol_lines_that_do_not_parse_are_shown_as_they_are() -> None:
    out = relay_through([(0.0, "[gpu] carla-launch-progress download lots")])
    assert out == ["gpu: carla-launch-progress download lots"]  # visible, never hidden
