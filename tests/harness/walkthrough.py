"""A new user's first hour, played on this machine with real parts and printed as the README's
transcript ("From nothing to driving"), so the README shows what this version really prints.

    .venv/bin/python -m tests.harness.walkthrough            # play it, print the transcript
    .venv/bin/python -m tests.harness.walkthrough --readme   # ... and put it into README.md

Needs root (a network-namespace box, dockerd), like the end-to-end tests. Real parts: a box with
its own sshd (`netns_box`), reached through an alias in ~/.ssh/config of a throwaway HOME; the
stand-in CARLA package served over HTTP and deployed for real; a real dockerd running the agent;
real tmux. Fakes only where nothing real can run: the GPUs (recorded nvidia-smi, here and on the
box) and the project's agent images (busybox that asks the server for its version over CARLA's
RPC protocol). The project is a copy of this repository's build/ (its sources, no variants) with
a profile written by `init`. Everything it made (box, dockerd, tmux servers, files) is removed
at the end, also when a step fails or the script is interrupted.

`STEPS` is the list of commands; tests/test_readme.py checks that the README's transcript runs
exactly these, without playing it.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from carla_launcher import __version__
from tests.harness.agent import VERSION_CALL
from tests.harness.dockerd import DockerDaemon, _busybox_rootfs, _which
from tests.harness.fake_nvidia_smi import install as install_fake_smi
from tests.harness.netns_box import Box, make_box
from tests.harness.polling import wait_for
from tests.harness.tmux import detached_pane, kill_server

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BEGIN = "<!-- walkthrough: begin"
END = "<!-- walkthrough: end -->"
ALIAS = "gpu-box"  # the box's name in the user's ~/.ssh/config
LOCAL_GPU = "rtx3070-8gb"  # this machine: too small for server and agent together
BOX_GPU = "rtx3060-12gb"  # the box: an idle 12 GB card
SCREEN = (180, 14)  # the terminal `attach` is recorded in: columns, rows


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]  # after `carla-launch`
    comment: str = ""
    before: str = ""  # a sentence of the README before this step's block ("" keeps the block)
    exit_code: int = 0  # what the walkthrough expects

    @property
    def line(self) -> str:
        return shlex.join(["carla-launch", *self.argv])


STEPS: tuple[Step, ...] = (
    Step(
        ("init", "gpu", "--host", ALIAS),
        "profiles/gpu.yaml: compose folder and simulator detected",
        "In a project whose `build/` holds compose files with a CARLA simulator service (a copy of "
        f"this repository's `build/`), with a GPU box that `ssh {ALIAS}` reaches:",
    ),
    Step(("doctor", "gpu"), "is distributed mode needed, and can the box do it?"),
    Step(
        ("deploy", "gpu"),
        "fresh box -> CARLA running in tmux there",
        "`deploy` is optional (`up` deploys on first use); on a terminal the download, check and "
        "unpack show a live bar instead of these lines:",
    ),
    Step(
        ("up", "gpu", "-f", "docker-compose.devroute.yaml", "--no-attach"),
        "variants written, agent started, panes ready",
        "`up` writes the distributed variants and says what each one did, as `sync` does (the "
        "simulator removed, how many references now point where, and where the address came "
        "from), starts the agent of the compose file `-f` names (default: "
        "`docker-compose.yaml`'s) with docker compose, and builds the local tmux session; "
        "without `--no-attach`, on a terminal, it attaches at once:",
    ),
    Step(
        ("attach", "gpu"),
        "the server's pane (read-only) beside the agent's",
        "`attach` shows both sides in one tmux window (detach with Ctrl-b d; the server pane is "
        "read-only unless `--rw`). The terminal, as recorded; its last two lines are the status "
        "bars of the box's tmux and of the local one:",
    ),
    Step(
        ("status", "gpu"),
        "one table of all of it",
        "While it runs:",
    ),
    Step(("logs", "gpu", "-n", "5"), "the agent's containers, as docker compose logs shows them"),
    Step(("server", "status", "gpu"), "the server on the box: since when, restarts, port"),
    Step(
        ("down", "gpu", "--server"),
        "containers, session and server gone",
        "And at the end of the day:",
    ),
    Step(("status", "gpu"), "stopped on purpose: exit code 0"),
)


# -- the throwaway project and its user ------------------------------------------------------------
def write_home(home: Path, box: Box) -> None:
    """A HOME whose ~/.ssh/config names the box, as a user who can `ssh gpu-box` has."""
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    key = ssh / "id_ed25519"
    shutil.copy2(box.identity, key)
    key.chmod(0o600)
    (ssh / "known_hosts").write_text(f"{box.address} {box.host_key}\n")
    (ssh / "config").write_text(
        f"Host {ALIAS}\n"
        f"  HostName {box.address}\n"
        f"  User {box.user}\n"
        f"  IdentityFile {key}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {ssh / 'known_hosts'}\n"
    )


ICD = '{"file_format_version": "1.0.0", "ICD": {"library_path": "libGLX_nvidia.so.0"}}'


def fake_vulkan_icd(box: Box) -> None:
    """NVIDIA's Vulkan ICD file, as its driver installs it, where sessions on the box look
    (a tmpfs over /usr/local/share in the box's sshd's own mount namespace: this machine's
    files stay as they are). Part of the recorded GPU, as nvidia-smi is."""
    box.run_as_sshd(
        'set -e; keep=$(mktemp -d); cp -a /usr/local/share/. "$keep"/;'
        " mount -t tmpfs -o mode=0755 walkthrough /usr/local/share;"
        ' cp -a "$keep"/. /usr/local/share/; rm -rf "$keep";'
        " mkdir -p /usr/local/share/vulkan/icd.d;"
        f" echo {shlex.quote(ICD)} > /usr/local/share/vulkan/icd.d/nvidia_icd.json"
    )


def copy_project(target: Path) -> None:
    """build/'s sources (a project has no variants before its first `up`)."""
    shutil.copytree(
        REPO / "build", target / "build", ignore=shutil.ignore_patterns("*-distributed.y*ml")
    )


def point_profile_at_test_box(profile: Path, url: str, sha: str) -> None:
    """What a user of this offline test box would edit after `init`: the package comes from the
    test network, and the OS packages are those the box already has (it shares this machine's)."""
    text = profile.read_text()
    for key, value in (
        ("url", url),
        ("sha256", sha),
        ("os_packages", "[tmux, curl]"),
    ):
        text, n = re.subn(rf"^(\s+{key}:) .*$", rf"\g<1> {value}", text, count=1, flags=re.M)
        if n != 1:
            raise RuntimeError(f"{profile}: no `{key}:` line to edit (did `init` change?)")
    profile.write_text(text)


# -- the agent's images: busybox as the project's agent and viewer ---------------------------------
PYTHON3 = f"""#!/bin/sh
# stand-in for the agent image's python3: asks CARLA for its version (its RPC `version` call,
# as the real client sends it) at --host/--port, says what it got, and waits
host=localhost port=2000 prev=
for a in "$@"; do
  case $prev in --host) host=$a ;; --port) port=$a ;; esac
  case $a in --host=*) host=${{a#*=}} ;; --port=*) port=${{a#*=}} ;; esac
  prev=$a
done
reply=$(printf '{VERSION_CALL}' | nc -w 3 "$host" "$port" | grep -o '0\\.9\\.[0-9]*')
echo "${{1##*/}}: connected to CARLA ${{reply:-?}} at $host:$port; driving"
trap 'exit 0' TERM INT
sleep 3600 &
wait
"""

NC = """#!/bin/sh
# busybox's nc has no -z: connect, send nothing, close
if [ "$1" = -z ]; then shift; exec busybox nc -w 2 "$@" </dev/null >/dev/null 2>&1; fi
exec busybox nc "$@"
"""

VIEWER_CMD = (
    '["sh", "-c", "echo \\"viewer: watching $SPECTATOR_URL\\"; '
    "trap 'exit 0' TERM INT; sleep 3600 & wait\"]"
)


def agent_rootfs() -> bytes:
    """The busybox root of the harness's image, plus python3 and an `nc -z`."""
    busybox = _which("busybox")
    if busybox is None:
        raise RuntimeError("busybox is not installed: install Debian's busybox-static")
    applets = [
        a
        for a in subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout.split()
        if a != "nc"
    ]
    buf = io.BytesIO(_busybox_rootfs(busybox, applets))
    with tarfile.open(fileobj=buf, mode="a") as tar:
        for name, text in (("bin/python3", PYTHON3), ("bin/nc", NC)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def agent_images(dockerd: DockerDaemon) -> None:
    """The images build/'s compose files name, made here (no registry is reachable)."""
    rootfs = agent_rootfs()
    for image, cmd in (
        ("ghcr.io/example/driving-agent:latest", '["sh"]'),
        ("ghcr.io/example/viewer:latest", VIEWER_CMD),
    ):
        dockerd.docker(
            "import",
            "--change",
            f"CMD {cmd}",
            "--change",
            "ENV PATH=/bin",
            "-",
            image,
            input=rootfs,
        )


# -- playing it ------------------------------------------------------------------------------------
@dataclass
class Played:
    step: Step
    output: str
    exit_code: int


class Walkthrough:
    def __init__(self, work: Path, box: Box, dockerd: DockerDaemon, socket: str) -> None:
        self.work, self.box, self.dockerd, self.socket = work, box, dockerd, socket
        self.project = work / "project"
        home = work / "home"
        local_bin = install_fake_smi(work / "localbin", LOCAL_GPU).parent
        self.env = {
            **dockerd.environ(),
            "HOME": str(home),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "PATH": f"{local_bin}{os.pathsep}{os.environ['PATH']}",
            "CARLA_LAUNCH_GPU_BACKEND": "smi",
            "CARLA_LAUNCH_TMUX_SOCKET": socket,
            "COLUMNS": str(SCREEN[0]),
        }
        for name in ("TMUX", "FAKE_NVIDIA_SMI_CASE", "NOTIFY_SOCKET"):
            self.env.pop(name, None)
        self.home = home

    def prepare(self) -> None:
        write_home(self.home, self.box)
        copy_project(self.project)
        agent_images(self.dockerd)
        box_home = Path(f"/home/{self.box.user}")
        install_fake_smi(box_home / ".local" / "bin", BOX_GPU)
        subprocess.run(["chown", "-R", f"{self.box.user}:", str(box_home / ".local")], check=True)
        fake_vulkan_icd(self.box)

    def run(self, step: Step) -> Played:
        done = subprocess.run(
            [sys.executable, "-m", "carla_launcher", *step.argv],
            cwd=self.project,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # in the order a terminal shows them
            text=True,
            timeout=600,
            check=False,
        )
        return Played(step, done.stdout, done.returncode)

    def attach(self, step: Step) -> Played:
        """`attach` in a real terminal (a detached tmux pane of SCREEN's size), read back."""
        argv = ["env", "-u", "TMUX", sys.executable, "-m", "carla_launcher", *step.argv]
        width, height = SCREEN
        with detached_pane(argv, width=width, height=height, env=self.env, cwd=self.project) as p:
            screen = p.wait(lambda s: "CARLA 0.9.15 at" in s and "LogCarla" in s, 60)
            time.sleep(1)  # let the last lines of both panes land
            screen = p.screen()
        return Played(step, screen.rstrip("\n") + "\n", 0)

    def play(self) -> Iterator[Played]:
        for step in STEPS:
            if step.argv[0] == "attach":
                yield self.attach(step)
                continue
            yield self.run(step)
            if step.argv[0] == "init":
                srv, url, sha = self.box.install_standin()
                del srv
                point_profile_at_test_box(self.project / "profiles" / "gpu.yaml", url, sha)
            if step.argv[0] == "up":
                self.wait_for_agent()

    def wait_for_agent(self) -> None:
        """The agent's first line (it connects within seconds), so later steps show it."""
        wait_for(
            lambda: "CARLA 0.9.15 at" in self.agent_logs(),
            60,
            "the agent's first line",
            log=lambda: self.dockerd.docker("ps", "-a", check=False).stdout + self.agent_logs(),
        )

    def agent_logs(self) -> str:
        ids = self.dockerd.docker("ps", "-aq", check=False).stdout.split()
        return "".join(self.dockerd.docker("logs", i, check=False).stdout for i in ids)


# -- the transcript --------------------------------------------------------------------------------
EDIT_NOTE = (
    "The test box has no internet, so its profile then got the stand-in package it can reach "
    "(`server.package.url` and `sha256`) and `server.os_packages: [tmux, curl]`, the packages "
    "it already has; on a real box keep what `init` wrote."
)


def _console(played: list[Played]) -> list[str]:
    """One console block: each command (comments aligned), then what it printed."""
    width = max(len(p.step.line) for p in played) + 2
    lines = ["```console"]
    for p in played:
        comment = f"# {p.step.comment}" if p.step.comment else ""
        lines.append(f"$ {p.step.line.ljust(width)}{comment}".rstrip())
        if p.step.argv[0] == "attach":
            lines += ["```", "", "```text"]
        lines.extend(line.rstrip() for line in p.output.rstrip("\n").splitlines())
        if p.exit_code != 0:
            lines.append(f"[exit code {p.exit_code}]")
    return [*lines, "```"]


def render(played: list[Played], stamp: str) -> str:
    """The README's transcript: a sentence before a group of steps, then its console block."""
    wrap = textwrap.TextWrapper(width=95, break_long_words=False, break_on_hyphens=False).fill
    out = [
        f"{BEGIN}: made by `python -m tests.harness.walkthrough --readme`; do not edit -->",
        wrap(
            f"Recorded {stamp} with carla-launch {__version__} on a test box: a network namespace "
            "with its own sshd, the stand-in CARLA package (it answers CARLA's RPC `version` "
            "call), a recorded nvidia-smi and Vulkan ICD (no GPU there) and busybox images as "
            "the agent and viewer of `build/`. Addresses, times and pids are as they were."
        ),
    ]
    groups: list[list[Played]] = []
    for p in played:
        if p.step.before or not groups or groups[-1][-1].step.argv[0] in ("init", "attach"):
            groups.append([])
        groups[-1].append(p)
    for group in groups:
        if group[0].step.before:
            out += ["", wrap(group[0].step.before)]
        out += ["", *_console(group)]
        if group[-1].step.argv[0] == "init":
            out += ["", wrap(EDIT_NOTE)]
    out.append(END)
    return "\n".join(out) + "\n"


def into_readme(readme: str, transcript: str) -> str:
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise RuntimeError(f"README.md has no `{BEGIN} ...` ... `{END}` block")
    return readme[:start] + transcript + readme[end + len(END) + 1 :]


def readme_commands(readme: str) -> list[tuple[str, ...]]:
    """The commands of the README's transcript (what tests/test_readme.py compares)."""
    start, end = readme.find(BEGIN), readme.find(END)
    lines = readme[start:end].splitlines() if start >= 0 else []
    found = []
    for line in lines:
        if line.startswith("$ carla-launch "):
            command = line[2:].split("  #", 1)[0]
            found.append(tuple(shlex.split(command))[1:])
    return found


# -- cleanup, whatever happens ---------------------------------------------------------------------
@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM/SIGHUP end the script like Ctrl-C does, through every `finally`."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _end_tmux(socket: str) -> None:
    """The private tmux server, and the socket file it leaves behind."""
    kill_server(socket)


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.walkthrough")
    parser.add_argument("--readme", action="store_true", help="write the transcript into README")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("walkthrough: needs root (a network-namespace box and dockerd)", file=sys.stderr)
        return 2
    socket = f"cl-walk-{uuid.uuid4().hex[:8]}"
    x11 = Path("/tmp/.X11-unix")  # agent_service.yaml mounts it: docker makes it when missing
    played: list[Played] = []
    with _signals_raise(), ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="cl-walkthrough-"))
        stack.callback(shutil.rmtree, work, True)
        work.chmod(0o755)  # the box's users read the stand-in package below it
        dockerd = DockerDaemon(work / "dockerd")
        if not x11.exists():
            stack.callback(_remove_if_empty, x11)
        stack.callback(dockerd.stop, False)
        dockerd.start()
        box = stack.enter_context(make_box(work, login="user"))
        stack.callback(_end_tmux, socket)
        walk = Walkthrough(work, box, dockerd, socket)
        walk.prepare()
        try:
            for p in walk.play():
                played.append(p)
                print(f"walkthrough: {p.step.line}: exit code {p.exit_code}", file=sys.stderr)
        except BaseException:
            print("walkthrough: failed; what it played so far:", file=sys.stderr)
            sys.stderr.write(render(played, "(unfinished)"))
            raise
    transcript = render(played, time.strftime("%Y-%m-%d", time.gmtime()))
    sys.stdout.write(transcript)
    wrong = [p for p in played if p.exit_code != p.step.exit_code]
    for p in wrong:
        print(
            f"walkthrough: {p.step.line} exited {p.exit_code}, expected {p.step.exit_code}",
            file=sys.stderr,
        )
    if wrong:
        return 1
    if args.readme:
        README.write_text(into_readme(README.read_text(), transcript))
        print(f"walkthrough: wrote the transcript into {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
