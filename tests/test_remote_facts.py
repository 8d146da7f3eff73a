"""Parsing what a box prints about itself (recorded outputs), and the fact script on this machine."""

from __future__ import annotations

import subprocess

from carla_launcher.remote.facts import (
    box_facts_script,
    parse_box_facts,
    parse_df,
    parse_ip_addr,
    parse_listening,
    parse_nvidia_smi,
    parse_packages,
)
from carla_launcher.remote.shell import parse_sections, sections

NVIDIA_SMI = """\
0, NVIDIA GeForce RTX 4090, 24564, 1234, 550.54.14
1, NVIDIA A100-SXM4-40GB, 40960, 0, 550.54.14
"""

PROC_NET_TCP = """\
00000000:07D0
00000000:07D1
0100007F:0277
00000000000000000000000000000000:0016
"""


def test_nvidia_smi_csv() -> None:
    gpus = parse_nvidia_smi(NVIDIA_SMI.splitlines())
    assert [(g.index, g.name, g.memory_total_mib, g.memory_used_mib, g.driver) for g in gpus] == [
        (0, "NVIDIA GeForce RTX 4090", 24564, 1234, "550.54.14"),
        (1, "NVIDIA A100-SXM4-40GB", 40960, 0, "550.54.14"),
    ]
    assert parse_nvidia_smi(["NVIDIA-SMI has failed because it couldn't communicate"]) == []


def test_listening_ports_from_proc_net_tcp() -> None:
    assert parse_listening(PROC_NET_TCP.splitlines()) == {2000, 2001, 631, 22}


def test_df_and_packages() -> None:
    df = [
        "Filesystem 1024-blocks Used Available Capacity Mounted on",
        "/dev/nvme0n1p2 960000000 500000000 410000000 55% /home",
    ]
    assert parse_df(df) == (410000000, "/home")
    pkgs = parse_packages(
        ["tmux ii ", "curl ii ", "libomp5 un ", "?dpkg"], ("tmux", "curl", "libomp5", "unzip")
    )
    assert pkgs == {"tmux": True, "curl": True, "libomp5": False, "unzip": False}
    assert parse_packages([], ("tmux",)) is None  # no dpkg: not checked


def test_ip_addr_names_families_scopes() -> None:
    lines = [
        "2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\\       valid_lft",
        "7: veth9@if6    inet6 fe80::1/64 scope link \\       valid_lft forever",
    ]
    ifaces = parse_ip_addr(lines)
    assert [(i.name, i.address, i.family, i.scope) for i in ifaces] == [
        ("eth0", "10.0.0.5", 4, "global"),
        ("veth9", "fe80::1", 6, "link"),
    ]


def test_sections_round_trip_through_a_real_shell() -> None:
    script = sections([("a", "echo one; echo two"), ("b", "false"), ("c", "printf 'x y\\n'")])
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert parse_sections(out.splitlines()) == {"a": ["one", "two"], "b": [], "c": ["x y"]}


def test_the_fact_script_runs_here_and_parses() -> None:
    """The whole fact script, in a POSIX sh on this machine, as the current user."""
    script = box_facts_script(
        "nobody-here", "carla", "~/CARLA dir; x", ("sh", "no-such-pkg"), "CARLA.tar.xz"
    )
    done = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    facts = parse_box_facts(done.stdout.splitlines(), ("sh", "no-such-pkg"))
    assert facts.uid >= 0 and facts.login_user
    assert facts.root.endswith("/CARLA dir; x")  # the odd path, verbatim
    assert facts.session_dir.endswith("/.carla-launch/carla")
    if facts.packages is not None:
        assert facts.packages["no-such-pkg"] is False
    assert facts.disk_free_kb and facts.disk_free_kb > 0
    assert facts.launch_sha is None and facts.marker == {} and not facts.root_exists
