"""SSH failures: told apart from ssh's (and paramiko's) own words, explained in one line with
the fix (`box/explain.py`)."""

from __future__ import annotations

import pytest

from carla_launcher.box.explain import SshOutcome, classify, explain, fix


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("Host key verification failed.\r\n", "host-key"),
        (
            "No ED25519 host key is known for [10.77.0.2]:22 and you have requested strict "
            "checking.\n"
            "Host key verification failed.\n",
            "host-key",
        ),
        (
            "@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n",
            "host-key-changed",
        ),
        ("ssh: Could not resolve hostname gpu-box: Name or service not known\n", "dns"),
        ("ssh: connect to host 10.77.0.2 port 22: Connection refused\n", "refused"),
        ("ssh: connect to host 10.77.9.2 port 22: Connection timed out\n", "timeout"),
        ("ssh: connect to host 10.9.9.9 port 22: No route to host\n", "unreachable"),
        ("carla@10.77.0.2: Permission denied (publickey).\n", "auth"),
        ("kex_exchange_identification: read: Connection reset by peer\n", "other"),
    ],
)
def test_ssh_failures(stderr: str, kind: str) -> None:
    o = classify(255, stderr)
    assert o.kind == kind and o.line


def test_ssh_success_and_a_new_key() -> None:
    assert classify(0, "") == SshOutcome("ok")
    o = classify(
        3, "Warning: Permanently added '10.77.0.2' (ED25519) to the list of known hosts.\r\n"
    )
    assert o.kind == "ok" and o.new_key  # exit 3 is the remote script's, not ssh's


def test_paramiko_wording_is_classified_too() -> None:
    assert classify(None, "Authentication failed.").kind == "auth"
    assert classify(None, "Host key for server 'gpu' does not match: got 'X'").kind == (
        "host-key-changed"
    )
    assert classify(None, "No host key for server gpu").kind == "host-key"


def test_one_line_with_the_fix() -> None:
    changed = explain(255, "@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\n", "gpu")
    assert changed.startswith("gpu: the box's host key CHANGED since it was stored in ")
    assert "ssh-keygen -R gpu" in changed
    auth = explain(255, "carla@gpu: Permission denied (publickey).", "gpu", with_host=False)
    assert auth.startswith("SSH login refused (carla@gpu: Permission denied (publickey).); ")
    assert "ssh-copy-id gpu" in auth
    refused = explain(255, "ssh: connect to host gpu port 22: Connection refused", "gpu")
    assert refused == "gpu: ssh: connect to host gpu port 22: Connection refused"
    assert "sshd" in fix("refused", "gpu") and "remote.accept_new_host_key" in fix("host-key", "g")
