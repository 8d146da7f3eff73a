"""What a deploy reads on this machine before it plans: the package source, a settings file,
the pyinfra host data (with the identity file itself: paramiko misreads our ssh_config's
escapes), and which of a box's addresses answers from here.

No pyinfra import: the deploy child and a plain `pyinfra` deploy file (bench/deploy.py) share it.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from carla_launcher.box.address import address_candidates, pick_address, tcp_reachable
from carla_launcher.box.facts import DEPLOY, BoxFacts, facts_script
from carla_launcher.box.ssh import known_hosts_path, ssh_config_file
from carla_launcher.deploy.package import package_source
from carla_launcher.deploy.plan import LocalInputs
from carla_launcher.errors import InputError
from carla_launcher.profile import Profile
from carla_launcher.server.launch import settings_arg


def local_inputs(profile: Profile) -> LocalInputs:
    """The package source (a local archive must exist) and the CARLA settings file, if any."""
    src = package_source(
        profile.server.package.url, profile.server.package.sha256, profile.base_dir
    )
    size = None
    if src.kind == "local":
        if src.local_path is None or not src.local_path.is_file():
            raise InputError(
                profile.path, None, f"no such local file: {src.local_path}", "server.package.url"
            )
        size = src.local_path.stat().st_size
    settings_text = None
    named = profile.server.settings or settings_arg(profile.server.args)
    if named is not None:
        p = profile.local_path(named)
        if p.is_file():
            settings_text = p.read_text(encoding="utf-8")
        elif profile.server.settings:
            raise InputError(profile.path, None, f"no such file: {p}", "server.settings")
    return LocalInputs(src, size, settings_text, nonce=secrets.token_hex(6))


def facts_script_for(profile: Profile, archive_name: str | None) -> str:
    """The one fact script a deploy runs on each box before it plans."""
    srv = profile.server
    names = (*DEPLOY, "compose") if srv.mode == "compose" else DEPLOY
    if srv.gpus is not None:  # whose processes hold each GPU: one server per free GPU
        names = (*names, "apps", "ps")
    return facts_script(
        names,
        server_user=srv.user,
        session=srv.tmux_session,
        root=srv.package.root,
        packages=srv.os_packages,
        archive=archive_name,
    )


def make_inventory_data(profile: Profile, accept_new_host_key: bool) -> dict[str, Any]:
    """pyinfra host data: our generated ssh_config and the host key policy."""
    data: dict[str, Any] = {
        "ssh_config_file": str(ssh_config_file(profile, accept_new_host_key)),
        "ssh_strict_host_key_checking": "accept-new"
        if (accept_new_host_key or profile.remote.accept_new_host_key)
        else "yes",
        "ssh_connect_retries": 0,
    }
    if profile.remote.known_hosts:
        data["ssh_known_hosts_file"] = known_hosts_path(profile)
    key = _identity_for_pyinfra(profile)
    if key is not None:
        data["ssh_key"] = key
    return data


def _identity_for_pyinfra(profile: Profile) -> str | None:
    """The profile's identity file, handed to pyinfra as it is: paramiko does not undo the
    `%%` and `\\` escapes of our ssh_config, so a path holding `%` or `\\` would not be found
    there. None (left to ssh_config and the agent, as OpenSSH does) for no identity_file, an
    unreadable file, and a key with a passphrase: pyinfra would ask for it on the terminal."""
    if not profile.remote.identity_file:
        return None
    path = profile.local_path(profile.remote.identity_file)
    try:
        text = path.read_bytes()
    except OSError:
        return None
    return None if key_is_encrypted(text) else str(path)


def choose_address(profile: Profile, facts: BoxFacts) -> str | None:
    """The address agents should use, from the box's facts; reachability checked from here."""
    candidates = address_candidates(facts.ssh_connection, facts.interfaces, facts.hostname_i)
    if profile.remote.connector == "local":
        return profile.remote.address or (candidates[0] if candidates else "127.0.0.1")
    conn = facts.ssh_connection.split()
    ssh_port = int(conn[3]) if len(conn) == 4 and conn[3].isdigit() else (profile.remote.port or 22)
    return pick_address(
        profile.remote.address,
        candidates,
        lambda a: tcp_reachable(a, (ssh_port, profile.server.port)),
    )


_OPENSSH_KEY = (b"-----BEGIN OPENSSH PRIVATE KEY-----", b"-----END OPENSSH PRIVATE KEY-----")
_OPENSSH_MAGIC = b"openssh-key-v1\0"


def key_is_encrypted(text: bytes) -> bool:
    """Does this private key file need a passphrase? Pure. PEM says so in its first lines
    (`Proc-Type: 4,ENCRYPTED`, `BEGIN ENCRYPTED PRIVATE KEY`); OpenSSH's own format names its
    cipher after the magic, `none` when there is no passphrase."""
    if b"ENCRYPTED" in text[:200]:
        return True
    begin, end = _OPENSSH_KEY
    if begin not in text:
        return False
    body = text.split(begin, 1)[1].split(end, 1)[0]
    try:
        raw = base64.b64decode(b"".join(body.split()), validate=True)
    except ValueError:
        return False
    head = len(_OPENSSH_MAGIC) + 4
    if not raw.startswith(_OPENSSH_MAGIC) or len(raw) < head:
        return False
    size = int.from_bytes(raw[head - 4 : head], "big")
    return raw[head : head + size] != b"none"
