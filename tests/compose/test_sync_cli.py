"""`carla-launch sync` as a user meets it: check, hand edits, bad input, the bundled example."""

from __future__ import annotations

import difflib
import os
import re
import shutil
from pathlib import Path

import pytest

from carla_launcher.compose import yamlio
from carla_launcher.compose.derive import Plan, derive_text
from carla_launcher.compose.hosts import Rewrite
from tests.harness.cli import REPO, child, write_files
from tests.harness.compose_loader import load_model

SOURCE = """\
# the stack
services:
  carla-simulator:
    image: carlasim/carla:0.9.15
  agent:
    image: agent   # the driver
    environment:
      - CARLA_SIM_HOST=carla-simulator
    depends_on: [carla-simulator]
"""


def sync(run, *args: str):
    return run("sync", "--dir", ".", "--address", "10.0.0.5", *args)


def test_check_reports_missing_and_stale_variants_and_changes_nothing(tmp_path: Path, run) -> None:
    write_files(tmp_path, {"compose.yaml": SOURCE})
    r = sync(run, "--check")
    assert r.exit_code == 1
    assert "compose.distributed.yaml: missing" in r.stderr
    assert "+    image: agent   # the driver" in r.stdout  # a unified diff of what would be written
    assert not (tmp_path / "compose.distributed.yaml").exists()
    assert sync(run).exit_code == 0
    assert sync(run, "--check").exit_code == 0
    (tmp_path / "compose.yaml").write_text(SOURCE.replace("image: agent ", "image: agent:v2 "))
    r = sync(run, "--check")
    assert r.exit_code == 1 and "stale" in r.stderr
    assert (
        "-    image: agent   # the driver" in r.stdout
        and "+    image: agent:v2   # the driver" in r.stdout
    )


def test_current_variant_is_not_rewritten(tmp_path: Path, run) -> None:
    write_files(tmp_path, {"compose.yaml": SOURCE})
    assert sync(run).exit_code == 0
    v = tmp_path / "compose.distributed.yaml"
    os.utime(v, (1_000_000, 1_000_000))
    r = sync(run)
    assert r.exit_code == 0 and "current compose.distributed.yaml" in r.stdout
    assert v.stat().st_mtime == 1_000_000


def test_hand_edited_variant_is_kept_unless_forced(tmp_path: Path, run) -> None:
    write_files(tmp_path, {"compose.yaml": SOURCE})
    assert sync(run).exit_code == 0
    v = tmp_path / "compose.distributed.yaml"
    edited = v.read_text().replace("image: agent", "image: agent:mine")
    v.write_text(edited)
    r = sync(run, "--address", "10.0.0.6")
    assert r.exit_code == 1
    assert "edited by hand" in r.stderr and "--force" in r.stderr
    assert v.read_text() == edited
    assert sync(run, "--check").exit_code == 1
    r = sync(run, "--force")
    assert r.exit_code == 0 and "image: agent:mine" not in v.read_text()


def test_handmade_copy_of_the_old_way_is_not_overwritten(tmp_path: Path, run) -> None:
    handmade = SOURCE.replace("carla-simulator\n", "192.168.1.20\n")
    write_files(tmp_path, {"compose.yaml": SOURCE, "compose.distributed.yaml": handmade})
    r = sync(run)
    assert r.exit_code == 1 and "not made by carla-launch" in r.stderr
    assert (tmp_path / "compose.distributed.yaml").read_text() == handmade


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {
                "compose.yaml": SOURCE.replace(
                    "    depends_on: [carla-simulator]", "    depends_on: [carla-simulator"
                )
            },
            r"^carla-launch: |^error: compose.yaml:\d+: invalid YAML: ",
        ),
        (
            {"compose.yaml": "include:\n  - nowhere.yaml\n" + SOURCE.replace("# the stack\n", "")},
            r"^error: compose.yaml:2: file not found: .*nowhere.yaml",
        ),
        (
            {
                "compose.yaml": SOURCE
                + "  viewer:\n    image: v\n    network_mode: service:carla-simulator\n"
            },
            r"^error: compose.yaml:12: network_mode: service viewer shares the simulator's network",
        ),
        (
            {
                "compose.yaml": SOURCE
                + "  viewer:\n    image: v\n    volumes_from: [carla-simulator:ro]\n"
            },
            r"^error: compose.yaml:12: volumes_from: service viewer mounts the simulator's volumes",
        ),
        # two carla images and no service naming either as its CARLA host: truly ambiguous
        (
            {
                "compose.yaml": SOURCE.replace("CARLA_SIM_HOST=carla-simulator", "MODE=fast")
                + "  carla2:\n    image: carlasim/carla:0.9.14\n"
            },
            r"^error: compose.yaml:3: several candidate simulators: "
            r"carla-simulator \(compose.yaml:3\), carla2 \(compose.yaml:10\)",
        ),
    ],
    ids=["invalid-yaml", "missing-include", "network-mode", "volumes-from", "two-simulators"],
)
def test_bad_input_is_one_line_with_file_and_line_and_loses_nothing(
    tmp_path: Path,
    run,
    files: dict[str, str],
    expected: str,
) -> None:
    good = (
        "services:\n  carla-simulator:\n    image: carlasim/carla\n"
        "  a:\n    image: a\n    environment: [CARLA_HOST=carla-simulator]\n"
    )
    write_files(tmp_path, {**files, "other.yaml": good})
    write_files(tmp_path, {"compose.distributed.yaml": "# an older variant\n"})
    r = sync(run)
    assert r.exit_code == 2
    lines = [line for line in r.stderr.splitlines() if line.startswith(("error:", "carla-launch:"))]
    assert len(lines) == 1, r.stderr
    assert re.search(expected, lines[0]), lines[0]
    assert (tmp_path / "compose.distributed.yaml").read_text() == "# an older variant\n"
    assert (tmp_path / "other-distributed.yaml").is_file()  # the rest of the folder is still synced


def test_no_simulator_anywhere_is_an_error(tmp_path: Path, run) -> None:
    write_files(tmp_path, {"compose.yaml": "services:\n  a:\n    image: a\n"})
    r = sync(run)
    assert r.exit_code == 2
    assert "no compose file here has a simulator service" in r.stderr
    r = run("sync", "--address", "10.0.0.5", "compose.yaml")
    assert r.exit_code == 2 and "compose.yaml:1: no simulator found" in r.stderr


def test_round_trip_of_a_file_that_needs_no_change_is_byte_identical() -> None:
    for path in sorted((REPO / "build").glob("*.yaml")):
        text = path.read_text()
        doc, style = yamlio.load(text)
        assert yamlio.dump(doc, style) == text, path.name
        if "localhost" in text or "127.0.0.1" in text:
            continue  # a CARLA host variable saying localhost is rewritten by design
        plan = Plan("no-such-service", Rewrite("10.0.0.5", ("no-such-service",)))
        out, derived = derive_text(text, plan)
        assert out == text and not derived.changed


def test_variant_diff_touches_only_the_simulator_dependencies_and_replaced_values() -> None:
    """Every changed line of the bundled example's variants is one the contract explains."""
    for variant in sorted((REPO / "build").glob("*distributed*.yaml")):
        source = variant.with_name(
            variant.name.replace(".distributed", "").replace("-distributed", "")
        )
        body = variant.read_text().split("\n", 3)[3]
        diff = list(
            difflib.unified_diff(
                source.read_text().splitlines(), body.splitlines(), lineterm="", n=0
            )
        )
        removed = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
        added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
        for line in added:
            assert "192.0.2.10" in line or re.match(r"^\s*environment:$", line), (
                variant.name,
                line,
            )
        for line in removed:
            explained = (
                "carla-simulator" in line
                or "carla-server" in line
                or "include:" in line
                or "docker-compose.carla.yaml" in line
                or "env_file" in line
                or not line.strip()
                or re.match(
                    r"^\s*(depends_on|links|condition|networks|image|hostname|container_name|command|aliases|carla-net):",
                    line,
                )
                or line.strip().startswith(("#", "- ", "[", "aliases"))
            )
            assert explained, (variant.name, line)


def test_bundled_example_is_in_sync(compose_loader: str) -> None:
    """`carla-launch sync --check --dir build`, as CI and the pre-commit hook run it."""
    proc = child("sync", "--check", "--dir", "build", cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for variant in (REPO / "build").glob("*distributed*.yaml"):
        load_model(variant)  # every committed variant loads in the real compose


def test_profile_gives_address_and_simulator(tmp_path: Path, run) -> None:
    shutil.copytree(REPO / "build", tmp_path / "build")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "box.yaml").write_text(
        "remote:\n  host: gpu-box\n  address: 10.9.8.7\nserver:\n  port: 2003\n"
        "compose:\n  dir: build\n  simulator: carla-simulator\n"
    )
    r = run("sync", "--profile", "box")
    assert r.exit_code == 0, r.stderr
    text = (tmp_path / "build" / "docker-compose.leaderboard-distributed.yaml").read_text()
    assert "--host=10.9.8.7 --port=2003" in text
    (tmp_path / "profiles" / "box.yaml").write_text(
        "remote:\n  host: gpu-box\n  adress: 10.9.8.7\n"
    )
    r = run("sync", "--profile", "box")
    assert r.exit_code == 2
    assert r.stderr.strip().startswith("error: profiles/box.yaml:3: remote.adress: unknown field")


def test_pre_commit_hook_is_declared() -> None:
    text = (REPO / ".pre-commit-hooks.yaml").read_text()
    assert "id: carla-launch-sync-check" in text and "sync --check" in text.replace("args: [", "")


# -- hostile but plausible input (found in review): one line, exit 2, the rest still synced -------
GOOD = (
    "services:\n  carla-simulator:\n    image: carlasim/carla\n"
    "  a:\n    image: a\n    environment: [CARLA_HOST=carla-simulator]\n"
)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("null-services", b"services:\n", r"compose.yaml:1: services: must be a mapping"),
        ("not-utf8", b"services:\n  a:\n    image: caf\xe9\n", r"compose.yaml: not UTF-8 text"),
        (
            "service-string",
            b"services:\n  carla-simulator:\n    image: carlasim/carla\n  a: just-a-string\n",
            r"compose.yaml:4: services.a: a service must be a mapping",
        ),
        (
            "command-number",
            b"services:\n  carla-simulator:\n    image: carlasim/carla\n"
            b"  a:\n    image: a\n    command: [run, --port, 2000]\n",
            r"compose.yaml:6: services.a.command: must be a string or a list of strings",
        ),
        (
            "extends-simulator",
            b"services:\n  carla-simulator:\n    image: carlasim/carla\n"
            b"  a:\n    extends: carla-simulator\n",
            r"compose.yaml:2: several candidate simulators: "
            r"carla-simulator \(compose.yaml:2\), a \(compose.yaml:4\)",
        ),
        (
            "extends-missing",
            b"services:\n  carla-simulator:\n    image: carlasim/carla\n"
            b"  a:\n    extends: nothere\n",
            r"compose.yaml:5: extends: "
            r"extends a service that compose.yaml does not have: 'nothere'",
        ),
    ],
)
def test_hostile_input_is_one_line_and_the_rest_is_synced(
    tmp_path: Path, run, name: str, content: bytes, expected: str
) -> None:
    (tmp_path / "compose.yaml").write_bytes(content)
    (tmp_path / "other.yaml").write_text(GOOD)
    r = sync(run)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(expected, lines[0]), r.stderr
    assert (tmp_path / "other-distributed.yaml").is_file()


def test_extending_the_simulator_is_refused(tmp_path: Path, run) -> None:
    write_files(
        tmp_path,
        {
            "compose.yaml": "services:\n  carla-simulator:\n    image: carlasim/carla\n"
            "  a:\n    extends: carla-simulator\n"
        },
    )
    r = sync(run, "--simulator", "carla-simulator")
    assert r.exit_code == 2
    assert (
        "error: compose.yaml:5: extends: service a extends the simulator; it cannot be distributed"
        in r.stderr
    )


def test_symlink_loop_in_include_is_an_error_not_a_crash(tmp_path: Path, run) -> None:
    (tmp_path / "l1.yaml").symlink_to("l2.yaml")
    (tmp_path / "l2.yaml").symlink_to("l1.yaml")
    write_files(
        tmp_path,
        {
            "compose.yaml": "include: [l1.yaml]\n" + SOURCE.replace("# the stack\n", ""),
            "other.yaml": GOOD,
        },
    )
    r = sync(run)
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    assert re.search(r"^error: compose.yaml:1: cannot read .*l1.yaml", r.stderr, re.M), r.stderr
    assert (tmp_path / "other-distributed.yaml").is_file()


def test_a_bom_is_fine_and_a_variant_that_is_a_folder_is_one_line(tmp_path: Path, run) -> None:
    (tmp_path / "compose.yaml").write_bytes(b"\xef\xbb\xbf" + SOURCE.encode())
    assert sync(run).exit_code == 0
    (tmp_path / "compose.distributed.yaml").unlink()
    (tmp_path / "compose.distributed.yaml").mkdir()
    r = sync(run)
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    assert "compose.distributed.yaml: cannot read the variant" in r.stderr


def test_dependencies_merged_in_with_an_anchor_are_dropped(
    tmp_path: Path, run, compose_loader: str
) -> None:
    write_files(
        tmp_path,
        {
            "compose.yaml": (
                "x-common: &common\n  depends_on: [carla-simulator]\n  links: [carla-simulator]\n"
                "services:\n  carla-simulator:\n    image: carlasim/carla\n"
                "  agent:\n    <<: *common\n    image: a\n"
                "    environment: [CARLA_HOST=carla-simulator]\n"
            )
        },
    )
    assert sync(run).exit_code == 0
    model = load_model(tmp_path / "compose.distributed.yaml")
    assert (
        "depends_on" not in model["services"]["agent"] and "links" not in model["services"]["agent"]
    )


def test_named_profile_that_is_missing_is_an_error_even_with_address(tmp_path: Path, run) -> None:
    write_files(tmp_path, {"compose.yaml": SOURCE})
    r = run("sync", "--profile", "nosuch", "--address", "10.0.0.7", "--dir", ".")
    assert r.exit_code == 2 and "nosuch" in r.stderr


def test_profile_port_is_the_remote_port_even_when_it_is_2000(tmp_path: Path, run) -> None:
    write_files(
        tmp_path,
        {
            "build/compose.yaml": (
                "services:\n  carla-simulator:\n    image: carlasim/carla\n"
                "    command: ./CarlaUE4.sh -carla-rpc-port=3000\n"
                "  agent:\n    image: a\n"
                "    environment: [CARLA_HOST=carla-simulator, CARLA_PORT=3000]\n"
            ),
            "profiles/default.yaml": (
                "remote:\n  host: box\n  address: 10.0.0.8\nserver:\n  port: 2000\n"
            ),
        },
    )
    assert run("sync", "-q").exit_code == 0
    assert "CARLA_PORT=2000" in (tmp_path / "build" / "compose.distributed.yaml").read_text()


def test_two_projects_with_a_default_profile_remember_apart(tmp_path: Path) -> None:
    from carla_launcher.profile import read_profile

    for p in ("a", "b"):
        write_files(tmp_path, {f"{p}/profiles/default.yaml": "remote:\n  host: box\n"})
    a, b = (read_profile(tmp_path / p / "profiles" / "default.yaml") for p in "ab")
    assert a.name == b.name and a.key != b.key
    assert re.fullmatch(r"default-[0-9a-f]{6}", a.key)


# -- what sync says it did, and where the address came from ---------------------------------------
def test_each_line_says_what_the_variant_did_and_where_the_address_came_from(
    tmp_path: Path, run
) -> None:
    write_files(tmp_path, {"compose.yaml": SOURCE})
    r = sync(run)
    assert r.stdout == (
        "wrote compose.distributed.yaml: removed service carla-simulator; "
        "1 reference now points at 10.0.0.5:2000 (address from --address)\n"
    )
    r = sync(run)
    assert r.stdout == (
        "current compose.distributed.yaml: carla-simulator removed, "
        "1 reference -> 10.0.0.5:2000 (address from --address)\n"
    )
    assert sync(run, "-q").stdout == ""


def test_the_origin_is_the_profile_the_remembered_deploy_or_the_env_mode(
    tmp_path: Path, run
) -> None:
    from carla_launcher.profile import load_profile
    from carla_launcher.records import learn

    two = SOURCE + "    command: ./agent --host carla-simulator --port 2000\n"
    write_files(
        tmp_path,
        {
            "build/compose.yaml": two,
            "profiles/default.yaml": "remote:\n  host: box\n  address: fd00::5\n"
            "server:\n  port: 2003\ncompose:\n  dir: build\n",
        },
    )
    r = run("sync")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.endswith(
        "2 references now point at [fd00::5]:2003 (address from profiles/default.yaml)\n"
    )
    write_files(tmp_path, {"profiles/default.yaml": "remote:\n  host: box\n  address: null\n"})
    learn(load_profile(None, tmp_path), "box", address="10.0.0.9")
    r = run("sync")
    assert "now point at 10.0.0.9:2000 (address remembered for profile default)" in r.stdout
    write_files(
        tmp_path, {"profiles/default.yaml": "remote:\n  host: box\ncompose:\n  address: env\n"}
    )
    r = run("sync")
    assert r.stdout.endswith(
        "2 references now read $CARLA_LAUNCH_HOST (env address mode: profiles/default.yaml)\n"
    ), r.stdout


def test_diff_shows_each_variant_against_its_source_and_writes_nothing(tmp_path: Path, run) -> None:
    write_files(tmp_path, {"compose.yaml": SOURCE})
    r = sync(run, "--diff")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["--- compose.yaml", "+++ compose.distributed.yaml"]
    assert "-  carla-simulator:" in lines and "+      - CARLA_SIM_HOST=10.0.0.5" in lines
    assert not any(line.startswith("+# carla-launch:") for line in lines)  # no header noise
    assert "compose.distributed.yaml: missing on disk" in r.stderr
    assert not (tmp_path / "compose.distributed.yaml").exists()
    assert sync(run).exit_code == 0
    r = sync(run, "--diff")
    assert r.stdout.splitlines() == lines and r.stderr == ""
    both = sync(run, "--diff", "--check")
    assert both.exit_code == 2 and "--diff: cannot be used with --check" in both.stderr


# -- no address known: the address each variant holds ---------------------------------------------
NULL_PROFILE = "remote:\n  host: {host}\n  address: null\ncompose:\n  dir: build\n"


@pytest.mark.parametrize(
    ("address", "port", "shown"),
    [("10.0.0.5", None, "10.0.0.5:2000"), ("fd00::5", "2003", "[fd00::5]:2003")],
)
def test_with_two_profiles_and_no_address_the_variants_keep_theirs(
    tmp_path: Path, run, address: str, port: str | None, shown: str
) -> None:
    shutil.copytree(REPO / "build", tmp_path / "build")
    for v in (tmp_path / "build").glob("*distributed.yaml"):
        v.unlink()
    write_files(
        tmp_path,
        {f"profiles/{h}.yaml": NULL_PROFILE.format(host=h) for h in ("gpu-a", "gpu-b")},
    )
    r = run("sync", "--check")
    assert r.exit_code == 1 and "build/docker-compose.distributed.yaml: missing" in r.stderr
    assert "CARLA_HOST: <address>" in r.stdout  # what goes where, without an address
    r = run("sync")
    assert r.exit_code == 2
    assert (
        "docker-compose.distributed.yaml: no address to write it for: run `carla-launch up`"
        in r.stderr
    )
    flags = ["--port", port] if port else []
    assert run("sync", "--dir", "build", "--address", address, *flags).exit_code == 0
    written = {v: v.read_text() for v in (tmp_path / "build").glob("*distributed.yaml")}

    r = run("sync", "--check")
    assert r.exit_code == 0, r.stdout + r.stderr
    r = run("sync")
    assert r.exit_code == 0
    assert f"carla-simulator removed, 5 references -> {shown} (address kept from the" in r.stdout
    source = tmp_path / "build" / "docker-compose.yaml"
    source.write_text(source.read_text().replace("viewer:latest", "viewer:v2"))
    r = run("sync", "--check")
    assert r.exit_code == 1
    assert r.stderr.splitlines()[0] == "build/docker-compose.distributed.yaml: stale"
    assert "+    image: ghcr.io/example/viewer:v2" in r.stdout
    r = run("sync")  # rewritten for the address it held: the only change is the source's
    assert r.exit_code == 0 and f"now point at {shown}" in r.stdout
    for v, text in written.items():
        if v.name == "docker-compose.distributed.yaml":
            body = text.split("\n", 3)[3].replace("viewer:latest", "viewer:v2")
            assert v.read_text().split("\n", 3)[3] == body
        else:
            assert v.read_text() == text
    # a new compose file: its variant goes to the box the folder's variants point at
    (tmp_path / "build" / "compose.extra.yaml").write_text(SOURCE)
    r = run("sync")
    assert r.exit_code == 0
    assert re.search(
        rf"^wrote build/compose.extra-distributed.yaml: .* {re.escape(shown)}", r.stdout, re.M
    )


def test_two_profiles_that_want_one_folder_for_different_boxes_are_refused_for_writing(
    tmp_path: Path, run
) -> None:
    write_files(
        tmp_path,
        {
            "build/compose.yaml": SOURCE,
            "profiles/a.yaml": NULL_PROFILE.format(host="a"),
            "profiles/b.yaml": NULL_PROFILE.format(host="b") + "  address: env\n",
        },
    )
    r = run("sync")
    assert r.exit_code == 2
    assert "profiles/a.yaml, profiles/b.yaml want the variants of build for different boxes" in (
        r.stderr
    )
    assert run("sync", "-p", "b").exit_code == 0
    assert run("sync", "--check").exit_code == 0  # a holds whatever is there: the env mode


@pytest.mark.parametrize(
    ("address", "port"),
    [("10.0.0.5", None), ("10.0.0.5", "2003"), ("fd00::5", "2010"), ("gpu-box.lab.example", None)],
)
def test_a_check_with_no_address_known_reads_the_one_the_variant_holds(
    tmp_path: Path, run, address: str, port: str | None
) -> None:
    src = SOURCE.replace(
        "      - CARLA_SIM_HOST=carla-simulator\n",
        "      - CARLA_SIM_HOST=carla-simulator\n      - CARLA_PORT=2000\n"
        "      - VIEW=http://carla-simulator:2000/view\n",
    )
    write_files(tmp_path, {"compose.yaml": src})
    flags = ["--port", port] if port else []
    assert run("sync", "--dir", ".", "--address", address, *flags).exit_code == 0
    r = run("sync", "--dir", ".", "--check")
    assert r.exit_code == 0, r.stdout + r.stderr
    (tmp_path / "compose.yaml").write_text(src.replace("image: agent ", "image: agent:v2 "))
    r = run("sync", "--dir", ".", "--check")
    assert r.exit_code == 1 and "+    image: agent:v2   # the driver" in r.stdout
    changed = [
        line
        for line in r.stdout.splitlines()
        if line.startswith(("+ ", "- ")) and "content-hash" not in line
    ]
    assert changed == ["-    image: agent   # the driver", "+    image: agent:v2   # the driver"]
