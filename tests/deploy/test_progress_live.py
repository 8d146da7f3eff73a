"""Progress from a real box, through the real deploy child: over pyinfra's SSH a line reaches
this machine while the step that prints it still runs, and the readiness wait reads as in `up`
with its "ready" said once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from carla_launcher.deploy.runner import Relay, run_child
from tests.deploy.test_progress_relay import ANSI, on_pty
from tests.harness.netns_box import Box

pytestmark = pytest.mark.root

# The deploy child's own output wiring (make_state, setup_output: pyinfra's echo hook) running
# one step on the box's profile hosts: argv is the profile and the step's script.
CHILD = """
import sys
from pathlib import Path
from carla_launcher.deploy import deploy as child  # gevent patches the interpreter here
from pyinfra.api.connect import connect_all
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateStage
from carla_launcher.profile import read_profile

child.setup_output()
state = child.make_state(read_profile(Path(sys.argv[1])), False)
state.set_stage(StateStage.Connect)
connect_all(state)
for host in state.inventory:
    add_op(state, child.step, host=host, name="watch", script=sys.argv[2])
state.set_stage(StateStage.Execute)
run_ops(state)
"""


def test_a_progress_line_arrives_while_its_step_still_runs(box: Box, tmp_path: Path) -> None:
    seen = tmp_path / "seen"  # the box shares this machine's file system
    mb = 2**20
    step = f"""
echo "carla-launch-progress download {mb} {2 * mb}"
i=0; while [ ! -e {seen} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
[ -e {seen} ] && echo "carla-launch-progress download {2 * mb} {2 * mb}"
"""
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if "download 50%" in line:
            seen.touch()  # the step ends as soon as we have seen its first line

    run = run_child([sys.executable, "-c", CHILD, str(box.profile_path), step], "", Relay(say))
    assert run.returncode == 0, run.tail
    assert [ln.split(",")[0] for ln in lines] == [
        f"{box.alias}: download 50% 1.0 MB of 2.0 MB",
        f"{box.alias}: download 100% 2.0 MB of 2.0 MB",  # printed only once we had seen 50%
    ], lines


def test_the_wait_reads_as_in_up_and_ready_is_said_once(box: Box) -> None:
    box.install_standin()
    box.write_profile(server={"args": ["-RenderOffScreen", "-standin-startup=2"]})
    done = box.deploy()
    where = f"{box.address}:2000"
    assert f"{box.alias}: CARLA at {where}: waiting 0 s (connection refused)" in done.stderr
    assert "carla-launch-progress" not in done.stderr  # no protocol line leaks into a log
    out = done.stdout + done.stderr
    assert out.count("ready at") == 1, out  # the summary's line, not the child's as well

    # on a terminal: the same wait as a live row, then the summary once
    stopped = box.cli("server", "stop", str(box.profile_path))
    assert stopped.returncode == 0, stopped.stderr
    raw = on_pty([sys.executable, "-m", "carla_launcher", "deploy", str(box.profile_path)], box.dir)
    shown = ANSI.sub("", raw)
    assert f"CARLA at {where}: waiting 0 s (connection refused)" in shown, shown
    assert "carla-launch-progress" not in shown
    assert shown.count("ready at") == 1, shown
