"""Profiles: typed and validated; every mistake is one line naming file, line and field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from carla_launcher.errors import InputError
from carla_launcher.profile import (
    DEFAULT_OS_PACKAGES,
    ComposeSettings,
    Package,
    Remote,
    Server,
    Slurm,
    find_profile,
    load_profile,
    parse_profile,
    read_profile,
)
from carla_launcher.profile.fields import COMPOSE, PACKAGE, REMOTE, SERVER, SLURM, Section

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "box") -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir(exist_ok=True)
    p = folder / f"{name}.yaml"
    p.write_text(text)
    return p


def error_of(path: Path) -> str:
    with pytest.raises(InputError) as e:
        read_profile(path)
    text = str(e.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("name", ["default", "gpu-box", "jump-host", "local"])
def test_shipped_examples_load(name: str) -> None:
    p = read_profile(REPO / "profiles" / f"{name}.yaml")
    assert p.remote.hosts and p.server.port == 2000


def test_example_kinds() -> None:
    jump = read_profile(REPO / "profiles" / "jump-host.yaml")
    assert jump.remote.jump == "alice@login.cluster.example.org"
    local = read_profile(REPO / "profiles" / "local.yaml")
    assert local.remote.connector == "local" and local.remote.hosts == ("localhost",)


def test_defaults_and_new_fields(tmp_path: Path) -> None:
    p = read_profile(write(tmp_path, "remote:\n  host: gpu\n"))
    assert p.remote.accept_new_host_key is False  # strict host keys unless said otherwise
    assert p.remote.connect_timeout == 10
    assert p.remote.tunnel is False  # agents use the address unless the profile says so
    assert p.server.os_packages == DEFAULT_OS_PACKAGES
    assert p.server.ready_timeout == 300 and p.server.user == "carla"
    full = read_profile(
        write(
            tmp_path,
            """\
remote:
  host: [gpu-1, gpu-2]
  ssh_config: conf/ssh_config
  known_hosts: ~/kh
  connect_timeout: 3
  accept_new_host_key: true
  tunnel: auto
server:
  os_packages: [tmux, curl]
  ready_timeout: 20
  gpu: 1
compose:
  file: build/docker-compose.yaml
""",
        )
    )
    assert full.remote.hosts == ("gpu-1", "gpu-2")
    assert full.local_path(full.remote.ssh_config) == tmp_path / "conf" / "ssh_config"
    assert full.server.os_packages == ("tmux", "curl") and full.server.gpu == 1
    assert full.compose.file == "build/docker-compose.yaml"
    assert full.remote.tunnel == "auto"
    assert p.compose.address == "literal" and not p.compose.env_mode


def test_address_and_address_mode(tmp_path: Path) -> None:
    p = read_profile(
        write(tmp_path, "remote:\n  host: gpu\n  address: fd00::5\ncompose:\n  address: env\n")
    )
    assert p.remote.address == "fd00::5" and p.compose.env_mode


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("remote:\n  host: gpu\n  colour: red\n", 3, "remote.colour", "unknown field"),
        ("remote:\n  host: gpu\n  user: 'a b'\n", 3, "remote.user", "not a user name"),
        ("remote:\n  host: gpu\n  connect_timeout: 0\n", 3, "remote.connect_timeout", "between"),
        ("remote:\n  host: gpu\n  jump: '-oProxyCommand=x'\n", 3, "remote.jump", "jump host"),
        ("remote:\n  host: gpu\nserver:\n  port: 65534\n", 4, "server.port", "port+2"),
        ("remote:\n  host: gpu\nserver:\n  user: root\n", 4, "server.user", "non-root"),
        (
            "remote:\n  host: gpu\nserver:\n  tmux_session: 'a:b'\n",
            4,
            "server.tmux_session",
            "letters",
        ),
        (  # the session of server 1 of a profile whose session is carla (server.gpus)
            "remote:\n  host: gpu\nserver:\n  tmux_session: carla-1\n",
            4,
            "server.tmux_session",
            "not ending in '-' and digits (NAME-K is the session of server K of session NAME)",
        ),
        ("remote:\n  host: gpu\nserver:\n  restart: sometimes\n", 4, "server.restart", "one of"),
        (
            "remote:\n  host: gpu\nserver:\n  package:\n    sha256: abc\n",
            5,
            "server.package.sha256",
            "64 hex",
        ),
        (
            "remote:\n  host: gpu\nserver:\n  package:\n    url: 'ftp://x/y.tar'\n",
            5,
            "server.package.url",
            "http",
        ),
        (
            "remote:\n  host: gpu\nserver:\n  os_packages:\n    - tmux\n    - 'rm -rf'\n",
            6,
            "server.os_packages[1]",
            "package name",
        ),
        ("remote:\n  host: gpu\nserver:\n  args: [-nosound, [x]]\n", 4, "server.args[1]", "text"),
        (
            "remote:\n  host: gpu\nserver:\n  ready_timeout: 0\n",
            4,
            "server.ready_timeout",
            "at least",
        ),
        ("remote:\n  user: carla\n", 1, "remote.host", "required"),
        ("remote:\n  host: gpu\n  address: '$(id)'\n", 3, "remote.address", "not an address"),
        ("remote:\n  host: gpu\n  address: '10.0.0.5:2000'\n", 3, "remote.address", "port"),
        ("remote:\n  host: gpu\n  address: '-oProxyCommand=x'\n", 3, "remote.address", "option"),
        ("remote:\n  host: gpu\n  address: ''\n", 3, "remote.address", "null"),
        ("remote:\n  host: gpu\ncompose:\n  address: envs\n", 4, "compose.address", "literal, env"),
        ("remote:\n  host: gpu\n  tunnel: yes\n", 3, "remote.tunnel", "true, false or auto"),
        ("remote:\n  host: gpu\n  tunnel: 1\n", 3, "remote.tunnel", "true, false or auto"),
        (
            "remote:\n  connector: local\n  tunnel: true\n",
            3,
            "remote.tunnel",
            "nothing to tunnel to",
        ),
    ],
)
def test_errors_name_file_line_field(
    tmp_path: Path, text: str, line: int, field: str, words: str
) -> None:
    path = write(tmp_path, text)
    msg = error_of(path)
    assert f"box.yaml:{line}: {field}: " in msg, msg
    assert words in msg


PATHS = [
    ("remote", "identity_file"),
    ("remote", "known_hosts"),
    ("remote", "ssh_config"),
    ("server", "settings"),
    ("server.package", "root"),
    ("server.package", "url"),
]


def _nested(where: str, key: str, value: str) -> str:
    """`remote: {host: gpu}` plus `where.key: value` as YAML (value JSON-quoted: \\n stays)."""
    parts = where.split(".")
    lines = ["remote:", "  host: gpu"]
    if parts[0] != "remote":
        lines.append(f"{parts[0]}:")
    for depth, part in enumerate(parts[1:], 1):
        lines.append("  " * depth + f"{part}:")
    lines.append("  " * len(parts) + f"{key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("where", "key"), PATHS)
@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("/tmp/id\nProxyCommand touch /tmp/x", "a newline"),
        ('/tmp/id" ProxyCommand="touch /tmp/x', "a quote"),
        ("/tmp/it's", "a quote"),
        ("/tmp/id\x1b[2J", "a control character ('\\x1b')"),
        ("/tmp/id\tx", "a tab"),
        ("/tmp/id\x7f", "a control character ('\\x7f')"),
    ],
)
def test_a_quote_or_control_character_in_a_path_is_refused(
    tmp_path: Path, where: str, key: str, value: str, what: str
) -> None:
    text = _nested(where, key, value)
    msg = error_of(write(tmp_path, text))
    line = len(text.splitlines())
    assert f"box.yaml:{line}: {where}.{key}: {what} in a path is refused" in msg, msg
    assert msg.isprintable()  # the value is shown escaped: nothing reaches the terminal raw


def test_a_file_url_is_refused_the_local_path_is_what_uploads(tmp_path: Path) -> None:
    text = "remote:\n  host: gpu\nserver:\n  package:\n    url: file:///etc/shadow\n"
    msg = error_of(write(tmp_path, text))
    assert msg.endswith(
        "box.yaml:5: server.package.url: file:// URLs are not supported: name the local path "
        "instead (it is uploaded)"
    ), msg
    ok = "remote:\n  host: gpu\nserver:\n  package:\n    url: ~/Downloads/carla.tar.gz\n"
    assert read_profile(write(tmp_path, ok)).server.package.url == "~/Downloads/carla.tar.gz"


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("remote:\n  host: [gpu-1, 'gpu 2']\n", 2, "remote.host[1]", "a space is refused"),
        ("remote:\n  host:\n    - gpu-1\n    - [x]\n", 4, "remote.host[1]", "must be text"),
        ('remote:\n  host: "gpu\\nx"\n', 2, "remote.host", "a newline is refused"),
        ("remote:\n  host: '-oProxyCommand=x'\n", 2, "remote.host", "a leading '-'"),
        ("remote:\n  host: gpu\n  jump: 'a\\b'\n", 3, "remote.jump", "a backslash"),
        ('remote:\n  host: gpu\n  user: "me\\n"\n', 3, "remote.user", "not a user name"),
    ],
)
def test_hosts_users_and_jump_hosts_are_single_words(
    tmp_path: Path, text: str, line: int, field: str, words: str
) -> None:
    msg = error_of(write(tmp_path, text))
    assert f"box.yaml:{line}: {field}: " in msg and words in msg, msg


def test_the_objects_have_exactly_the_fields_of_the_table() -> None:
    """The table in fields.py is the one list of fields: the loader, the schema and `init`
    read it, and the typed objects hold one attribute per field (no default of their own)."""

    def keys(section: Section) -> set[str]:
        return {f.key for f in section.fields}

    def attrs(cls: type) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    assert attrs(Remote) == keys(REMOTE) - {"host"} | {"hosts"}
    assert attrs(Server) == keys(SERVER) and attrs(Package) == keys(PACKAGE)
    assert attrs(Slurm) == keys(SLURM)
    assert attrs(ComposeSettings) == keys(COMPOSE)
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(Server))


def test_values_with_spaces_quotes_semicolons_are_kept_as_data(tmp_path: Path) -> None:
    p = read_profile(
        write(
            tmp_path,
            """\
remote:
  host: gpu
server:
  args: ["-foo=a b; touch /tmp/x", "it's", '"quoted"']
  package:
    root: "~/CARLA dir; echo hi"
""",
        )
    )
    assert p.server.args == ("-foo=a b; touch /tmp/x", "it's", '"quoted"')
    assert p.server.package.root == "~/CARLA dir; echo hi"


def test_find_profile_by_name_from_a_subfolder(tmp_path: Path) -> None:
    write(tmp_path, "remote:\n  host: gpu\n", name="gpu-box")
    sub = tmp_path / "build" / "deep"
    sub.mkdir(parents=True)
    assert find_profile("gpu-box", sub) == tmp_path / "profiles" / "gpu-box.yaml"
    assert load_profile("gpu-box", sub).name == "gpu-box"
    with pytest.raises(InputError) as e:
        find_profile("nope", sub)
    assert "gpu-box" in str(e.value)


def test_no_profile_named_means_the_only_one_else_default_else_a_list(tmp_path: Path) -> None:
    """One rule for every command given no profile."""
    with pytest.raises(InputError) as e:
        find_profile(None, tmp_path)
    assert "`carla-launch init` writes one" in str(e.value)
    (tmp_path / "profiles").mkdir()
    with pytest.raises(InputError) as e:
        find_profile(None, tmp_path)
    assert "no profiles: write one with `carla-launch init`" in str(e.value)
    only = write(tmp_path, "remote:\n  host: gpu\n", name="gpu-box")
    (tmp_path / "profiles" / "profile.schema.json").write_text("{}")  # not a profile
    assert find_profile(None, tmp_path) == only
    write(tmp_path, "remote:\n  host: gpu\n", name="lab")
    with pytest.raises(InputError) as e:
        find_profile(None, tmp_path)
    assert str(e.value).endswith(
        "profiles: 2 profiles, none named default: name one (profiles here: gpu-box, lab)"
    )
    default = tmp_path / "profiles" / "default.yml"
    default.write_text("remote:\n  host: gpu\n")
    assert find_profile(None, tmp_path) == default


def test_text_parses_without_a_file_and_errors_name_the_given_path(tmp_path: Path) -> None:
    """`init` validates what it is about to write: no file exists yet."""
    target = tmp_path / "profiles" / "new.yaml"
    p = parse_profile("remote:\n  host: gpu\n", target)
    assert p.name == "new" and p.path == target and p.base_dir == tmp_path
    assert not target.exists()
    with pytest.raises(InputError) as e:
        parse_profile("remote:\n  host: gpu\n  port: 0\n", target)
    assert "new.yaml:3: remote.port: " in str(e.value)
