"""Why an SSH connection failed, in ssh's words, and what to do about it: one table. Pure.

OpenSSH exits 255 for its own failures (any other code is the remote command's); pyinfra
(paramiko) reports its failures as an exception text with other wording, so the patterns hold
both. `classify` names the kind, `fix` says what to do, `explain` makes the one line a command
prints (`deploy`, `server`, `address`); `doctor` shows the kind as a check with the same fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

SshKind = Literal[
    "ok",
    "host-key",
    "host-key-changed",
    "dns",
    "refused",
    "timeout",
    "unreachable",
    "auth",
    "other",
]

#: OpenSSH's chatter that never explains a failure.
_NOISE = ("Warning: Permanently added", "Pseudo-terminal will not be allocated", "@@@")

#: Needles in ssh's (or paramiko's) output, first match wins.
_PATTERNS: tuple[tuple[str, SshKind], ...] = (
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "host-key-changed"),
    ("does not match", "host-key-changed"),  # paramiko's BadHostKeyException
    ("Host key verification failed", "host-key"),
    ("host key is known for", "host-key"),
    ("No host key", "host-key"),  # paramiko
    ("Could not resolve hostname", "dns"),
    ("Connection refused", "refused"),
    ("timed out", "timeout"),
    ("No route to host", "unreachable"),
    ("Network is unreachable", "unreachable"),
    ("Permission denied", "auth"),
    ("Too many authentication failures", "auth"),
    ("Authentication", "auth"),  # paramiko
)

#: What to do, per kind ({host}: the box as the profile names it).
FIXES: dict[SshKind, str] = {
    "host-key-changed": (
        "if the box was reinstalled, remove the old key (ssh-keygen -R {host}) and check the new "
        "fingerprint; else do not connect: someone may be in between"
    ),
    "host-key": (
        "check it and add it (ssh-keyscan), or accept it once with `carla-launch address "
        "--accept-new-host-key` (or deploy's), or set remote.accept_new_host_key: true"
    ),
    "auth": (
        "check remote.user, remote.identity_file or your ssh-agent, or put your public key on "
        "the box: `ssh-copy-id {host}`"
    ),
    "dns": "check the host name (or its ~/.ssh/config alias) in the profile",
    "refused": "sshd is not listening there: check remote.port and that the box runs sshd",
    "timeout": (
        "the box does not answer: is it on, on this network (VPN?), behind a jump host "
        "(remote.jump)?"
    ),
    "unreachable": "no route to the box: check the network or VPN",
    "other": "run the same `ssh` by hand with -v to see why",
    "ok": "",
}


@dataclass(frozen=True)
class SshOutcome:
    kind: SshKind
    line: str = ""  # ssh's own words, one line
    new_key: bool = False  # accept-new added the box's key on this run


def classify(rc: int | None, stderr: str) -> SshOutcome:
    """What an ssh run says about the connection. `rc` None: a connection error text (pyinfra).
    Host-key problems are told apart from an unreachable box."""
    new_key = "Permanently added" in stderr
    if rc is not None and rc != 255:
        return SshOutcome("ok", new_key=new_key)
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith(_NOISE)]
    for needle, kind in _PATTERNS:
        for ln in lines:
            if needle in ln:
                return SshOutcome(kind, ln, new_key)
    return SshOutcome(
        "other", lines[-1] if lines else "ssh failed (exit 255) without a message", new_key
    )


def fix(kind: SshKind, host: str) -> str:
    """What to do about a failure of this kind."""
    return FIXES[kind].format(host=host)


def explain(
    rc: int | None,
    stderr: str,
    host: str,
    *,
    known_hosts: Callable[[], str] = lambda: "~/.ssh/known_hosts",
    connect_timeout: float | None = None,
    with_host: bool = True,
) -> str:
    """ssh's complaint as one line that says what to do. `known_hosts` is asked only when a
    host key is the problem (finding the file OpenSSH really uses costs an `ssh -G`)."""
    o = classify(rc, stderr)
    prefix = f"{host}: " if with_host else ""
    what = o.line
    if o.kind == "host-key-changed":
        what = f"the box's host key CHANGED since it was stored in {known_hosts()}; "
        what += fix(o.kind, host)
    elif o.kind == "host-key":
        what = f"the box's host key is not in {known_hosts()} (unknown hosts are refused); "
        what += fix(o.kind, host)
    elif o.kind == "timeout" and connect_timeout is not None:
        what = f"no SSH connection within {connect_timeout:g} s ({o.line})"
    elif o.kind == "auth":
        what = f"SSH login refused ({o.line}); {fix(o.kind, host)}"
    return f"{prefix}{what or 'ssh failed'}"
