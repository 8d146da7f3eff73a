"""The readiness probe speaks CARLA's msgpack-rpc; the stand-in answers as a real server does.

The stand-in's faithfulness is checked with the real `carla` client from PyPI; the probe is then
checked against the stand-in, and against things that are not CARLA.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from carla_launcher.server.probe import (
    NotReady,
    ProtocolError,
    parse_version_reply,
    probe_version,
    version_request,
    wait_ready,
)
from carla_launcher.term import ProgressLine
from tests.harness.standin_carla import free_port_triple, run_local, standin_python, start_local


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen]]:
    if standin_python() is None:
        pytest.skip("needs a python3 for the stand-in server")
    port, proc = start_local(tmp_path)
    try:
        yield port, proc
    finally:
        proc.kill()
        proc.wait()


def carla_client():  # type: ignore[no-untyped-def]
    return pytest.importorskip("carla", reason="needs the real CARLA client: pip install carla")


# -- the stand-in is faithful ------------------------------------------------------------------
def test_real_carla_client_reads_the_standin_version(standin: tuple[int, subprocess.Popen]) -> None:
    carla = carla_client()
    client = carla.Client("127.0.0.1", standin[0])
    client.set_timeout(5.0)
    assert client.get_server_version() == "0.9.15"


def test_real_client_and_probe_agree_on_a_git_hash_version(tmp_path: Path) -> None:
    carla = carla_client()
    port, proc = start_local(tmp_path, version="abd96a94")  # what the Leaderboard 2.0 reports
    try:
        client = carla.Client("127.0.0.1", port)
        client.set_timeout(5.0)
        assert client.get_server_version() == "abd96a94"
        assert probe_version("127.0.0.1", port) == "abd96a94"
    finally:
        proc.kill()
        proc.wait()


def test_standin_rejects_a_call_without_carla_metadata(
    standin: tuple[int, subprocess.Popen],
) -> None:
    with socket.create_connection(("127.0.0.1", standin[0]), timeout=5) as s:
        s.sendall(msgpack.packb([0, 9, "version", []]))
        reply = msgpack.Unpacker(raw=False)
        reply.feed(s.recv(4096))
        kind, msgid, error, result = next(reply)
    assert (kind, msgid, result) == (1, 9, None)
    assert "invalid number of arguments" in error


def test_standin_opens_the_three_ports_and_logs_like_a_server(
    standin: tuple[int, subprocess.Popen],
) -> None:
    port, proc = standin
    for p in (port + 1, port + 2):
        socket.create_connection(("127.0.0.1", p), timeout=2).close()
    proc.kill()
    out = proc.communicate()[0]
    assert "Disabling core dumps." in out and f"Ports(rpc={port}" in out


# -- the probe ---------------------------------------------------------------------------------
def test_probe_gets_the_version(standin: tuple[int, subprocess.Popen]) -> None:
    assert probe_version("127.0.0.1", standin[0]) == "0.9.15"


def test_request_bytes_are_what_the_carla_client_sends() -> None:
    # captured from carla 0.9.16: 94 00 01 a7 "version" 91 91 c2
    assert version_request(1) == b"\x94\x00\x01\xa7version\x91\x91\xc2"


def test_probe_refused_is_not_ready() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NotReady, match="refused"):
        probe_version("127.0.0.1", port, timeout=1)


def _server(handler) -> tuple[int, threading.Event]:  # type: ignore[no-untyped-def]
    stop = threading.Event()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)

    def loop() -> None:
        conns = []
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conns.append(conn)
            handler(conn)
        for c in conns:
            c.close()
        srv.close()

    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1], stop


def test_probe_times_out_on_a_silent_port() -> None:
    port, stop = _server(lambda conn: None)  # accepts, never answers (a map still loading)
    try:
        # gives up by its own time-out (the message names it), not by a hang
        with pytest.raises(NotReady, match=r"no answer .*within 0\.5 s"):
            probe_version("127.0.0.1", port, timeout=0.5)
    finally:
        stop.set()


def test_probe_rejects_something_that_is_not_carla() -> None:
    port, stop = _server(lambda conn: conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n"))
    try:
        with pytest.raises(NotReady):
            probe_version("127.0.0.1", port, timeout=1)
    finally:
        stop.set()


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ([1, 5, None, [[1, "0.9.15"]]], "0.9.15"),
        ([1, 5, None, [1, "0.9.15-dirty"]], "0.9.15-dirty"),
        ([1, 5, None, "abd96a94"], "abd96a94"),
    ],
)
def test_version_reply_shapes(reply: list, expected: str) -> None:
    assert parse_version_reply(reply, 5) == expected


@pytest.mark.parametrize(
    "reply",
    [[1, 6, None, [[1, "x"]]], [0, 5, "version", []], [1, 5, None, [[0, ["boom"]]]], "junk"],
)
def test_bad_replies_are_protocol_errors(reply: object) -> None:
    with pytest.raises(ProtocolError):
        parse_version_reply(reply, 5)


def test_wait_ready_waits_for_a_slow_map_and_reports_progress(tmp_path: Path) -> None:
    if standin_python() is None:
        pytest.skip("needs a python3 for the stand-in server")
    port = free_port_triple()
    proc = run_local(port, "-standin-startup=1.5", tmp=tmp_path)
    seen: list[tuple[float, str]] = []
    try:
        t0 = time.monotonic()
        version = wait_ready("127.0.0.1", port, 20, lambda w, r: seen.append((w, r)), interval=0.1)
        assert version == "0.9.15"
        assert time.monotonic() - t0 >= 1.0
        assert seen and "refused" in seen[0][1]
    finally:
        proc.kill()
        proc.wait()


def test_wait_ready_gives_up_after_its_budget_and_says_why() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NotReady, match=r"not ready after 0\.5 s \(connection refused\)"):
        wait_ready("127.0.0.1", port, 0.5, interval=0.1)


def test_wait_ready_stops_early_when_told_the_server_died() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    asked: list[str] = []

    def died() -> str:
        asked.append("?")
        return "the server exited: Refusing to run with the root privileges."

    with pytest.raises(NotReady, match="Refusing to run with the root privileges"):
        wait_ready("127.0.0.1", port, 60, interval=0.05, abort_every=0.1, should_abort=died)
    assert len(asked) == 1  # stopped the first time it asked, not at the end of its 60 s


def test_progress_line_on_a_terminal_and_in_a_log() -> None:
    out: list[str] = []
    tty = ProgressLine("gpu: CARLA at 10.0.0.5:2000", out.append, tty=True)
    tty(3.2, "connection refused")
    assert out[-1].startswith("\r") and "waiting    3 s (connection refused)" in out[-1]
    out.clear()
    log = ProgressLine("gpu", out.append, tty=False, every=5)
    for t in (0.0, 1.0, 4.0, 5.5, 7.0, 11.0):
        log(t, "refused")
    assert [line.split(": waiting ")[1].split(" s")[0] for line in out] == ["0", "6", "11"]
