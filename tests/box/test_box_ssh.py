"""SSH as plain `ssh` does it: the generated ssh_config (pure), OpenSSH command lines, scripts
as data, and a box reached only through a jump host (OpenSSH and pyinfra alike)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from carla_launcher.box import transport
from carla_launcher.box.shell import q
from carla_launcher.box.ssh import (
    RemoteError,
    explain_failure,
    known_hosts_files,
    render_ssh_config,
    ssh_argv,
    ssh_config_file,
)
from carla_launcher.profile import Profile, read_profile
from carla_launcher.server.probe import probe_version
from tests.harness.netns_box import Box


def profile_of(tmp_path: Path, text: str) -> Profile:
    p = tmp_path / "profiles" / "p.yaml"
    p.parent.mkdir(exist_ok=True)
    p.write_text(text)
    return read_profile(p)


def test_config_is_strict_by_default_and_keeps_the_users_own(tmp_path: Path) -> None:
    prof = profile_of(
        tmp_path,
        "remote:\n  host: [gpu-1, gpu-2]\n  user: carla\n  port: 2222\n"
        "  identity_file: keys/id\n  jump: bastion\n  connect_timeout: 4\n",
    )
    text = render_ssh_config(prof, "Host gpu-1\n  HostName 10.0.0.1\n")
    lines = [line.strip() for line in text.splitlines()]
    assert "Host gpu-1 gpu-2" in lines and "User carla" in lines and "Port 2222" in lines
    assert f'IdentityFile "{tmp_path / "keys" / "id"}"' in lines and "ProxyJump bastion" in lines
    assert "StrictHostKeyChecking yes" in lines and "BatchMode yes" in lines
    assert "ConnectTimeout 4" in lines
    assert text.index("Host *") < text.index("HostName 10.0.0.1")  # ours first: first wins
    assert "StrictHostKeyChecking accept-new" in render_ssh_config(
        prof, None, accept_new_host_key=True
    )


def test_fields_left_out_come_from_the_users_config(tmp_path: Path) -> None:
    prof = profile_of(tmp_path, "remote:\n  host: gpu\n  known_hosts: kh\n")
    text = render_ssh_config(prof, None)
    assert "Host gpu" not in text  # nothing to say about the host: ~/.ssh/config decides
    assert f'UserKnownHostsFile "{tmp_path / "kh"}"' in text


def test_paths_reach_openssh_exactly_as_written(tmp_path: Path) -> None:
    """Quoted for ssh_config whatever they hold (spaces, `#`, `%`, a backslash): OpenSSH reads
    back the very path, not a comment, a %-token or an escape."""
    key, known = "keys/my key #1 100%d\\x", "known hosts %h #2"
    prof = profile_of(
        tmp_path,
        f"remote:\n  host: gpu\n  identity_file: {json.dumps(key)}\n"
        f"  known_hosts: {json.dumps(known)}\n",
    )
    done = subprocess.run(
        ["ssh", "-F", str(ssh_config_file(prof)), "-G", "gpu"],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = dict(line.partition(" ")[::2] for line in done.stdout.splitlines())
    assert seen["userknownhostsfile"] == str(tmp_path / known)
    # `ssh -G` shows IdentityFile before its %-tokens are expanded: %% is a literal %
    assert seen["identityfile"] == str(tmp_path / key).replace("%", "%%")
    assert seen["controlpath"].startswith(tempfile.gettempdir() + "/carla-launch-ssh-")


def test_the_known_hosts_in_effect_are_those_ssh_would_read(tmp_path: Path) -> None:
    """Their digest names the shared connection: the files a user's config names count too."""
    config = 'Host gpu\n  UserKnownHostsFile ~/kh "/a b/kh" %d/x\nGlobalKnownHostsFile=/etc/kh\n'
    files = known_hosts_files(None, config, Path("/home/me"), "me")
    assert files[:3] == ["/home/me/kh", "/a b/kh", "/home/me/x"]
    assert "/home/me/.ssh/known_hosts" in files and "/etc/kh" in files
    assert known_hosts_files("/p/kh", config, Path("/home/me"), "me")[0] == "/p/kh"
    assert "/home/me/kh" not in known_hosts_files("/p/kh", config, Path("/home/me"), "me")


def test_ssh_argv_shapes(tmp_path: Path) -> None:
    prof = profile_of(tmp_path, "remote:\n  host: gpu\n")
    argv = ssh_argv(prof, tty=True, command="tmux attach -r -t carla")
    assert argv[0] == "ssh" and argv[1] == "-F" and Path(argv[2]).is_file()
    assert argv[3:] == ["-t", "--", "gpu", "tmux attach -r -t carla"]
    assert ssh_argv(prof, "other")[-2:] == ["--", "other"]
    local = profile_of(tmp_path, "remote:\n  connector: local\n")
    assert ssh_argv(local, command="echo hi") == ["/bin/sh", "-c", "echo hi"]


def test_scripts_carry_values_as_data(tmp_path: Path) -> None:
    local = profile_of(tmp_path, "remote:\n  connector: local\n")
    canary = tmp_path / "pwned"
    value = f"a b; touch {canary} 'q' \"d\" $(touch {canary}) `touch {canary}`"
    r = transport.run(local, None, f"printf '%s' {q(value)}", timeout=10)
    assert (r.rc, r.stdout) == (0, value) and not canary.exists()


def test_errors_are_one_line_that_says_what_to_do(tmp_path: Path) -> None:
    prof = profile_of(tmp_path, "remote:\n  host: gpu\n  connect_timeout: 3\n")
    key = explain_failure(
        prof,
        "gpu",
        "No ED25519 host key is known for gpu and you have "
        "requested strict checking.\nHost key verification failed.\n",
    )
    assert key.startswith("gpu: the box's host key is not in ") and "--accept-new-host-key" in key
    late = explain_failure(prof, "gpu", "ssh: connect to host gpu port 22: Connection timed out")
    assert late == (
        "gpu: no SSH connection within 3 s (ssh: connect to host gpu port 22: Connection timed out)"
    )
    local = profile_of(tmp_path, "remote:\n  connector: local\n")
    with pytest.raises(RemoteError, match=r"^localhost: it broke$"):
        transport.check(local, None, "echo 'carla-launch: error: it broke' >&2; exit 1", timeout=10)


@pytest.mark.root
def test_a_box_behind_a_jump_host(box: Box) -> None:
    """The box's sshd on its own loopback, reachable only through the jump host."""
    inner = box.add_inner_sshd()
    box.write_profile(remote={"host": inner, "jump": box.alias})
    direct = subprocess.run(
        [
            "ssh",
            "-F",
            str(box.ssh_config),
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=3",
            inner,
            "true",
        ],
        capture_output=True,
        check=False,
    )
    assert direct.returncode == 255  # 127.0.0.1:2222 here is not the box: only the jump gets there
    addr = box.cli("address", str(box.profile_path))
    assert (addr.returncode, addr.stdout) == (0, f"{box.address}\n"), addr.stderr
    box.install_standin()
    done = box.deploy("--json")
    host = json.loads(done.stdout)["hosts"][0]
    assert host["facts"]["ssh_connection"].split()[2] == "127.0.0.1"
    assert host["address"] == box.address  # loopback is never what agents get
    assert probe_version(box.address, 2000) == "0.9.15"
    status = box.cli("server", "status", str(box.profile_path))
    assert status.returncode == 0 and "running on port 2000" in status.stdout


@pytest.mark.root
def test_keys_from_ssh_agent_work_for_pyinfra_and_openssh(
    box: Box, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No IdentityFile anywhere: the key is only in an ssh-agent, as on a developer laptop."""
    config = tmp_path / "agent_ssh_config"
    config.write_text(
        f"Host {box.alias}\n  HostName {box.address}\n  User root\n"
        f"  UserKnownHostsFile {box.known_hosts}\n"
    )
    box.write_profile(remote={"ssh_config": str(config)})
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        subprocess.run(["ssh-add", "-q", str(box.identity)], env=env, check=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))  # inherited by the CLI processes
        addr = box.cli("address", str(box.profile_path))
        assert (addr.returncode, addr.stdout) == (0, f"{box.address}\n"), addr.stderr
        box.preinstall()
        assert "ready at" in box.deploy().stdout
    finally:
        agent.kill()
        agent.wait()
