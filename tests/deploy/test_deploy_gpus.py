"""Several CARLA servers per box (`server.gpus`): the plan (pure: facts in, steps out) and the
real thing on a network-namespace box whose `nvidia-smi` is the recorded-output stand-in
(tests/harness/fake_nvidia_smi: two Tesla T4, idle or one held by another user's job).

A real deploy with `gpus: all` starts one stand-in server per GPU, on 2000 and 2003, with
`-graphicsadapter=0` and `=1` (read from their command lines on the box); `server` stops,
starts and lists them one by one or all at once; a box where someone else's process holds GPU 1
gets one server and says why.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from carla_launcher.box.facts import BoxFacts, SlotFacts
from carla_launcher.box.parsers import Listener
from carla_launcher.deploy.package import package_source
from carla_launcher.deploy.plan import STEPS, HostPlan, LocalInputs, plan_host
from carla_launcher.nvidia.smi import Gpu, GpuProcess, GpuReport
from carla_launcher.profile import Profile, read_profile
from carla_launcher.server.probe import NotReady, probe_version
from tests.harness.fake_nvidia_smi import install, set_pids
from tests.harness.netns_box import Box
from tests.harness.polling import wait_for

SHA = "ab" * 32
UUIDS = ("GPU-5a0e3b9c", "GPU-e7d2c1b0")


# -- the plan (pure) ------------------------------------------------------------------------------
def profile_with(tmp_path: Path, gpus: str) -> Profile:
    p = tmp_path / "profiles" / "gpu.yaml"
    p.parent.mkdir(exist_ok=True)
    p.write_text(f"""\
remote:
  host: gpu
server:
  package: {{url: "http://10.0.0.1/CARLA_Leaderboard_2.0.tar.xz", sha256: {SHA}}}
  os_packages: [tmux]
  gpus: {gpus}
""")
    return read_profile(p)


def two_t4(*procs: GpuProcess) -> GpuReport:
    gpus = tuple(Gpu(i, "Tesla T4", UUIDS[i], 15360, 3, 15000, 0, "535") for i in range(2))
    return GpuReport("ok", gpus, procs)


def installed(**kw: object) -> BoxFacts:
    """A box with the package installed, nothing of the profile's servers yet."""
    f = BoxFacts(
        gpu=two_t4(),
        uid=0,
        login_user="root",
        privilege="root",
        server_user="carla",
        server_home="/home/carla",
        server_user_exists=True,
        package_root="/home/carla/CARLA_Leaderboard_20",
        session_dir="/home/carla/.carla-launch/carla",
        packages={"tmux": True},
        root_exists=True,
        launcher=True,
        marker={"sha256": SHA},
        listeners=(Listener(22),),
    )
    return replace(f, **kw)


def running(plan: HostPlan, **kw: object) -> BoxFacts:
    """The box after `plan` ran: each planned server runs on its launch script and port."""
    first, *rest = plan.servers
    return installed(
        launch_sha=first.launch_sha,
        deployed_port=first.port,
        status={"state": "running"},
        tmux_sessions=tuple(s.session for s in plan.servers),
        slots=tuple(SlotFacts(s.session, s.launch_sha, s.port, "running", True) for s in rest),
        listeners=tuple(Listener(p) for s in plan.servers for p in (s.port, s.port + 1)),
        **kw,
    )


def plan_for(profile: Profile, facts: BoxFacts) -> HostPlan:
    src = package_source(
        profile.server.package.url, profile.server.package.sha256, profile.base_dir
    )
    return plan_host(profile, "gpu", facts, LocalInputs(src), "10.0.0.5")


def test_gpus_all_plans_one_server_per_gpu(tmp_path: Path) -> None:
    plan = plan_for(profile_with(tmp_path, "all"), installed())
    assert plan.error is None and plan.warnings == []
    servers = [(s.slot, s.gpu, s.port, s.session_dir) for s in plan.servers]
    assert servers == [
        (0, 0, 2000, "/home/carla/.carla-launch/carla"),
        (1, 1, 2003, "/home/carla/.carla-launch/carla-1"),
    ]
    assert plan.port == 2000 and plan.session_dir == "/home/carla/.carla-launch/carla"
    write, start = plan.steps[5].script or "", plan.steps[6].script or ""
    assert "-graphicsadapter=0" in write and "-graphicsadapter=1" in write
    assert "-carla-rpc-port=2003" in write
    # one subshell per server: an `exit 0` of one (another deploy started it) skips no other
    assert start.count("(\nset -u") == 2 and start.count("start_server )") == 2
    assert plan.steps[6].why == "start server 0 (GPU 0); start server 1 (GPU 1)"


def test_a_deployed_box_with_two_servers_is_a_no_op_and_a_changed_one_restarts_alone(
    tmp_path: Path,
) -> None:
    prof = profile_with(tmp_path, "all")
    first = plan_for(prof, installed())
    again = plan_for(prof, running(first))
    assert [s.changes for s in again.steps] == [False] * len(STEPS)
    assert again.steps[6].why == "running in tmux sessions carla, carla-1"
    assert [s.port for s in again.servers] == [2000, 2003]
    edited = running(first)
    edited = replace(edited, slots=(replace(edited.slots[0], launch_sha="0" * 64),))
    one = plan_for(prof, edited)
    assert one.steps[6].why == "restart server 1 (GPU 1)"
    assert "carla-1" in (one.steps[5].script or "") and "CL_SESSION=carla\n" not in (
        one.steps[5].script or ""
    )


def test_a_gpu_someone_else_holds_gets_no_server_and_a_line(tmp_path: Path) -> None:
    theirs = GpuProcess(4242, UUIDS[1], "python3", 30000, user="alice")
    plan = plan_for(profile_with(tmp_path, "all"), installed(gpu=two_t4(theirs)))
    assert [(s.slot, s.gpu) for s in plan.servers] == [(0, 0)]
    assert plan.warnings == [
        "GPU 1 is in use by alice (pid 4242, 30000 MiB): no server 1 there",
        "this box runs 1 of the 2 servers the profile asks for; deploy again when GPU 1 is free",
    ]


def test_a_server_the_profile_no_longer_asks_for_is_stopped(tmp_path: Path) -> None:
    both = plan_for(profile_with(tmp_path, "all"), installed())
    plan = plan_for(profile_with(tmp_path, "[0]"), running(both))
    assert [s.slot for s in plan.servers] == [0]
    assert "server 1 stops and its launch script goes: the profile no longer asks for it" in (
        plan.warnings
    )
    start = plan.steps[6].script or ""
    assert "CL_SESSION=carla-1" in start and "stop_server" in start
    # server 0 restarts too: its launch script records server.gpus, which changed
    assert 'rm -f "$SDIR/launch.sh"' in start
    assert plan.steps[6].why == "stop server 1; restart server 0 (GPU 0)"


def test_server_ports_step_over_a_busy_window(tmp_path: Path) -> None:
    plan = plan_for(profile_with(tmp_path, "all"), installed(listeners=(Listener(2004),)))
    assert [s.port for s in plan.servers] == [2000, 2006]
    assert plan.warnings == [
        "port 2003 (or +1, +2) is taken on the box: server 1 (GPU 1) uses 2006"
    ]


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs sh")
def test_the_multi_server_scripts_are_valid_posix_sh(tmp_path: Path) -> None:
    both = plan_for(profile_with(tmp_path, "all"), installed())
    fewer = plan_for(profile_with(tmp_path, "[1]"), running(both))
    for script in filter(None, [s.script for p in (both, fewer) for s in p.steps]):
        done = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr + script


# -- on a real box --------------------------------------------------------------------------------
_DIRS: list[Path] = []


@pytest.fixture(autouse=True)
def _remove_sleeper_dirs() -> Iterator[None]:
    yield
    while _DIRS:
        shutil.rmtree(_DIRS.pop(), ignore_errors=True)


def fake_smi_on_box(b: Box, case: str) -> Path:
    """The recorded-output nvidia-smi in the login user's ~/.local/bin, where the box's
    scripts look first (never root's: the box shares this machine's file system)."""
    assert b.user != "root"
    home = Path(f"/home/{b.user}")
    bin_dir = install(home / ".local" / "bin", case).parent
    subprocess.run(["chown", "-R", f"{b.user}:", str(home / ".local")], check=True)
    return bin_dir


def someone_elses_job(b: Box) -> int:
    """A python3 of user nobody inside the box's namespace (its teardown kills it)."""
    d = Path(tempfile.mkdtemp(prefix="cl-gpus-"))
    d.chmod(0o755)
    _DIRS.append(d)
    exe = d / "python3"
    shutil.copy2("/bin/sleep", exe)
    subprocess.Popen(
        ["ip", "netns", "exec", b.netns, "runuser", "-u", "nobody", "--", str(exe), "300"]
    )
    found: list[int] = []

    def started() -> bool:
        out = subprocess.run(
            ["pgrep", "-u", "nobody", "-f", str(exe)], capture_output=True, text=True
        )
        found[:] = [int(p) for p in out.stdout.split()]
        return bool(found)

    wait_for(started, 10, "nobody's python3 to start")
    return found[0]


def carla_argv(b: Box) -> dict[int, list[str]]:
    """World port -> the command line of the stand-in CARLA that serves it, read on the box."""
    out: dict[int, list[str]] = {}
    for pid in b.server_processes():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except FileNotFoundError:
            continue
        if any(a.endswith("CarlaUE4-Linux-Shipping") for a in argv[:2]):
            port = next(a.split("=", 1)[1] for a in argv if a.startswith("-carla-rpc-port="))
            out[int(port)] = argv
    return out


def servers_json(b: Box, *args: str) -> list[dict]:
    """`server status --json`, checked against its schema: one entry per server."""
    from tests.commands.test_json_outputs import checked

    done = b.cli("server", "status", str(b.profile_path), "--json", *args)
    assert done.returncode in (0, 1), done.stderr
    return list(checked("server-status", done.stdout)["hosts"])


@pytest.mark.root
def test_gpus_all_on_a_two_gpu_box_runs_two_servers_each_on_its_gpu(box_factory) -> None:  # type: ignore[no-untyped-def]
    b: Box = box_factory(login="user")
    fake_smi_on_box(b, "two-t4-idle")
    b.preinstall()
    b.write_profile(server={"gpus": "all"})
    done = b.deploy()
    assert f"{b.alias} server 0 (GPU 0): CARLA 0.9.15 ready at {b.address}:2000" in done.stdout
    assert f"{b.alias} server 1 (GPU 1): CARLA 0.9.15 ready at {b.address}:2003" in done.stdout
    assert probe_version(b.address, 2000) == "0.9.15" and probe_version(b.address, 2003) == "0.9.15"
    argv = carla_argv(b)
    assert sorted(argv) == [2000, 2003]
    assert "-graphicsadapter=0" in argv[2000] and "-graphicsadapter=1" in argv[2003]
    from tests.commands.test_json_outputs import checked

    report = checked("deploy", b.deploy("--json").stdout)["hosts"][0]
    assert report["changed"] == []  # a second deploy changes nothing
    assert [(s["slot"], s["gpu"], s["port"], s["version"]) for s in report["servers"]] == [
        (0, 0, 2000, "0.9.15"),
        (1, 1, 2003, "0.9.15"),
    ]

    listed = servers_json(b)
    assert [(s["host"], s["slot"], s["gpu"], s["port"], s["running"]) for s in listed] == [
        (b.alias, 0, 0, 2000, True),
        (b.alias, 1, 1, 2003, True),
    ]
    lines = b.cli("server", "status", str(b.profile_path)).stdout.splitlines()
    assert lines[1].startswith(f"{b.alias} server 1 (GPU 1, port 2003): running since ")

    # one of them stops; the other keeps serving
    stop = b.cli("server", "stop", str(b.profile_path), "--only", "1")
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.strip() == f"{b.alias} server 1 (GPU 1): stopped; its ports are free"
    assert 2003 not in b.listening() and probe_version(b.address, 2000) == "0.9.15"
    with pytest.raises(NotReady):
        probe_version(b.address, 2003, timeout=1)
    after = {s["slot"]: s for s in servers_json(b)}
    assert after[0]["running"] and not after[1]["running"] and after[1]["stopped"]["by"]
    nobody = b.cli("server", "stop", str(b.profile_path), "--only", "3")
    assert nobody.returncode == 1
    assert f"error: {b.alias}: no server 3 here (its servers: 0, 1)" in nobody.stderr

    # start without --only: every server of the box; the running one is left alone
    start = b.cli("server", "start", str(b.profile_path))
    assert start.returncode == 0, start.stderr
    assert f"{b.alias} server 0 (GPU 0): already running" in start.stderr
    assert f"{b.alias} server 1 (GPU 1): started" in start.stderr
    assert f"{b.alias} server 1 (GPU 1): CARLA 0.9.15 ready at {b.address}:2003" in start.stdout
    logs = b.cli("server", "logs", str(b.profile_path), "-n", "5")
    assert logs.returncode == 0, logs.stderr
    assert "/carla/server.log <==" in logs.stdout and "/carla-1/server.log <==" in logs.stdout

    # the profile asks for one server now: `server start` redeploys, server 1 stops for good
    b.write_profile(server={"gpus": [0]})
    again = b.cli("server", "start", str(b.profile_path))
    assert again.returncode == 0, again.stderr
    assert "server.gpus changed since the last deploy (all -> [0])" in again.stderr
    assert "server 1 stops and its launch script goes: the profile no longer asks for it" in (
        again.stderr
    )
    wait_for(lambda: 2003 not in b.listening(), 10, "server 1's port to close")
    assert [(s["slot"], s["running"]) for s in servers_json(b)] == [(0, True)]
    assert sorted(carla_argv(b)) == [2000]


@pytest.mark.root
def test_a_gpu_another_users_job_holds_gets_no_server(box_factory) -> None:  # type: ignore[no-untyped-def]
    b: Box = box_factory(login="user")
    smi = fake_smi_on_box(b, "two-t4-gpu1-taken")
    set_pids(smi, other=someone_elses_job(b))
    b.preinstall()
    b.write_profile(server={"gpus": "all"})
    done = b.deploy()
    uid_line = "GPU 1 is in use by nobody (pid "
    assert uid_line in done.stderr and "13100 MiB): no server 1 there" in done.stderr
    assert "this box runs 1 of the 2 servers the profile asks for" in done.stderr
    assert f"CARLA 0.9.15 ready at {b.address}:2000" in done.stdout
    assert sorted(carla_argv(b)) == [2000] and "-graphicsadapter=0" in carla_argv(b)[2000]
    listed = servers_json(b)
    assert [(s["slot"], s["gpu"], s["running"]) for s in listed] == [(0, 0, True)]
