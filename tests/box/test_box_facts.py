"""What a box looks like (`box/facts.py`): the section protocol, the parsers of what standard
tools print (recorded outputs), and the fact scripts run for real in a POSIX sh on this machine."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import pytest

from carla_launcher.box import sections
from carla_launcher.box.facts import ADDRESS, DEPLOY, DOCTOR, GPU, facts_script, parse_facts
from carla_launcher.box.marker import marker_sha256, parse_marker
from carla_launcher.box.parsers import (
    Listener,
    parse_df_free_kib,
    parse_ip_addr,
    parse_listeners,
    parse_packages,
)
from tests.harness.recordings import GPU_12, MIG_FIELDS


# -- sections and parsers ------------------------------------------------------------------------
def test_sections_ignore_a_login_banner_and_keep_exit_codes() -> None:
    out = (
        "Welcome to Ubuntu\n\n##carla-launch## gpus\nfields=index\n0\n\n##carla-launch## rc 0\n"
        "##carla-launch## tmux\n\n##carla-launch## rc 1\n##carla-launch## cut"
    )
    s = sections.parse(out)
    assert s["gpus"] == sections.Section("fields=index\n0", 0)
    assert s["tmux"].rc == 1 and s["cut"].rc is None


def test_df() -> None:
    df = (
        "Filesystem     1024-blocks     Used Available Capacity Mounted on\n"
        "/dev/nvme0n1p2   960302804 871234560  40241572      96% /\n"
    )
    assert parse_df_free_kib(df) == 40241572
    assert parse_df_free_kib("df: /x: No such file or directory") is None


def test_listeners_from_ss_and_proc() -> None:
    ss = (
        "LISTEN 0      4096         0.0.0.0:2000      0.0.0.0:*    "
        'users:(("CarlaUE4-Linux-",pid=4242,fd=61))\n'
        "LISTEN 0      128             [::]:2001         [::]:*\n"
        "LISTEN 0      128        127.0.0.1:631       0.0.0.0:*\n"
    )
    assert parse_listeners(ss) == (
        Listener(2000, "CarlaUE4-Linux-"),
        Listener(2001),
        Listener(631),
    )
    proc = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 00000000:07D0 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        "
        "0 1 1\n"
        "   1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        "
        "0 2 1\n"
    )
    assert parse_listeners(proc) == (Listener(2000),)


def test_packages_from_dpkg() -> None:
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


def test_marker_key_is_sha256() -> None:
    m = parse_marker("sha256=" + "AB" * 32 + "\nurl=u\narchive=a.tar.xz\n")
    assert marker_sha256(m) == "ab" * 32 and m["archive"] == "a.tar.xz"
    assert marker_sha256({"sha256": "not hex"}) is None and marker_sha256(None) is None


def test_sections_round_trip_through_a_real_shell() -> None:
    script = sections.script([("a", "echo one; echo two"), ("b", "false"), ("c", "printf 'x y'")])
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert sections.parse(out) == {
        "a": sections.Section("one\ntwo", 0),
        "b": sections.Section("", 1),
        "c": sections.Section("x y", 0),
    }
    with pytest.raises(ValueError):
        sections.script([("rc", "true")])


@pytest.mark.parametrize("shell", sorted({"sh", *(["dash"] if shutil.which("dash") else [])}))
def test_the_deploy_fact_script_runs_here_and_parses(shell: str) -> None:
    """The whole deploy fact script, in a POSIX sh on this machine, as the current user."""
    script = facts_script(
        (*DEPLOY, "compose"),
        server_user="nobody-here",
        root="~/CARLA dir; x",
        packages=("sh", "no-such-pkg"),
        archive="CARLA.tar.xz",
    )
    done = subprocess.run(
        [shell, "-s"], input=script, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    facts = parse_facts(done.stdout, packages=("sh", "no-such-pkg"))
    assert facts.uid is not None and facts.uid >= 0 and facts.login_user
    assert facts.package_root.endswith("/CARLA dir; x")  # the odd path, verbatim
    assert facts.session_dir.endswith("/.carla-launch/carla")
    if facts.packages is not None:
        assert facts.packages["no-such-pkg"] is False
    assert facts.launch_sha is None and facts.marker is None and not facts.root_exists
    assert facts.gpu.status in ("missing", "ok", "no-devices", "no-driver", "mismatch", "error")
    assert set(facts.to_json()) >= {"ssh_connection", "listeners", "gpu", "marker"}


def test_gpu_and_address_scripts_need_no_install_root() -> None:
    for names in (GPU, ADDRESS):
        script = facts_script(names)
        subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    with pytest.raises(ValueError, match="install root"):
        facts_script(DOCTOR)
    with pytest.raises(ValueError, match="no such box fact"):
        facts_script(("nope",))


def test_doctor_script_is_posix_and_quotes_profile_values(tmp_path) -> None:
    evil = tmp_path / "pkg dir; touch PWNED 'x'"
    script = facts_script(DOCTOR, root=str(evil), server_user="carla", session="carla")
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    # fed on stdin, as OpenSSH's `sh -s` gets it: every command reads /dev/null, the script
    # runs to the end
    out = subprocess.run(
        ["sh", "-s"],
        input=script,
        text=True,
        capture_output=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    ).stdout
    assert not (tmp_path / "PWNED").exists()
    facts = parse_facts(out, where="here", server_user="carla")
    assert facts.package_root == str(evil)
    assert facts.free_kib and facts.free_kib > 0
    assert facts.gpu.status == "missing"  # no nvidia-smi on that PATH
    assert "tmux" in sections.parse(out)  # the last section ran


def test_parse_facts_reads_every_section() -> None:
    out = "\n".join(
        [
            "##carla-launch## id",
            "1000",
            "alice",
            "##carla-launch## rc 0",
            "##carla-launch## user",
            "alice",
            "/home/alice",
            "yes",
            "##carla-launch## rc 0",
            "##carla-launch## paths",
            "/home/alice/CARLA_Leaderboard_20",
            "/home/alice/.carla-launch/carla",
            "##carla-launch## rc 0",
            "##carla-launch## gpus",
            "fields=" + ",".join(MIG_FIELDS),
            GPU_12,
            "##carla-launch## rc 0",
            "##carla-launch## apps",
            "GPU-2b6e, 4242, /home/alice/C/CarlaUE4-Linux-Shipping, 6000",
            "##carla-launch## rc 0",
            "##carla-launch## ps",
            "4242 0 alice /home/alice/C/CarlaUE4-Linux-Shipping -RenderOffScreen",
            "##carla-launch## rc 0",
            "##carla-launch## vulkan",
            "/usr/share/vulkan/icd.d/nvidia_icd.json",
            "vulkaninfo=yes",
            "\tdeviceName         = NVIDIA GeForce RTX 3060",
            "##carla-launch## rc 0",
            "##carla-launch## disk",
            "Filesystem 1024-blocks Used Available Capacity Mounted on",
            "/dev/sda1 100 50 50000000 50% /",
            "##carla-launch## rc 0",
            "##carla-launch## marker",
            "sha256=" + "a" * 64,
            "url=https://x/y.tar.xz",
            "##carla-launch## rc 0",
            "##carla-launch## root",
            "exists",
            "carla",
            "##carla-launch## rc 0",
            "##carla-launch## ports",
            "LISTEN 0 4096 0.0.0.0:2000 0.0.0.0:*",
            "##carla-launch## rc 0",
            "##carla-launch## tmux",
            "carla",
            "##carla-launch## rc 0",
        ]
    )
    f = parse_facts(out, where="box", server_user="carla")
    assert (f.uid, f.login_user, f.server_user, f.server_user_exists) == (
        1000,
        "alice",
        "alice",
        True,
    )
    assert (
        f.gpu.status == "ok"
        and f.gpu.processes[0].role == "carla"
        and f.gpu.processes[0].user == "alice"
    )
    assert f.icd_files == ("/usr/share/vulkan/icd.d/nvidia_icd.json",) and f.vulkaninfo is True
    assert f.free_kib == 50000000 and f.package_root == "/home/alice/CARLA_Leaderboard_20"
    assert f.marker == {"sha256": "a" * 64, "url": "https://x/y.tar.xz"} and f.launcher
    assert [lst.port for lst in f.listeners] == [2000] and f.tmux_sessions == ("carla",)
    assert replace(f.gpu, processes=()).gpus == f.gpu.gpus


@pytest.mark.parametrize(
    ("record", "origin"),
    [
        (["from=http://10.0.0.1/a/CARLA.tar.gz"], "http://10.0.0.1/a/CARLA.tar.gz"),
        (["from="], None),  # nothing said: trusted, as the box's verified_here does
        ([], None),  # a record older than `from=`
    ],
)
def test_the_cached_archive_says_its_sum_and_where_it_came_from(
    record: list[str], origin: str | None
) -> None:
    out = "\n".join(["##carla-launch## download", "c" * 64, *record, "##carla-launch## rc 0"])
    f = parse_facts(out)
    assert (f.download_verified, f.download_origin) == ("c" * 64, origin)
