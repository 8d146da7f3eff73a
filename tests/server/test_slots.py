"""Which servers a profile runs on one box (`server/slots.py`, pure): one per GPU of
`server.gpus`, GPUs someone else uses left out with a line, port windows in steps of 3, the
servers a box has and no longer gets; the loop over a box's server folders, run by a real sh;
drift per server (`server/drift.py`)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from carla_launcher.box.facts import BoxFacts, SlotFacts, parse_facts
from carla_launcher.box.parsers import Listener
from carla_launcher.box.ports import NoFreePort
from carla_launcher.box.sections import script as sections_script
from carla_launcher.nvidia.smi import Gpu, GpuProcess, GpuReport
from carla_launcher.profile import Profile, read_profile
from carla_launcher.server.drift import drift, profile_origin
from carla_launcher.server.launch import launch_origin, parse_origin
from carla_launcher.server.slots import (
    Slot,
    busy,
    choose,
    declared,
    each_server,
    parse_servers,
    ports,
    session_name,
    slot_index,
    usable,
)

T4 = ("GPU-a", "GPU-b", "GPU-c")


def profile(tmp_path: Path, gpus: str | None = None, gpu: int | None = None) -> Profile:
    p = tmp_path / "profiles" / "gpu.yaml"
    p.parent.mkdir(exist_ok=True)
    extra = (f"  gpus: {gpus}\n" if gpus else "") + (f"  gpu: {gpu}\n" if gpu is not None else "")
    p.write_text(f"remote:\n  host: gpu\nserver:\n  tmux_session: sim\n{extra}")
    return read_profile(p)


def report(n: int, *procs: GpuProcess) -> GpuReport:
    gpus = tuple(Gpu(i, "Tesla T4", T4[i], 15360, 3, 15000, 0, "535") for i in range(n))
    return GpuReport("ok", gpus, procs)


def alice(gpu: int, mib: int | None = 30000) -> GpuProcess:
    return GpuProcess(4242, T4[gpu], "python3", mib, user="alice")


def facts(gpu: GpuReport | None = None, **kw: object) -> BoxFacts:
    base = BoxFacts(
        gpu=gpu or GpuReport("missing", message="nvidia-smi: not found"),
        session_dir="/home/carla/.carla-launch/sim",
        listeners=(Listener(22),),
    )
    return replace(base, **kw)


# -- names, declared servers -----------------------------------------------------------------------
def test_server_k_has_a_session_of_its_own_and_server_0_keeps_the_profiles() -> None:
    assert [session_name("sim", k) for k in (0, 1, 12)] == ["sim", "sim-1", "sim-12"]
    assert [slot_index("sim", n) for n in ("sim", "sim-1", "sim-12")] == [0, 1, 12]
    # another profile's session, a name we never make
    assert [slot_index("sim", n) for n in ("sim2", "sim-01", "sim-x", "sim-", "carla")] == [
        None
    ] * 5


def test_declared_servers_follow_server_gpus(tmp_path: Path) -> None:
    one = profile(tmp_path, gpu=1).server
    assert declared(one, [0, 1, 2]) == [Slot(0, 1, "sim")]  # no server.gpus: one, on server.gpu
    listed = profile(tmp_path, gpus="[2, 0]").server
    assert declared(listed, [0, 1, 2]) == [Slot(0, 2, "sim"), Slot(1, 0, "sim-1")]
    every = profile(tmp_path, gpus="all").server
    assert declared(every, [0, 1]) == [Slot(0, 0, "sim"), Slot(1, 1, "sim-1")]
    assert declared(every, None) == [Slot(0, None, "sim")]  # GPUs not known: one, default GPU


# -- GPUs in use ----------------------------------------------------------------------------------
def test_only_someone_elses_memory_makes_a_gpu_busy() -> None:
    ours = GpuProcess(10, T4[0], "CarlaUE4-Linux-Shipping", 5000, user="carla", role="carla")
    idle = GpuProcess(11, T4[1], "x", 0, user="bob")  # a context, no memory: not in the way
    theirs = [alice(2), GpuProcess(12, T4[2], "python3", None, user="carol")]
    found = busy(report(3, ours, idle, *theirs))
    assert found == {2: "alice (pid 4242, 30000 MiB) and 1 more process(es)"}
    nameless = busy(report(1, GpuProcess(7, T4[0], "?", 100)))
    assert nameless == {0: "another user (pid 7, 100 MiB)"}


def test_a_busy_gpu_gets_no_server_and_the_box_says_how_many_run() -> None:
    slots = [Slot(0, 0, "sim"), Slot(1, 1, "sim-1"), Slot(2, 2, "sim-2")]
    kept, lines = usable(slots, {1: "alice (pid 4242, 30000 MiB)"}, box_gpus=[0, 1, 2])
    assert [s.index for s in kept] == [0, 2]
    assert lines == [
        "GPU 1 is in use by alice (pid 4242, 30000 MiB): no server 1 there",
        "this box runs 2 of the 3 servers the profile asks for; deploy again when GPU 1 is free",
    ]


def test_a_running_server_of_ours_keeps_its_gpu_when_someone_joins_it() -> None:
    slots = [Slot(0, 0, "sim"), Slot(1, 1, "sim-1")]
    kept, lines = usable(slots, {1: "alice (pid 4242)"}, running={1})
    assert kept == slots
    assert lines == ["GPU 1 is also used by alice (pid 4242): server 1 keeps running there"]


def test_a_gpu_the_box_does_not_have_gets_no_server() -> None:
    kept, lines = usable([Slot(0, 0, "sim"), Slot(1, 3, "sim-1")], {}, box_gpus=[0, 1])
    assert kept == [Slot(0, 0, "sim")]
    assert lines == [
        "the box has no GPU 3 (its GPUs: 0, 1): no server 1 there",
        "this box runs 1 of the 2 servers the profile asks for",
    ]


# -- ports ----------------------------------------------------------------------------------------
def test_each_server_gets_its_window_and_a_busy_one_moves_past_the_others() -> None:
    two = [Slot(0, 0, "sim"), Slot(1, 1, "sim-1")]
    assert ports(2000, two, {22}) == {0: 2000, 1: 2003}
    # 2000 is someone else's: server 0 moves to 2003, server 1 past it
    assert ports(2000, two, {2000}) == {0: 2003, 1: 2006}
    # our running servers keep theirs, even off their windows
    assert ports(2000, two, {2003, 2004, 2005, 2009}, ours={1: 2009}) == {0: 2000, 1: 2009}
    assert ports(2000, [Slot(0, 0, "sim"), Slot(2, 2, "sim-2")], set()) == {0: 2000, 2: 2006}
    with pytest.raises(NoFreePort):
        ports(65531, two, set())  # server 1's window would pass 65535


# -- what a deploy leaves on a box ----------------------------------------------------------------
def test_a_box_with_two_free_gpus_gets_two_servers(tmp_path: Path) -> None:
    srv = profile(tmp_path, gpus="all").server
    choice = choose(srv, facts(report(2)))
    assert choice.kept == [Slot(0, 0, "sim"), Slot(1, 1, "sim-1")]
    assert choice.stale == {} and choice.lines == [] and choice.error is None


def test_servers_the_profile_no_longer_asks_for_stop(tmp_path: Path) -> None:
    srv = profile(tmp_path, gpus="[0]").server
    box = facts(
        report(3),
        launch_sha="a" * 64,
        tmux_sessions=("sim", "sim-1"),
        slots=(
            SlotFacts("sim-1", "b" * 64, 2003, "running", True),
            SlotFacts("sim-2", None, None, None, False),  # its files are gone: nothing to stop
        ),
    )
    choice = choose(srv, box)
    assert choice.kept == [Slot(0, 0, "sim")]
    assert choice.stale == {1: "the profile no longer asks for it"}
    assert choice.ours == {1: 2003}  # until it stops, its ports are its own


def test_a_stopped_server_whose_gpu_someone_took_is_left_out(tmp_path: Path) -> None:
    srv = profile(tmp_path, gpus="all").server
    box = facts(report(2, alice(1)), slots=(SlotFacts("sim-1", "b" * 64, 2003, "stopped"),))
    choice = choose(srv, box)
    assert [s.index for s in choice.kept] == [0]
    assert choice.stale == {1: "its GPU is not free"}
    assert choice.lines[0] == "GPU 1 is in use by alice (pid 4242, 30000 MiB): no server 1 there"


def test_every_gpu_in_use_is_an_error_that_names_them(tmp_path: Path) -> None:
    srv = profile(tmp_path, gpus="[1]").server
    choice = choose(srv, facts(report(2, alice(1))))
    assert choice.error == (
        "no GPU for a server: GPU 1 is in use by alice (pid 4242, 30000 MiB): no server 0 there"
    )


def test_gpus_all_without_nvidia_smi_is_one_server_or_an_error(tmp_path: Path) -> None:
    srv = profile(tmp_path, gpus="all").server
    fresh = choose(srv, facts())
    assert fresh.kept == [Slot(0, None, "sim")] and fresh.error is None
    assert fresh.lines == [
        "server.gpus is all, but the box's GPUs could not be read (nvidia-smi: not found): "
        "one server, on the default GPU"
    ]
    # a box that runs server 1: not stopped because nvidia-smi failed once
    running = choose(srv, facts(slots=(SlotFacts("sim-1", "b" * 64, 2003, "running", True),)))
    assert running.error is not None and "list the GPUs in server.gpus" in running.error
    assert running.stale == {}


def test_the_slots_fact_reads_every_server_folder() -> None:
    lines = ["slot=sim", "port=2000", "slot=sim-1", "launch=" + "c" * 64, "state=running"]
    snippet = "printf '%s\\n' " + " ".join([*lines, "session=yes"])
    out = subprocess.run(
        ["sh", "-c", sections_script([("slots", snippet)])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert parse_facts(out).slots == (
        SlotFacts("sim", None, 2000, None, False),
        SlotFacts("sim-1", "c" * 64, None, "running", True),
    )


# -- the loop over a box's server folders ----------------------------------------------------------
def test_each_server_runs_once_per_deployed_folder_and_goes_on_after_a_failure(
    tmp_path: Path,
) -> None:
    top = tmp_path / "state dir"
    for name, launch in (
        ("sim", True),
        ("sim-1", True),
        ("sim-2", False),  # a server a deploy stopped for good: its launch files are gone
        ("sim-10", True),
        ("sim-01", True),  # not a name we make
        ("simx", True),
    ):
        (top / name).mkdir(parents=True)
        if launch:
            (top / name / "launch.sh").write_text("")
    head = (
        f'set -u\nCL_SESSION=sim\nSDIR="{top}/sim"\n'
        'die() { echo "carla-launch: error: $*" >&2; exit 1; }\n'
    )
    body = 'echo "$CL_SESSION in ${SDIR##*/}"\n[ "$CL_SESSION" != sim-1 ] || die "it broke"\nexit 0'
    out = subprocess.run(["sh", "-c", head + each_server(body)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert sorted(parse_servers(out.stdout)) == [
        ("sim", "sim in sim", 0),
        ("sim-1", "sim-1 in sim-1\ncarla-launch: error: it broke", 1),
        ("sim-10", "sim-10 in sim-10", 0),
    ]
    only = subprocess.run(
        ["sh", "-c", head + each_server(body, "sim-10")], capture_output=True, text=True
    )
    assert [(n, rc) for n, _, rc in parse_servers(only.stdout)] == [
        ("sim", None),
        ("sim-1", None),
        ("sim-10", 0),
    ]
    for d in ("sim", "sim-1", "sim-10", "sim-01", "simx"):
        (top / d / "launch.sh").unlink()
    none = subprocess.run(["sh", "-c", head + each_server(body)], capture_output=True, text=True)
    assert parse_servers(none.stdout) == [("sim", "sim in sim", 0)]  # nothing deployed: server 0


# -- drift per server -----------------------------------------------------------------------------
def test_changing_server_gpus_is_drift_of_every_server(tmp_path: Path) -> None:
    before = profile(tmp_path, gpus="[0, 1]")
    box = [launch_origin(before.server, None, s) for s in declared(before.server)]
    assert [parse_origin(o.line()) for o in box] == box  # the config line keeps server.gpus
    assert [drift(profile_origin(before, k, o), o) for k, o in enumerate(box)] == [[], []]
    after = profile(tmp_path, gpus="[0, 1, 2]")
    assert [drift(profile_origin(after, k, o), o) for k, o in enumerate(box)] == [
        ["server.gpus: [0, 1] -> [0, 1, 2]"]
    ] * 2
    one = profile(tmp_path)  # back to one server: server 1 is not wanted any more
    assert drift(profile_origin(one, 1, box[1]), box[1]) == ["server.gpus: [0, 1] -> none"]


def test_gpus_all_takes_each_servers_gpu_from_its_box(tmp_path: Path) -> None:
    every = profile(tmp_path, gpus="all")
    on_box = replace(launch_origin(every.server, None), gpu=3)  # the box's fourth GPU
    assert drift(profile_origin(every, 1, on_box), on_box) == []


def test_a_one_server_profile_writes_the_config_line_it_always_wrote(tmp_path: Path) -> None:
    srv = profile(tmp_path, gpu=1).server
    line = launch_origin(srv, None, declared(srv)[0]).line()
    assert "gpus" not in line and '"gpu":1' in line  # no restart of deployed servers for it
