"""`carla-launch deploy` turning a child's progress lines into what people watch: live rows on
a pseudo-terminal, plain paced lines through a pipe.

The real command runs in its own process; only its pyinfra child is replaced, by a small
script that prints protocol lines as a box's download, checksum and readiness wait would
(the real end-to-end download is tests/deploy/test_deploy_download.py)."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from carla_launcher.term import open_board

MB = 2**20
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# The command, with its deploy child replaced by the fake (argv: fake child, then the CLI's).
DRIVER = """
import functools, sys
from carla_launcher.commands import deploy as cmd
cmd.run_deploy = functools.partial(cmd.run_deploy, python=sys.argv[1])
cmd.deploy.main(sys.argv[2:], prog_name="carla-launch deploy")
"""

FAKE_CHILD = """#!{python}
import json, sys
sys.stdin.read()
for line in json.loads({lines!r}):
    sys.stderr.write(line + "\\n")
    sys.stderr.flush()
print(json.dumps({result!r}))
"""


def child_lines() -> list[str]:
    """Two boxes downloading side by side (b at half a's speed), a checksum, a readiness wait."""
    lines = ["[gpu-a] downloading CARLA.tar.xz (100 MB)", "[gpu-b] downloading CARLA.tar.xz"]
    for i in range(11):
        lines.append(f"[gpu-a] carla-launch-progress download {i * 10 * MB} {100 * MB}")
        lines.append(f"[gpu-b] carla-launch-progress download {i * 5 * MB} {50 * MB}")
    lines.append("[gpu-a] checking the sha256 of CARLA.tar.xz")
    lines.append(f"[gpu-a] carla-launch-progress checksum {100 * MB} {100 * MB}")
    for host, addr in (("gpu-a", "10.0.0.5"), ("gpu-b", "10.0.0.6")):
        lines.append(f"{host}: probing CARLA at {addr}:2000 (up to 30 s)")
        lines += [
            f"{host}: carla-launch-progress ready {t} 30 {addr}:2000 connection refused"
            for t in range(3)
        ]
    return lines


def fake_child(tmp_path: Path) -> Path:
    hosts = {
        h: {"host": h, "ok": True, "address": addr, "port": 2000, "version": "0.9.15"}
        for h, addr in (("gpu-a", "10.0.0.5"), ("gpu-b", "10.0.0.6"))
    }
    script = tmp_path / "fake-deploy-child"
    script.write_text(
        FAKE_CHILD.format(
            python=sys.executable, lines=json.dumps(child_lines()), result={"hosts": hosts}
        )
    )
    script.chmod(0o755)
    profile = tmp_path / "profiles" / "pool.yaml"
    profile.parent.mkdir()
    profile.write_text("remote:\n  host: [gpu-a, gpu-b]\n")
    return script


def argv(tmp_path: Path) -> list[str]:
    fake = fake_child(tmp_path)
    return [sys.executable, "-c", DRIVER, str(fake), str(tmp_path / "profiles" / "pool.yaml")]


def on_pty(cmd: list[str], cwd: Path, rows: int = 30, cols: int = 160) -> str:
    """Everything a program writes to a terminal (stdout and stderr), as a user's would get it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS")}
    env["TERM"] = "xterm"
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    chunks: list[bytes] = []

    def seen() -> str:
        return b"".join(chunks).decode("utf-8", "replace")

    try:
        while select.select([master], [], [], 60)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the program closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        else:
            raise AssertionError("no output for 60 s:\n" + seen())
        assert proc.wait(timeout=60) == 0, seen()
    finally:
        proc.kill()
        os.close(master)
    return seen()


def test_on_a_terminal_each_host_gets_a_live_row_with_increasing_percentages(
    tmp_path: Path,
) -> None:
    raw = on_pty(argv(tmp_path), tmp_path)
    screen = [ANSI.sub("", ln) for ln in re.split(r"[\r\n]", raw)]
    for host in ("gpu-a", "gpu-b"):
        seen = [
            int(m.group(1))
            for ln in screen
            if ln.lstrip().startswith(host)
            for m in [re.search(r"download (\d+)%", ln)]
            if m
        ]
        assert len(set(seen)) >= 5, raw  # redrawn as it went, not only at the end
        assert seen == sorted(seen) and seen[-1] == 100, seen
    shown = ANSI.sub("", raw)
    assert "\x1b[" in raw  # drawn in place
    assert "CARLA at 10.0.0.5:2000: waiting 2 s (connection refused)" in shown  # as `up` shows it
    assert "carla-launch-progress" not in shown  # no protocol line leaks
    # what stays on the screen: each finished phase once, then the summary
    assert shown.count("gpu-a: download 100% 100 MB of 100 MB") == 1
    assert shown.count("gpu-b: download 100% 50.0 MB of 50.0 MB") == 1
    assert shown.count("ready at") == 2  # once per host, in the summary


def test_through_a_pipe_each_host_gets_plain_lines_not_a_flood(tmp_path: Path) -> None:
    done = subprocess.run(
        argv(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    err = done.stderr.splitlines()
    assert "\x1b" not in done.stderr and "carla-launch-progress" not in done.stderr
    # 11 lines per host in well under 10 s: the first and the last (100%)
    assert [ln.split(",")[0] for ln in err if "download" in ln and "%" in ln] == [
        "gpu-a: download 0% 0 B of 100 MB",
        "gpu-b: download 0% 0 B of 50.0 MB",
        "gpu-a: download 100% 100 MB of 100 MB",  # its last state, as gpu-a moves on
        "gpu-b: download 100% 50.0 MB of 50.0 MB",
    ]
    waits = [ln for ln in err if "waiting" in ln]
    assert waits == [
        "gpu-a: CARLA at 10.0.0.5:2000: waiting 0 s (connection refused)",
        "gpu-b: CARLA at 10.0.0.6:2000: waiting 0 s (connection refused)",
    ]
    ready = [ln for ln in (done.stdout + done.stderr).splitlines() if "ready at" in ln]
    assert ready == [
        "gpu-a: CARLA 0.9.15 ready at 10.0.0.5:2000 (nothing changed)",
        "gpu-b: CARLA 0.9.15 ready at 10.0.0.6:2000 (nothing changed)",
    ]


def test_live_rows_only_on_an_interactive_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_board(io.StringIO()) is None  # a pipe, a log: plain lines
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        monkeypatch.setenv("TERM", "dumb")  # a terminal that cannot redraw in place
        assert open_board(tty) is None
        monkeypatch.setenv("TERM", "xterm")
        board = open_board(tty)
        assert board is not None
        board.close()
    os.close(master)
