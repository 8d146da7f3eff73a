"""`gpu --watch`: redraw the report once a second, and stream a box's facts to redraw from.

`watch` is the loop (the frame itself is `term.frame`); `BoxStream` keeps ONE ssh connection
open to a box that prints its GPU facts every second, cheaper than a handshake per second.
Streaming needs a process whose output is read while it runs, so it is the one place that
starts a subprocess without `proc.run`.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from carla_launcher import term
from carla_launcher.box import sections
from carla_launcher.box.explain import SshOutcome, classify
from carla_launcher.errors import LauncherError
from carla_launcher.gpu.remote import box_label, gpu_script, parse_gpu
from carla_launcher.nvidia import smi

if TYPE_CHECKING:
    from carla_launcher.profile import Profile

RETRY_S = 2.0  # after a lost connection, before the next one


def watch(
    snapshot: Callable[[], str],
    title: str,
    interval: float = 1.0,
    out: TextIO | None = None,
    frames: int | None = None,
) -> None:
    """Redraw `snapshot()` every `interval` seconds until Ctrl-C (or `frames` frames)."""
    out = out or sys.stdout
    out.write(term.HIDE + term.CLEAR_SCREEN)
    n = 0
    try:
        while frames is None or n < frames:
            start = time.monotonic()
            try:
                text = snapshot()
            except LauncherError as e:
                text = f"error: {e}"
            size = shutil.get_terminal_size((120, 40))
            out.write(term.frame(text, title, size=(size.columns, size.lines)))
            out.flush()
            n += 1
            if frames is not None and n >= frames:
                break
            time.sleep(max(0.05, interval - (time.monotonic() - start)))
    except KeyboardInterrupt:
        pass
    finally:
        out.write(term.SHOW)
        out.flush()


class BoxStream:
    """A box's GPU facts, streamed once a second over ONE ssh connection: the remote loop runs
    the GPU sections, prints a frame marker, sleeps. Cheaper than an ssh handshake per second.
    Restarts the connection after a failure, with the failure shown meanwhile."""

    MARK = sections.MARK + "frame"

    def __init__(self, profile: Profile, host: str | None, interval: float = 1.0) -> None:
        self.profile, self.host, self.interval = profile, host, interval
        self.latest = smi.GpuReport(
            "unreachable", message="connecting…", where=box_label(profile, host)
        )
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def argv(self) -> list[str]:
        """The command that runs the loop: over ssh, or here for `connector: local`."""
        loop = (
            f"while :; do\n{gpu_script(self.profile)}"
            f"printf '\\n%s\\n' '{self.MARK}'\nsleep {self.interval:g}\ndone"
        )
        if self.profile.remote.connector == "local":
            return ["sh", "-c", loop]
        from carla_launcher.box.ssh import ssh_argv

        return ssh_argv(self.profile, self.host, command=f"sh -c {shlex.quote(loop)}")

    def _stream(self) -> tuple[int, str]:
        """One connection: update `latest` at every frame marker; (exit code, stderr) at its end."""
        self._proc = subprocess.Popen(
            self.argv(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        if self._proc.stdout is None:  # never: stdout is a pipe
            raise OSError("no pipe from the stream")
        buf: list[str] = []
        for line in self._proc.stdout:
            if line.rstrip("\n") == self.MARK:
                self.latest = parse_gpu("".join(buf), self.profile, self.host)
                buf = []
            else:
                buf.append(line)
        rc = self._proc.wait()
        return rc, self._proc.stderr.read() if self._proc.stderr else ""

    def _run(self) -> None:
        where = box_label(self.profile, self.host)
        while not self._stop.is_set():
            try:
                rc, err = self._stream()
            except (OSError, ImportError) as e:
                rc, err = 255, str(e)
            if self._stop.is_set():
                break
            ssh = classify(rc, err) if rc == 255 else SshOutcome("other", f"exit {rc}")
            self.latest = smi.GpuReport(
                "unreachable",
                message=f"lost {self.host}: {ssh.line or err.strip()}; retrying",
                where=where,
            )
            self._stop.wait(RETRY_S)

    def close(self) -> None:
        """Stop streaming: end the connection (politely, then not)."""
        self._stop.set()
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def watch_argv(profile_ref: str | None = None) -> list[str]:
    """The command line of `gpu --watch`, for a tmux pane (`attach` puts it next to the server)."""
    return [
        sys.executable,
        "-m",
        "carla_launcher",
        "gpu",
        *([profile_ref] if profile_ref else []),
        "--watch",
    ]
