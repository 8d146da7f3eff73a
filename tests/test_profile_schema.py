"""The profile's JSON Schema: made from the same table as the loader's checks, committed as
profiles/profile.schema.json, and true to what the loader accepts and refuses; the bundled
profiles and what `init` writes validate against it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from carla_launcher.errors import InputError
from carla_launcher.profile import parse_profile
from carla_launcher.profile.fields import walk
from carla_launcher.profile.schema import SCHEMA_FILE, markdown, render
from tests.harness.cli import REPO, Cli

COMMITTED = REPO / "profiles" / SCHEMA_FILE


def _validator() -> Any:
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed: it belongs in the dev extra"
    )
    schema = json.loads(COMMITTED.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _errors(text: str) -> list[str]:
    return [e.message for e in _validator().iter_errors(YAML(typ="safe").load(text))]


def test_the_committed_schema_is_the_generated_one() -> None:
    assert COMMITTED.read_text() == render(), (
        "profiles/profile.schema.json is stale: run python -m carla_launcher.profile.schema"
    )


def test_the_schema_module_writes_and_checks_the_file(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    run = [sys.executable, "-m", "carla_launcher.profile.schema"]
    assert subprocess.run([*run, "--check", str(target)], capture_output=True).returncode == 1
    done = subprocess.run([*run, str(target)], capture_output=True, text=True, check=True)
    assert done.stdout == f"wrote {target}\n" and target.read_text() == render()
    assert subprocess.run([*run, "--check", str(target)], capture_output=True).returncode == 0


def test_every_field_has_help_and_a_line_in_the_readme_table() -> None:
    table = markdown()
    for name, f in walk():
        assert f.help and f"| `{name}` |" in table, name


@pytest.mark.parametrize("path", sorted((REPO / "profiles").glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_profiles_validate_and_name_the_schema(path: Path) -> None:
    text = path.read_text()
    assert text.startswith(f"# yaml-language-server: $schema={SCHEMA_FILE}\n")
    assert _errors(text) == []


def test_what_init_writes_validates(tmp_path: Path, run: Cli) -> None:
    shutil.copytree(REPO / "build", tmp_path / "build")
    r = run("init", "box", "--host", "gpu-box", "--user", "me", "--identity-file", "~/.ssh/k")
    assert r.exit_code == 0, r.output
    assert _errors((tmp_path / "profiles" / "box.yaml").read_text()) == []
    assert (tmp_path / "profiles" / SCHEMA_FILE).read_text() == render()


GOOD = [
    "remote:\n  host: gpu\n",
    "remote:\n  connector: local\n",
    "remote:\n  host: [gpu-1, gpu-2]\n  port: 2222\n  user: carla\n  jump: me@login:22\n",
    "remote:\n  host: gpu\n  identity_file: ~/keys/my key #1\nserver:\n  gpu: 0\n",
    "remote:\n  host: gpu\nserver:\n  package:\n    url: https://x/c.tar.gz\n    root: /opt/c\n",
    "remote:\n  host: gpu\nserver:\n  os_packages: []\n  args: []\ncompose:\n  address: env\n",
    "remote:\n  host: gpu\n  user: null\nserver: null\ncompose:\n",
    "remote:\n  host: gpu\nserver:\n  tmux_session: carla2-x_v2\n",
]
BAD = [
    "remote:\n  user: carla\n",  # no host
    "remote:\n  host: []\n",
    "remote:\n  host: gpu\n  colour: red\n",  # unknown field
    "remote:\n  host: 'gpu box'\n",
    "remote:\n  host: '-oProxyCommand=x'\n",
    'remote:\n  host: gpu\n  identity_file: "/tmp/id\\nProxyCommand x"\n',
    "remote:\n  host: gpu\n  known_hosts: /tmp/it's\n",
    "remote:\n  host: gpu\n  connect_timeout: 0\n",
    "remote:\n  host: gpu\n  accept_new_host_key: maybe\n",
    "remote:\n  host: gpu\n  connector: telnet\n",
    "remote:\n  host: gpu\nserver:\n  port: 65534\n",
    "remote:\n  host: gpu\nserver:\n  user: root\n",
    "remote:\n  host: gpu\nserver:\n  tmux_session: 'a:b'\n",
    "remote:\n  host: gpu\nserver:\n  tmux_session: carla-1\n",  # server 1 of carla's
    "remote:\n  host: gpu\nserver:\n  package:\n    url: file:///etc/shadow\n",
    "remote:\n  host: gpu\nserver:\n  package:\n    url: ftp://x/c.tar\n",
    "remote:\n  host: gpu\nserver:\n  package:\n    sha256: abc\n",
    "remote:\n  host: gpu\nserver:\n  package:\n    root: /\n",
    "remote:\n  host: gpu\nserver:\n  os_packages: ['rm -rf']\n",
    "remote:\n  host: gpu\nserver:\n  args: [[x]]\n",
    "remote:\n  host: gpu\ncompose:\n  address: envs\n",
]


@pytest.mark.parametrize("text", GOOD)
def test_schema_and_loader_accept_the_same_profiles(tmp_path: Path, text: str) -> None:
    parse_profile(text, tmp_path / "profiles" / "p.yaml")
    assert _errors(text) == []


@pytest.mark.parametrize("text", BAD)
def test_schema_and_loader_refuse_the_same_mistakes(tmp_path: Path, text: str) -> None:
    with pytest.raises(InputError):
        parse_profile(text, tmp_path / "profiles" / "p.yaml")
    assert _errors(text) != []


def test_the_readme_sections_the_fields_name_exist() -> None:
    """`init` writes "(README: SECTION)" above fields: each names a real heading."""
    headings = {
        line.lstrip("#").strip()
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("#")
    }
    for name, f in walk():
        assert f.readme in headings, (name, f.readme)
