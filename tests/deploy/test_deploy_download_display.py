"""What a user sees of a long download, end to end: the real `carla-launch deploy` fetching a
few hundred MB from a throttled HTTP server on this machine into a network-namespace box.
On a terminal the percentage rises in place; through a pipe (a log, CI) the same words come as
plain lines, without escape codes and without a flood."""

from __future__ import annotations

import re
import sys

import pytest

from tests.deploy.test_progress_relay import ANSI, on_pty
from tests.harness.netns_box import Box
from tests.harness.standin_carla import build_package, sha256

pytestmark = [pytest.mark.root, pytest.mark.slow]

PERCENT = re.compile(r"download (\d+)% ")


def test_a_long_download_rises_on_a_terminal_and_is_plain_lines_in_a_log(box: Box) -> None:
    pkg = build_package(box.dir / "big", padding=200 << 20)  # random bytes: ~200 MB on the wire
    srv = box.serve_files({pkg.name: pkg}, rate=40 << 20)  # about 5 s
    box.write_profile(server={"package": {"url": srv.url(pkg.name), "sha256": sha256(pkg)}})

    raw = on_pty([sys.executable, "-m", "carla_launcher", "deploy", str(box.profile_path)], box.dir)
    shown = ANSI.sub("", raw)
    seen = [int(p) for p in PERCENT.findall(shown)]
    assert len(set(seen)) >= 3, shown  # several looks while it ran, not one at the end
    assert seen == sorted(seen) and seen[-1] == 100, seen
    assert "\x1b[" in raw  # redrawn in place on a terminal
    assert " left" in shown and "MB/s" in shown  # time left and rate while it runs
    assert "carla-launch-progress" not in shown and "ready at" in shown

    # the same download again, through a pipe: plain lines, the first at once and the last
    gone = box.cli("server", "uninstall", str(box.profile_path), "--yes")
    assert gone.returncode == 0, gone.stderr
    done = box.deploy()
    log = done.stderr
    assert "\x1b[" not in log and "carla-launch-progress" not in log
    lines = [ln for ln in log.splitlines() if PERCENT.search(ln)]
    assert lines and all(ln.startswith(f"{box.alias}: download ") for ln in lines), log
    got = [int(PERCENT.search(ln).group(1)) for ln in lines]  # type: ignore[union-attr]
    assert got[-1] == 100 and got == sorted(got), log
    assert len(lines) <= 3, log  # paced: at most one per 10 s, never one per second
    assert "MB/s" in lines[-1], log  # the rate it came at, in words
