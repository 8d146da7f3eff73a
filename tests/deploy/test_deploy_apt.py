"""OS packages on real boxes: a box without internet that lacks a package fails at once with
one line saying what to do; a box that has its packages never runs apt.

The box shares this machine's /etc/apt and dpkg database, so apt inside it sees this machine's
archives; with no route out it reaches none of them: exactly "a box without internet".
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.harness.netns_box import PACKAGES_HERE, Box

pytestmark = pytest.mark.root

MADE_UP = "carla-launch-no-such-package"  # no archive anywhere has it
APT_NOISE = ("E:", "W:", "Err:", "Hit:", "Ign:", "Get:", "Reading package lists", "apt-get:")


def test_a_box_without_internet_fails_at_once_with_one_line(box: Box) -> None:
    if shutil.which("apt-get") is None:
        pytest.skip("needs apt-get (a Debian-like machine): the box runs this machine's apt")
    box.cut_route()
    box.install_standin()  # served on the veth: reachable, but apt must fail before it
    box.write_profile(server={"os_packages": ["tmux", MADE_UP]})
    # bounded by apt's short network time-outs, not by a test clock: 90 s means "it hung"
    done = box.deploy(check=False, timeout=90)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    line = errors[0]
    for words in (
        f"could not install the OS packages {MADE_UP}",
        "cannot reach its package archives",
        "server.os_packages: []",
        "proxy or a package mirror",
    ):
        assert words in line, line
    shown = [line.split(": ", 1)[-1] for line in done.stderr.splitlines()]
    assert not [s for s in shown if s.startswith(APT_NOISE)], done.stderr
    assert "downloading" not in done.stderr  # nothing after the failed step


def test_a_box_that_has_its_packages_never_runs_apt(box: Box) -> None:
    box.write_profile(server={"os_packages": list(PACKAGES_HERE)})
    box.preinstall()
    done = box.deploy("--json")
    host = json.loads(done.stdout)["hosts"][0]
    step = next(s for s in host["steps"] if s["name"] == "Install OS packages")
    assert step == {"name": "Install OS packages", "changes": False, "why": "all present"}
    assert "Install OS packages" not in host["changed"]
    assert "installing OS packages" not in done.stderr
