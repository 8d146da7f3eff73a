"""Values that reach ssh_config stay data: a `ProxyCommand` smuggled through a profile is refused
at load by the real CLI and nothing is written or run; the folder of the shared connections'
sockets is private or refused; a changed known_hosts is checked before an open connection is
reused (a real sshd in a network namespace)."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from carla_launcher.box.ssh import control_dir, render_ssh_config, ssh_config_file
from carla_launcher.errors import LauncherError
from carla_launcher.profile import read_profile
from carla_launcher.state import state_dir
from tests.harness.cli import child
from tests.harness.netns_box import Box

# What a hostile or careless profile might hold: the smuggled line runs `touch CANARY`
SMUGGLED = [
    "{path}\nProxyCommand touch {canary}",  # a newline
    '{path}"\nProxyCommand touch {canary} "',  # a quote and a newline
    '{path}" ProxyCommand="touch {canary}',  # a quote alone
    "{path}\rProxyCommand touch {canary}",  # a carriage return
]


def _profile(tmp_path: Path, remote: dict[str, object]) -> Path:
    """profiles/p.yaml: a box on loopback where nothing listens (host on line 2, port on line 3,
    other fields from line 4), with `remote` merged in. JSON strings are YAML double-quoted
    strings, so "\\n" is a newline in the value."""
    fields = {"host": "127.0.0.1", "port": 9, **remote}
    lines = ["remote:", *(f"  {k}: {json.dumps(v)}" for k, v in fields.items())]
    p = tmp_path / "profiles" / "p.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(lines) + "\n")
    return p


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("template", SMUGGLED)
@pytest.mark.parametrize("field", ["identity_file", "known_hosts", "ssh_config"])
def test_a_proxycommand_smuggled_through_a_path_is_refused_at_load(
    tmp_path: Path, field: str, template: str
) -> None:
    canary = tmp_path / "pwned"
    _profile(tmp_path, {field: template.format(path=tmp_path / "id", canary=canary)})
    for command in (("address", "p"), ("status", "p")):
        done = child(*command, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        line = _one_line(done.stderr)
        assert f"profiles/p.yaml:4: remote.{field}: " in line, line
        assert "in a path is refused" in line
    assert not canary.exists()
    assert not (state_dir() / "ssh").exists()  # no ssh_config was generated


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("host", "gpu\nProxyCommand touch {canary}", "not a host name"),
        ("host", "-oProxyCommand=touch {canary}", "a leading '-'"),
        ("host", 'gpu"', "a quote"),
        ("jump", "bastion\nProxyCommand touch {canary}", "a newline"),
        ("jump", "-oProxyCommand=touch {canary}", "not an ssh jump host"),
        ("jump", "bastion proxy", "a space"),
        ("user", "carla\nProxyCommand touch {canary}", "not a user name"),
        ("user", "-carla", "not a user name"),
    ],
)
def test_hosts_users_and_jump_hosts_are_one_word_of_data(
    tmp_path: Path, field: str, value: str, words: str
) -> None:
    canary = tmp_path / "pwned"
    _profile(tmp_path, {field: value.format(canary=canary)})
    done = child("address", "p", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    where = 2 if field == "host" else 4
    assert f"profiles/p.yaml:{where}: remote.{field}: " in line and words in line, line
    assert not canary.exists() and not (state_dir() / "ssh").exists()


def test_ssh_config_refuses_what_it_cannot_quote_even_past_the_loader(tmp_path: Path) -> None:
    """A profile made in code (not loaded) with a newline in a path still never reaches ssh."""
    prof = read_profile(_profile(tmp_path, {}))
    bad = dataclasses.replace(prof.remote, identity_file="/tmp/id\nProxyCommand touch x")
    with pytest.raises(LauncherError, match="control character"):
        render_ssh_config(dataclasses.replace(prof, remote=bad), None)


def test_a_profile_file_name_cannot_end_a_comment_line(tmp_path: Path) -> None:
    """The profile's and the user config's names go into comment lines of the ssh_config."""
    folder = tmp_path / "x\nProxyCommand touch pwned"
    prof = read_profile(_profile(folder, {}))
    text = render_ssh_config(prof, "Host gpu\n", "conf\nProxyCommand touch pwned")
    assert text.count("ProxyCommand touch pwned") == 2  # both names kept, readable ...
    lines = [line for line in text.splitlines() if line]
    assert all(line.startswith(("#", "Host", "  ")) for line in lines)  # ... in comments


def test_the_control_folder_is_made_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    d = control_dir()
    assert d == tmp_path / f"carla-launch-ssh-{os.getuid()}"
    assert d.stat().st_mode & 0o777 == 0o700 and d.stat().st_uid == os.getuid()
    assert control_dir() == d  # and used again


def _nobody() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        pytest.param("nobody", "belongs to uid", marks=pytest.mark.root),
        ("open", "others may use it (mode 777)"),
        ("link", "is not a folder"),
    ],
)
def test_a_control_folder_others_can_use_is_refused(tmp_path: Path, setup: str, words: str) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    d = tmpdir / f"carla-launch-ssh-{os.getuid()}"
    if setup == "nobody":
        if os.geteuid() != 0:
            pytest.skip("needs root to give a folder to another user (chown)")
        d.mkdir(mode=0o700)
        os.chown(d, *_nobody())
    elif setup == "open":
        d.mkdir()
        d.chmod(0o777)
    else:
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        d.symlink_to(tmp_path / "elsewhere")
    _profile(tmp_path, {})
    done = child("address", "p", cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmpdir)})
    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    assert f"{d}: {words}" in line and "remove it" in line, line
    assert not (state_dir() / "ssh").exists()  # refused before any ssh_config or socket


@pytest.mark.root
def test_a_changed_host_key_is_checked_before_an_open_connection_is_reused(
    box: Box, tmp_path: Path
) -> None:
    first = box.cli("address", str(box.profile_path))
    assert (first.returncode, first.stdout) == (0, f"{box.address}\n"), first.stderr
    conf = ssh_config_file(read_profile(box.profile_path))
    check = subprocess.run(
        ["ssh", "-F", str(conf), "-O", "check", box.alias], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr  # the shared connection is open, and would serve
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    box.known_hosts.write_text(f"{box.address} {wrong}\n")  # someone else's key for the box
    again = box.cli("address", str(box.profile_path))
    assert again.returncode == 1, again.stdout
    line = _one_line(again.stderr)
    assert f"{box.alias}: the box's host key CHANGED since it was stored in" in line, line
