"""The local session on a real tmux server (private socket), read back with capture-pane."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import libtmux
import pytest

from carla_launcher import session as sess
from tests.harness.polling import wait_for

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@pytest.fixture
def tmux(monkeypatch: pytest.MonkeyPatch):
    name = f"cl-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(sess.SOCKET_ENV, name)
    server = sess.tmux_server()
    yield server
    if server.is_alive():
        server.kill()


def text(server: libtmux.Server, name: str, role: str) -> str:
    session = sess.find_session(server, name)
    pane_id = sess.pane_states(session)[role]["pane_id"]
    return "\n".join(server.panes.get(pane_id=pane_id).capture_pane(start="-", end="-"))


def test_two_panes_show_their_output_and_keep_it_after_exit(tmux, tmp_path: Path) -> None:
    panes = sess.layout(
        ["sh", "-c", "echo 'carla: listening on 2000'; sleep 30"],
        ["sh", "-c", "echo agent connected to $CARLA_TEST_ADDR; exit 3"],
        tmp_path,
        env={"CARLA_TEST_ADDR": "10.77.0.2"},
    )
    result = sess.ensure_session(tmux, "carla-box", panes)
    assert result.created == ["server", "agent"]
    wait_for(lambda: "listening on 2000" in text(tmux, "carla-box", "server"))
    agent = wait_for(lambda: (t := text(tmux, "carla-box", "agent")) and "ended" in t and t)
    assert "agent connected to 10.77.0.2" in agent
    assert "[sh ended: exit status 3]" in agent  # remain-on-exit: the pane keeps it and says why
    states = wait_for(
        lambda: (
            (s := sess.pane_states(sess.find_session(tmux, "carla-box")))["agent"]["alive"] is False
            and s
        )
    )
    assert states["server"]["alive"]
    window = sess.find_session(tmux, "carla-box").active_window
    assert len(window.panes) == 2


def test_ensuring_again_keeps_running_panes_and_restarts_dead_ones(tmux, tmp_path: Path) -> None:
    panes = sess.layout(
        ["sh", "-c", "echo server; sleep 30"], ["sh", "-c", "echo run-1; exit 0"], tmp_path
    )
    sess.ensure_session(tmux, "carla-box", panes)
    server_pid = wait_for(
        lambda: sess.pane_states(sess.find_session(tmux, "carla-box"))["server"]["pid"]
    )
    wait_for(lambda: not sess.pane_states(sess.find_session(tmux, "carla-box"))["agent"]["alive"])
    again = sess.layout(
        ["sh", "-c", "echo server; sleep 30"],
        ["sh", "-c", "echo run-2; sleep 30"],
        tmp_path,
        gpu_argv=["sh", "-c", "echo gpu-watch; sleep 30"],
    )
    result = sess.ensure_session(tmux, "carla-box", again)
    assert result.kept == ["server"] and result.respawned == ["agent"] and result.created == ["gpu"]
    states = sess.pane_states(sess.find_session(tmux, "carla-box"))
    assert states["server"]["pid"] == server_pid
    wait_for(lambda: "run-2" in text(tmux, "carla-box", "agent"))
    wait_for(lambda: "gpu-watch" in text(tmux, "carla-box", "gpu"))
    third = sess.ensure_session(tmux, "carla-box", again)
    assert not third.changed and sorted(third.kept) == ["agent", "gpu", "server"]


def test_attach_uses_switch_client_inside_tmux(tmux, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TMUX", raising=False)
    assert sess.attach_argv(tmux, "carla-box")[-3:] == ["attach-session", "-t", "carla-box"]
    monkeypatch.setenv("TMUX", "/tmp/x,1,0")
    assert sess.attach_argv(tmux, "carla-box")[-3:] == ["switch-client", "-t", "carla-box"]
    assert sess.attach_argv(tmux, "carla-box")[:3] == ["tmux", "-L", tmux.socket_name]


def test_a_window_per_pair_each_kept_on_its_own(tmux, tmp_path: Path) -> None:
    """Several servers: a window each (server beside agent); a window's panes are kept or
    restarted without touching another window's; one window closes alone."""
    for n in (0, 1):
        panes = sess.layout(
            ["sh", "-c", f"echo server-{n}; sleep 30"],
            ["sh", "-c", f"echo agent-{n}; sleep 30"],
            tmp_path,
        )
        made = sess.ensure_session(tmux, "carla-box", panes, window=f"box-{n}")
        assert made.created == ["server", "agent"]
    found = sess.find_session(tmux, "carla-box")
    windows = sess.window_states(found)
    assert list(windows) == ["box-0", "box-1"]
    assert all(set(w) == {"server", "agent"} for w in windows.values())
    assert found.active_window.window_name == "box-0"  # attach opens on the first pair
    first_agent = windows["box-0"]["agent"]["pid"]
    again = sess.layout(["sh", "-c", "sleep 30"], ["sh", "-c", "echo agent-1b; sleep 30"], tmp_path)
    redone = sess.ensure_session(tmux, "carla-box", again, restart={"agent"}, window="box-1")
    assert redone.respawned == ["agent"] and redone.kept == ["server"]
    assert sess.pane_states(found, "box-0")["agent"]["pid"] == first_agent  # untouched
    assert sess.kill_window(tmux, "carla-box", "box-1")
    assert list(sess.window_states(sess.find_session(tmux, "carla-box"))) == ["box-0"]
    assert not sess.kill_window(tmux, "carla-box", "box-1")


def test_a_pane_of_a_role_asked_closed_goes_and_the_server_pane_stays_active(
    tmux, tmp_path: Path
) -> None:
    """An earlier `up`'s SSH tunnel pane closes when its agent no longer needs it; the others
    are kept, and attach still opens on the server's pane."""
    panes = sess.layout(
        ["sh", "-c", "echo server; sleep 30"],
        ["sh", "-c", "echo agent; sleep 30"],
        tmp_path,
        tunnel_argv=["sh", "-c", "echo tunnel; sleep 30"],
    )
    made = sess.ensure_session(tmux, "carla-box", panes, window="box-0")
    assert made.created == ["server", "agent", "tunnel"]
    active = sess.find_session(tmux, "carla-box").active_window.active_pane
    assert active is not None and sess._role(active) == "server"
    without = panes[:2]
    closed = sess.ensure_session(tmux, "carla-box", without, window="box-0", close={"tunnel"})
    assert closed.closed == ["tunnel"] and sorted(closed.kept) == ["agent", "server"]
    assert set(sess.pane_states(sess.find_session(tmux, "carla-box"))) == {"server", "agent"}
    again = sess.ensure_session(tmux, "carla-box", without, window="box-0", close={"tunnel"})
    assert not again.changed
