"""What a box looks like: one shell script prints every fact in sections, pure parsers read them.

One script (one SSH round trip) instead of one command per fact keeps a no-op deploy fast;
the pyinfra `FactBase` that runs it lives in `ops.py` (child process only), the OpenSSH
callers (`address`, `server status`) run the same scripts through `ssh.run_remote`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any

from carla_launcher.remote.shell import MARKER, parse_sections, prologue, q, sections

GPU_QUERY = (
    "nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version "
    "--format=csv,noheader,nounits"
)


@dataclass(frozen=True)
class Interface:
    name: str
    address: str  # without prefix length
    family: int  # 4 or 6
    scope: str  # global | host | link | ...


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total_mib: int | None
    memory_used_mib: int | None
    driver: str


@dataclass
class BoxFacts:
    uid: int = -1
    login_user: str = ""
    ssh_connection: str = ""
    interfaces: list[Interface] = field(default_factory=list)
    hostname_i: list[str] = field(default_factory=list)
    gpus: list[Gpu] = field(default_factory=list)
    listening: set[int] = field(default_factory=set)
    privilege: str = "none"  # root | sudo | none: can we install OS packages?
    server_user: str = ""
    server_home: str = ""
    user_exists: bool = False
    root: str = ""  # the install root, absolute
    session_dir: str = ""
    packages: dict[str, bool] | None = None  # None: no dpkg on the box
    disk_free_kb: int | None = None
    disk_path: str | None = None
    root_exists: bool = False
    root_has_carla: bool = False
    marker: dict[str, str] = field(default_factory=dict)
    download_verified: str | None = None  # sha256 of a verified archive not yet unpacked
    download_partial: int = 0  # bytes of an interrupted download
    sessions: list[str] = field(default_factory=list)  # the server user's tmux sessions
    launch_sha: str | None = None
    status: dict[str, str] = field(default_factory=dict)
    deployed_port: int | None = None
    docker_compose: str | None = None

    @property
    def login_root(self) -> bool:
        return self.uid == 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["listening"] = sorted(self.listening)
        return d


def box_facts_script(
    server_user: str,
    session: str,
    root: str,
    packages: tuple[str, ...],
    archive_name: str | None,
    compose: bool = False,
) -> str:
    """The script behind `BoxFacts`: everything a deploy decides on, in one round trip."""
    pkgs = " ".join(q(p) for p in packages)
    archive = q(archive_name or "")
    items = address_items() + [
        ("gpu", f"command -v nvidia-smi >/dev/null && {GPU_QUERY}"),
        ("listen", "awk 'FNR > 1 && $4 == \"0A\" { print $2 }' /proc/net/tcp /proc/net/tcp6"),
        (
            "privilege",
            'if [ "$(id -u)" = 0 ]; then echo root; '
            "elif sudo -n true 2>/dev/null; then echo sudo; else echo none; fi",
        ),
        ("user", 'printf "%s\\n%s\\n%s\\n" "$SU" "$SHOME" "$USER_EXISTS"'),
        ("paths", 'printf "%s\\n%s\\n" "$ROOT" "$SDIR"'),
        (
            "packages",
            "if command -v dpkg-query >/dev/null; then "
            f"dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}}\\n' {pkgs}; "
            "echo '?dpkg'; fi"
            if packages
            else "echo '?dpkg'",
        ),
        (
            "disk",
            'd=$ROOT; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; df -Pk "$d" | tail -n 1',
        ),
        ("root", '[ -e "$ROOT" ] && echo exists; [ -f "$ROOT/CarlaUE4.sh" ] && echo carla'),
        ("marker", f'cat "$ROOT/{MARKER}"'),
        (
            "download",
            f'a={archive}; [ -n "$a" ] && {{ '
            'cat "$DLDIR/$a.sha256"; echo; '
            'echo "partial=$(stat -c %s "$DLDIR/$a.part" 2>/dev/null || echo 0)"; }',
        ),
        ("tmux", '[ "$USER_EXISTS" = yes ] && as_server tmux list-sessions -F "#{session_name}"'),
        ("launch", 'sha256sum "$SDIR/launch.sh" | cut -c1-64'),
        ("status", 'cat "$SDIR/status"; echo; echo "deployed_port=$(cat "$SDIR/port")"'),
    ]
    if compose:
        items.append(("docker", "docker compose version --short"))
        items.append(
            (
                "compose",
                'echo "compose_sha=$(cat "$SDIR/.compose.sha256")"; '
                'echo "compose_state=$(docker compose -p "$CL_PROJECT" '
                '-f "$SDIR/compose.yaml" ps --format "{{.State}}" | head -n 1)"',
            )
        )
    return prologue(server_user, session, root) + sections(items)


def address_items() -> list[tuple[str, str]]:
    """The facts `address` needs: who we are, SSH_CONNECTION, interfaces, `hostname -I`."""
    return [
        ("id", "id -u; id -un"),
        ("ssh", 'printf "%s\\n" "${SSH_CONNECTION:-}"'),
        ("ip", "ip -o addr show"),
        ("hostname", "hostname -I"),
    ]


def address_script() -> str:
    return "set -u\n" + sections(address_items())


# -- parsers -----------------------------------------------------------------------------------
def parse_ip_addr(lines: list[str]) -> list[Interface]:
    """`ip -o addr show` lines -> interfaces (in the order the kernel lists them)."""
    result = []
    for line in lines:
        f = line.split()
        if len(f) < 4 or f[2] not in ("inet", "inet6"):
            continue
        name = f[1].split("@", 1)[0].rstrip(":")
        addr = f[3].split("/", 1)[0]
        scope = f[f.index("scope") + 1] if "scope" in f[:-1] else "global"
        result.append(Interface(name, addr, 4 if f[2] == "inet" else 6, scope))
    return result


def parse_nvidia_smi(lines: list[str]) -> list[Gpu]:
    """`nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version` CSV."""
    gpus = []
    for line in lines:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        gpus.append(Gpu(int(parts[0]), parts[1], _int(parts[2]), _int(parts[3]), parts[4]))
    return gpus


def parse_listening(lines: list[str]) -> set[int]:
    """local_address column of LISTEN rows of /proc/net/tcp{,6} ("0100007F:07D0") -> ports."""
    ports = set()
    for line in lines:
        _, _, port = line.strip().rpartition(":")
        try:
            ports.add(int(port, 16))
        except ValueError:
            continue
    return ports


def parse_df(lines: list[str]) -> tuple[int | None, str | None]:
    """Last line of `df -Pk PATH` -> (free KiB, mount point)."""
    for line in reversed(lines):
        f = line.split()
        if len(f) >= 6 and f[3].isdigit():
            return int(f[3]), f[5]
    return None, None


def parse_packages(lines: list[str], wanted: tuple[str, ...]) -> dict[str, bool] | None:
    """dpkg-query `Package ii ` lines -> {package: installed}; None when there is no dpkg."""
    if "?dpkg" not in [line.strip() for line in lines]:
        return None
    installed = {}
    for line in lines:
        f = line.split()
        if len(f) >= 2 and f[0] != "?dpkg":
            installed[f[0].split(":", 1)[0]] = f[1].startswith("ii")
    return {p: installed.get(p, False) for p in wanted}


def parse_key_values(lines: list[str]) -> dict[str, str]:
    result = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip():
            result[key.strip()] = value.strip()
    return result


def parse_box_facts(lines: list[str], packages: tuple[str, ...] = ()) -> BoxFacts:
    s = parse_sections(lines)
    facts = BoxFacts()
    ident = s.get("id", [])
    if ident and ident[0].strip().lstrip("-").isdigit():
        facts.uid = int(ident[0])
        facts.login_user = ident[1].strip() if len(ident) > 1 else ""
    facts.ssh_connection = (s.get("ssh") or [""])[0].strip()
    facts.interfaces = parse_ip_addr(s.get("ip", []))
    facts.hostname_i = " ".join(s.get("hostname", [])).split()
    facts.gpus = parse_nvidia_smi(s.get("gpu", []))
    facts.listening = parse_listening(s.get("listen", []))
    facts.privilege = (s.get("privilege") or ["none"])[0].strip()
    user = s.get("user", [])
    if len(user) >= 3:
        facts.server_user, facts.server_home = user[0], user[1]
        facts.user_exists = user[2].strip() == "yes"
    paths = s.get("paths", [])
    if len(paths) >= 2:
        facts.root, facts.session_dir = paths[0], paths[1]
    facts.packages = parse_packages(s.get("packages", []), packages)
    facts.disk_free_kb, facts.disk_path = parse_df(s.get("disk", []))
    root = [line.strip() for line in s.get("root", [])]
    facts.root_exists, facts.root_has_carla = "exists" in root, "carla" in root
    facts.marker = parse_key_values(s.get("marker", []))
    for line in s.get("download", []):
        line = line.strip()
        if line.startswith("partial="):
            facts.download_partial = _int(line[len("partial=") :]) or 0
        elif len(line) == 64 and all(c in "0123456789abcdef" for c in line):
            facts.download_verified = line
    facts.sessions = [line.strip() for line in s.get("tmux", []) if line.strip()]
    launch = [line.strip() for line in s.get("launch", []) if len(line.strip()) == 64]
    facts.launch_sha = launch[0] if launch else None
    status = parse_key_values(s.get("status", []) + s.get("compose", []))
    facts.deployed_port = _int(status.pop("deployed_port", ""))
    facts.status = status
    docker = s.get("docker", [])
    facts.docker_compose = docker[0].strip() if docker else None
    return facts


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except (ValueError, AttributeError):
        return None


def is_loopback_or_link_local(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast
