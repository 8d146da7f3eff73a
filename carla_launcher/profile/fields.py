"""Every field of a profile, once: its key, kind, default, allowed values, help text and the
README section that explains it. Pure data.

The loader (`load.py`) validates with this table, `schema.py` turns it into the JSON Schema
editors use and into the README's table of fields, and `template.py` writes what `init` writes,
so a field added here is checked, completed, documented and written by `init` at once.

Patterns are JSON Schema (ECMA-262) regular expressions that Python's `re` reads the same way:
anchored, with `\\uXXXX` escapes for control characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: text (numbers read as text), path (a local or remote file name), host (one token for ssh:
#: no spaces, quotes, backslashes, control characters or leading '-'), hosts (a host or a
#: list of them), int, bool, list (of text), gpus (`all` or a list of distinct GPU indexes),
#: switch (true, false or auto; `choices` names them as the README's table shows them)
Kind = Literal["text", "path", "host", "hosts", "int", "bool", "list", "gpus", "switch"]

# -- character rules: what would turn a value into ssh_config or shell syntax --------------------
CONTROL = "\\u0000-\\u001f\\u007f"  # newline, tab, escape, ...: never in a value of a profile
PATH_REFUSED = f"\"'{CONTROL}"  # a quote or a control character
TOKEN_REFUSED = f"\\s\"'\\\\{CONTROL}"  # ... or a space or a backslash
PATH = f"^[^{PATH_REFUSED}]*$"
TOKEN = f"^(?!-)[^{TOKEN_REFUSED}]+$"
USER = "^[a-z_][a-z0-9_-]{0,31}$"

# OS packages a CARLA server needs on a fresh Debian/Ubuntu box: libomp5 since 0.9.12
# (carla-simulator/carla#4498, #4714), xdg-user-dirs against `xdg-user-dir: not found`
# (#8840, #4687), libvulkan1 for the renderer.
DEFAULT_OS_PACKAGES: tuple[str, ...] = (
    "tmux",
    "curl",
    "xz-utils",
    "unzip",
    "libomp5",
    "xdg-user-dirs",
    "libvulkan1",
)

README_PROFILES = "Profiles"
README_TUNNELS = "Beyond the box you can reach"
README_SLURM = "Servers as Slurm jobs"


@dataclass(frozen=True)
class Field:
    """One key of a section. `message` is the problem (a format string: `{value}`) for a value
    that breaks `pattern`, `minimum` or `maximum`; null always means "the default"."""

    key: str
    kind: Kind
    help: str
    default: object = None
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None  # of the value (text kinds) or of each item (list)
    message: str = ""
    readme: str = README_PROFILES


@dataclass(frozen=True)
class Section:
    """A mapping of fields (`remote`, `server`, `server.package`, ...)."""

    key: str
    help: str
    fields: tuple[Field | Section, ...]
    readme: str = README_PROFILES

    def field(self, key: str) -> Field:
        """The field named `key` (a KeyError names a key that is not a field here)."""
        found = {f.key: f for f in self.fields if isinstance(f, Field)}
        return found[key]


REMOTE = Section(
    "remote",
    "where the GPU box is and how SSH reaches it",
    (
        Field(
            "host",
            "hosts",
            "ssh host or ~/.ssh/config alias of the box (required unless connector: local); a "
            "list makes a pool: [gpu-1, gpu-2]",
            pattern=TOKEN,
            message="not a host name: {value!r}",
        ),
        Field(
            "connector",
            "text",
            "ssh, or local: the server runs on this machine, without SSH",
            default="ssh",
            choices=("ssh", "local"),
        ),
        Field(
            "user",
            "text",
            "ssh user; null: from ~/.ssh/config, else yours",
            pattern=USER,
            message="not a user name: {value!r}",
        ),
        Field(
            "port",
            "int",
            "ssh port; null: from ~/.ssh/config, else 22",
            minimum=1,
            maximum=65535,
            message="must be a port number (1-65535), not {value}",
        ),
        Field(
            "identity_file",
            "path",
            "ssh key; null: from ~/.ssh/config or your ssh-agent",
            pattern=PATH,
        ),
        Field(
            "jump",
            "host",
            "jump host(s) as `ssh -J` takes them: [user@]host[:port], several with commas",
            pattern=TOKEN,
            message="not an ssh jump host ([user@]host[:port][,...]): {value!r}",
        ),
        Field(
            "address",
            "text",
            "what agents connect to (an IP address or host name); null: discover it over SSH",
            readme="The remote box: `deploy`, `server`, `address`",
        ),
        Field(
            "accept_new_host_key",
            "bool",
            "accept the key of a box not yet in known_hosts (a changed key is always refused)",
            default=False,
        ),
        Field(
            "ssh_config",
            "path",
            "an ssh_config file to read instead of ~/.ssh/config",
            pattern=PATH,
        ),
        Field(
            "known_hosts",
            "path",
            "a known_hosts file to check host keys against instead of ~/.ssh/known_hosts",
            pattern=PATH,
        ),
        Field(
            "connect_timeout",
            "int",
            "seconds an SSH connection may take to open",
            default=10,
            minimum=1,
            maximum=600,
            message="must be between 1 and 600 seconds, not {value}",
        ),
        Field(
            "tunnel",
            "switch",
            "agents reach each server through an SSH tunnel (its ports N..N+2 forwarded to "
            "this machine) instead of its address; auto: when the address does not answer on "
            "the world port from here",
            default=False,
            choices=("false", "true", "auto"),
            message="must be true, false or auto, not {value!r}",
            readme=README_TUNNELS,
        ),
    ),
)

PACKAGE = Section(
    "package",
    "the CARLA release archive that `deploy` installs (server.mode: package)",
    (
        Field(
            "url",
            "path",
            "http(s) URL of the archive, or a local file (uploaded); null: none yet",
            # http(s)://..., or a path without a scheme; no spaces, quotes or control characters
            pattern=f"^(?!(?![Hh][Tt][Tt][Pp][Ss]?://)[A-Za-z][A-Za-z0-9+.-]*://)[^{TOKEN_REFUSED}]+$",
            message="must be an http(s):// URL or a local file path, not {value!r}",
        ),
        Field(
            "sha256",
            "text",
            "sha256 of the archive, checked before it is unpacked",
            pattern="^[0-9a-fA-F]{64}$",
            message="must be 64 hex digits",
        ),
        Field(
            "root",
            "path",
            "folder on the box the archive is unpacked into (~: the server user's home)",
            default="~/CARLA_Leaderboard_20",
            pattern=f"^(?!-)(?!\\s*(?:~/?|/)?\\s*$)[^{PATH_REFUSED}]*$",
            message="not a folder to install into: {value!r}",
        ),
    ),
)

#: sbatch options carla-launch sets itself (the job's name, where its output goes, how it is
#: submitted) or cannot follow (another cluster): another value would break status, logs or
#: stop. `profile/load.py` also refuses them glued (-Jx) and abbreviated (--out=).
SBATCH_OURS = (
    "-J",
    "--job-name",
    "-o",
    "--output",
    "-e",
    "--error",
    "--open-mode",
    "--parsable",
    "-a",
    "--array",
    "--wrap",
    "-W",
    "--wait",
    "-M",  # another cluster: squeue, scontrol and scancel here would not find its jobs
    "--clusters",
)

SLURM = Section(
    "slurm",
    "the sbatch jobs that run the servers (server.mode: slurm; remote.host is the login node)",
    (
        Field(
            "jobs",
            "int",
            "how many servers: one sbatch job each, with one GPU (Slurm picks node and GPU)",
            default=1,
            minimum=1,
            maximum=64,
            message="must be between 1 and 64 jobs, not {value}",
            readme=README_SLURM,
        ),
        Field(
            "partition",
            "text",
            "sbatch --partition; null: the cluster's default partition",
            pattern="^[A-Za-z0-9_.,-]{1,64}$",
            message="not a partition name (letters, digits, _ . , -): {value!r}",
            readme=README_SLURM,
        ),
        Field(
            "account",
            "text",
            "sbatch --account; null: your default account",
            pattern="^[A-Za-z0-9_.-]{1,64}$",
            message="not an account name (letters, digits, _ . -): {value!r}",
            readme=README_SLURM,
        ),
        Field(
            "time",
            "text",
            "sbatch --time of each job (MINUTES, HH:MM:SS, D-HH:MM:SS); null: the partition's "
            "limit",
            pattern="^(?:[0-9]+-)?[0-9]+(?::[0-9]+){0,2}$|^(?:UNLIMITED|INFINITE|unlimited|infinite)$",
            message="not a Slurm time limit (MINUTES, HH:MM:SS or D-HH:MM:SS): {value!r}",
            readme=README_SLURM,
        ),
        Field(
            "gres",
            "text",
            "sbatch --gres of each job",
            default="gpu:1",
            pattern="^[A-Za-z0-9_:.,=-]{1,128}$",
            message="not a Slurm gres (gpu:1, gpu:a100:1): {value!r}",
            readme=README_SLURM,
        ),
        Field(
            "queue_timeout",
            "int",
            "seconds `up` and `server start` wait for a queued job to run; then they go on "
            "without it (it stays queued: a later `up` picks it up)",
            default=600,
            minimum=1,
            message="must be at least 1 second, not {value}",
            readme=README_SLURM,
        ),
        Field(
            "sbatch",
            "list",
            "more sbatch options, one per item, written as #SBATCH lines: [--qos=high, "
            "--constraint=a100]",
            default=(),
            pattern=f'^--?[A-Za-z][^"{CONTROL}]*$',
            readme=README_SLURM,
            message="not an sbatch option (it starts with - or --, without a double quote): "
            "{value!r}",
        ),
    ),
    readme=README_SLURM,
)

SERVER = Section(
    "server",
    "how CARLA is installed and run on the box",
    (
        Field(
            "mode",
            "text",
            "package: a CARLA archive installed by `deploy`; compose: the simulator service of "
            "compose.file, run on the box; slurm: the package, run as Slurm jobs from the login "
            "node remote.host",
            default="package",
            choices=("package", "compose", "slurm"),
        ),
        PACKAGE,
        SLURM,
        Field(
            "args",
            "list",
            "arguments of CarlaUE4.sh",
            default=("-RenderOffScreen", "-nosound"),
        ),
        Field(
            "port",
            "int",
            "world port; the server also takes port+1 and port+2 (busy: +3, +6, ...)",
            default=2000,
            minimum=1,
            maximum=65533,
            message="must be a port that leaves room for port+1 and port+2 (1-65533), not {value}",
        ),
        Field(
            "restart",
            "text",
            "when the server comes back after it exits: no, on-failure (crashes, with backoff), "
            "always",
            default="on-failure",
            choices=("no", "on-failure", "always"),
            readme="Troubleshooting",
        ),
        Field(
            "tmux_session",
            "text",
            "tmux session on the box that runs the server; server K of server.gpus runs in "
            "NAME-K, so NAME does not end in -digits",
            default="carla",
            # carla-1 would be server 1 of another profile's session carla
            pattern="^(?!.*-[0-9]+$)[A-Za-z0-9_-]{1,64}$",
            message=(
                "letters, digits, '-' and '_' only, and not ending in '-' and digits (NAME-K "
                "is the session of server K of session NAME), not {value!r}"
            ),
        ),
        Field(
            "user",
            "text",
            "the non-root user that runs the server when you log in as root (CARLA refuses root)",
            default="carla",
            pattern="^(?!root$)[a-z_][a-z0-9_-]{0,31}$",
            message="must be a non-root user name (CARLA refuses root), not {value!r}",
            readme="Troubleshooting",
        ),
        Field(
            "gpu",
            "int",
            "GPU index, passed as -graphicsadapter=N (the Vulkan index); null: the default GPU",
            minimum=0,
            message="must be a GPU index (0, 1, ...), not {value}",
            readme="Troubleshooting",
        ),
        Field(
            "gpus",
            "gpus",
            "one server per GPU: a list of indexes ([0, 1]) or all (the box's GPUs that nobody "
            "else uses); ports go up in steps of 3 from server.port; null: one server",
            minimum=0,
            message="must be all or a list of distinct GPU indexes ([0, 1, ...]), not {value}",
            readme="Parallel evaluation",
        ),
        Field(
            "settings",
            "path",
            "a local CARLA settings .ini, uploaded and passed as -carla-settings",
            pattern=PATH,
        ),
        Field(
            "os_packages",
            "list",
            "Debian/Ubuntu packages the box needs (installed with sudo when missing); [] to "
            "install them yourself",
            default=DEFAULT_OS_PACKAGES,
            pattern="^[a-z0-9][a-z0-9+.-]+$",
            message="not a package name: {value!r}",
            readme="Troubleshooting",
        ),
        Field(
            "ready_timeout",
            "int",
            "seconds to wait for the server to answer (big maps take minutes to load)",
            default=300,
            minimum=1,
            message="must be at least 1 second, not {value}",
        ),
    ),
)

COMPOSE = Section(
    "compose",
    "the agent's compose files and how their variants get the address",
    (
        Field(
            "dir",
            "text",
            "folder of the compose files, relative to the folder that holds profiles/",
            default="build",
        ),
        Field(
            "simulator", "text", "the simulator's service; null: detected from the compose files"
        ),
        Field(
            "file",
            "text",
            "the compose file that holds the simulator (server.mode: compose)",
        ),
        Field(
            "address",
            "text",
            "literal: the box's address is written into the variants; env: they read "
            "CARLA_LAUNCH_HOST/CARLA_LAUNCH_PORT, so one committed variant serves every box",
            default="literal",
            choices=("literal", "env"),
            readme="One committed variant for every box: the env address mode",
        ),
    ),
)

PROFILE = Section("", "a carla-launch profile (profiles/NAME.yaml)", (REMOTE, SERVER, COMPOSE))


def walk(section: Section = PROFILE, prefix: str = "") -> list[tuple[str, Field]]:
    """Every field with its dotted name (`server.package.url`), in file order."""
    out: list[tuple[str, Field]] = []
    for f in section.fields:
        name = f"{prefix}{f.key}"
        if isinstance(f, Section):
            out += walk(f, f"{name}.")
        else:
            out.append((name, f))
    return out
