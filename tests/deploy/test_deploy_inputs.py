"""What the deploy hands pyinfra and the box: the identity file itself (paramiko does not undo
ssh_config's escapes), except a key with a passphrase; and who owns an upload, read by the box's
own shell functions."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from carla_launcher.box.facts import facts_script, parse_facts
from carla_launcher.box.snippets import UPLOADS_FUNCTION
from carla_launcher.deploy.inputs import key_is_encrypted, make_inventory_data
from carla_launcher.profile import Profile, read_profile


def keygen(path: Path, passphrase: str = "", fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = ["-t", "rsa", "-m", fmt] if fmt else ["-t", "ed25519"]
    argv = ["ssh-keygen", "-q", *kind, "-N", passphrase, "-f", str(path)]
    subprocess.run(argv, check=True, capture_output=True)
    return path


def profile_with_key(tmp_path: Path, key: Path | None) -> Profile:
    p = tmp_path / "profiles" / "gpu.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    line = f"  identity_file: {json.dumps(str(key))}\n" if key else ""
    p.write_text(f"remote:\n  host: gpu\n{line}")
    return read_profile(p)


@pytest.mark.parametrize("fmt", [None, "PEM", "PKCS8"])
def test_a_passphrase_is_seen_in_every_key_format(tmp_path: Path, fmt: str | None) -> None:
    plain = keygen(tmp_path / "plain", fmt=fmt).read_bytes()
    locked = keygen(tmp_path / "locked", "secret words", fmt=fmt).read_bytes()
    assert not key_is_encrypted(plain) and key_is_encrypted(locked)


def test_pyinfra_gets_the_identity_file_itself(tmp_path: Path) -> None:
    key = keygen(tmp_path / "keys 100%" / "id %d\\x")
    data = make_inventory_data(profile_with_key(tmp_path, key), False)
    assert data["ssh_key"] == str(key)  # the path as it is, not ssh_config's `%%` and `\\`
    assert "ssh_key" not in make_inventory_data(profile_with_key(tmp_path, None), False)


def test_a_key_with_a_passphrase_is_left_to_ssh_config_and_the_agent(tmp_path: Path) -> None:
    """pyinfra would ask for the passphrase on the terminal; as before, the agent may hold it."""
    locked = keygen(tmp_path / "locked", "secret words")
    assert "ssh_key" not in make_inventory_data(profile_with_key(tmp_path, locked), False)
    missing = tmp_path / "no such key"
    assert "ssh_key" not in make_inventory_data(profile_with_key(tmp_path, missing), False)


def test_the_upload_owner_is_the_process_above_the_shell_that_lives_on(tmp_path: Path) -> None:
    """Run here, the first sshd or python above the facts script is this test's python."""
    script = facts_script(["owner"], server_user="nobody")
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    owner = parse_facts(out).upload_owner
    stat = Path(f"/proc/{os.getpid()}/stat").read_text()
    assert owner == f"{os.getpid()}.{stat.rsplit(')', 1)[1].split()[19]}"


def test_only_uploads_of_deploys_that_are_gone_are_dead(tmp_path: Path) -> None:
    me = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
    names = {
        "live": f"A.tar.gz.upload-{os.getpid()}.{me}.part",  # its owner runs
        "reused": f"A.tar.gz.upload-{os.getpid()}.1.part",  # the pid now names another process
        "gone": "A.tar.gz.upload-4194999.5.part",  # above any pid_max
        "fresh": "A.tar.gz.upload-tbeef.part",  # a token: kept until an idle hour
        "idle": "A.tar.gz.upload-tcafe.part",
        "other": "A.tar.gz.part",  # a download's partial file: not an upload
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    os.utime(tmp_path / names["idle"], (0, 0))
    script = f"DLDIR={tmp_path}\n{UPLOADS_FUNCTION}dead_uploads\n"
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    dead = sorted(Path(line).name for line in out.splitlines())
    assert dead == sorted(names[k] for k in ("reused", "gone", "idle"))
