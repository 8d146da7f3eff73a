"""The loop over a box's servers that runs their parts at the same time
(`slots.each_server`), run by a real sh: the answer reads as `slots.each_server`'s,
in the box's order, each part with its own output and exit code."""

from __future__ import annotations

import subprocess
from pathlib import Path

from carla_launcher.server.slots import each_server, parse_servers


def _box(tmp_path: Path) -> str:
    top = tmp_path / "state dir"
    for name in ("sim", "sim-1", "sim-2", "sim-10"):
        (top / name).mkdir(parents=True)
        if name != "sim-2":  # a server a deploy stopped for good: its launch files are gone
            (top / name / "launch.sh").write_text("")
    return (
        f'set -u\nCL_SESSION=sim\nSDIR="{top}/sim"\n'
        'die() { echo "carla-launch: error: $*" >&2; exit 1; }\n'
    )


def _sh(script: str) -> list[tuple[str, str, int | None]]:
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return parse_servers(out.stdout)


def test_every_servers_part_runs_at_once_and_answers_in_the_boxs_order(tmp_path: Path) -> None:
    # each part leaves a mark, then waits (a bounded while) for the other servers' marks:
    # run one after another, the first would give up and say so
    body = (
        'touch "$SDIR/here"; _i=0\n'
        'while [ "$(ls "${SDIR%/*}"/*/here | wc -l)" -lt 3 ] && [ $_i -lt 100 ]; do\n'
        "  sleep 0.1; _i=$((_i + 1)); done\n"
        '[ $_i -lt 100 ] || die "alone"\n'
        'echo "$CL_SESSION in ${SDIR##*/}"\n[ "$CL_SESSION" != sim-1 ] || die "it broke"'
    )
    assert _sh(_box(tmp_path) + each_server(body)) == [
        ("sim", "sim in sim", 0),
        ("sim-1", "sim-1 in sim-1\ncarla-launch: error: it broke", 1),
        ("sim-10", "sim-10 in sim-10", 0),
    ]


def test_only_one_server_runs_and_the_others_are_named(tmp_path: Path) -> None:
    body = 'echo "$CL_SESSION"'
    assert _sh(_box(tmp_path) + each_server(body, "sim-10")) == [
        ("sim", "", None),
        ("sim-1", "", None),
        ("sim-10", "sim-10", 0),
    ]
