"""What a box looks like: named fact snippets, one script for the ones a caller needs, one parser.

Each fact is a shell snippet (run as one section of `sections.script`, after deploy's
`prologue`, so "who runs the server" and "where is the package" mean what deploy means) and a
reader of its section. A caller asks for the facts it needs (`DEPLOY`, `DOCTOR`,
`DOCTOR_SLURM`, `GPU`, `ADDRESS`) and gets them in ONE round trip, over any transport
(OpenSSH, `connector: local`, or pyinfra in the deploy child). To add a fact about the box:
a snippet in `box/snippets.py` (`SNIPPETS`), a field in `BoxFacts`, a line in `parse_facts`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from carla_launcher.box import sections
from carla_launcher.box.marker import parse_marker
from carla_launcher.box.parsers import (
    Interface,
    Listener,
    parse_df_free_kib,
    parse_ip_addr,
    parse_key_values,
    parse_listeners,
    parse_owner,
    parse_packages,
)
from carla_launcher.box.shell import prologue, q
from carla_launcher.box.snippets import ENV, NEED_ROOT, NEEDS, SNIPPETS
from carla_launcher.nvidia.roles import ProcInfo, parse_ps, with_roles
from carla_launcher.nvidia.smi import GPU_FIELDS, Gpu, GpuReport, smi_report

ADDRESS = ("id", "ssh", "ip", "hostname")
GPU = ("id", "user", "gpus", "apps", "ps")
DOCTOR = (*GPU, "paths", "vulkan", "disk", "root", "marker", "ports", "tmux")
#: A Slurm login node (`server.mode: slurm`): no GPU to ask about, Slurm instead.
DOCTOR_SLURM = ("id", "user", "paths", "slurm", "disk", "root", "marker")
DEPLOY = (
    *ADDRESS,
    "gpus",
    "ports",
    "privilege",
    "user",
    "paths",
    "packages",
    "root",
    "marker",
    "download",
    "leftovers",
    "owner",
    "tmux",
    "launch",
    "status",
    "slots",
)


def facts_script(
    names: Iterable[str],
    *,
    server_user: str = "carla",
    session: str = "carla",
    root: str | None = None,
    packages: tuple[str, ...] = (),
    archive: str | None = None,
) -> str:
    """The script that prints the named facts as sections, in one round trip."""
    wanted: list[str] = []
    for name in names:
        for n in (*NEEDS.get(name, ()), name):
            if n not in SNIPPETS:
                raise ValueError(f"no such box fact: {n}")
            if n not in wanted:
                wanted.append(n)
    if root is None and NEED_ROOT & set(wanted):
        raise ValueError(f"facts {sorted(NEED_ROOT & set(wanted))} need the install root")
    dpkg = (
        "if command -v dpkg-query >/dev/null; then "
        f"dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}}\\n' "
        f"{' '.join(q(p) for p in packages)}; echo '?dpkg'; fi"
        if packages
        else "echo '?dpkg'"
    )
    items = [
        (n, SNIPPETS[n].replace("{packages}", dpkg).replace("{archive}", q(archive or "")))
        for n in wanted
    ]
    return prologue(server_user, session, root) + ENV + sections.script(items)


@dataclass(frozen=True)
class SlotFacts:
    """One server's state folder on the box (`slots`): server 0's is $SDIR, server K's $SDIR-K."""

    session: str  # its tmux session, and its folder's name
    launch_sha: str | None = None  # of its launch.sh; None: none there
    port: int | None = None  # the port its deploy chose
    state: str | None = None  # its status file's state (running, stopped, ...)
    running: bool = False  # its tmux session runs


@dataclass(frozen=True)
class Partition:
    """A Slurm partition as `sinfo -h -o '%P|%a|%l|%D|%G'` prints it, its lines joined (one per
    kind of node)."""

    name: str
    default: bool  # sinfo marks the default partition with `*`
    avail: str  # up | down | drain | inactive (older Slurm: inact)
    time_limit: str  # as sinfo prints it: infinite, 30:00, 4:00:00, 1-00:00:00, n/a
    nodes: int
    gres: tuple[str, ...] = ()  # of its nodes, one per kind: gpu:a100:4(S:0-1), ...


@dataclass(frozen=True)
class SlurmFacts:
    """What a login node says about Slurm (`slurm`), with the loop's PATH addition."""

    found: tuple[str, ...] = ()  # which of `snippets.SLURM_TOOLS` are there
    version: str | None = None  # `sbatch --version`: "slurm 23.02.7"
    partitions: tuple[Partition, ...] = ()  # the ones sinfo lists (to this user)
    sinfo_error: str | None = None  # sinfo's last line when it failed (None: it ran, or none)


@dataclass(frozen=True)
class BoxFacts:
    """What one round trip told about a box; a fact not asked for keeps its default."""

    gpu: GpuReport = field(default_factory=lambda: GpuReport("error", message="not asked"))
    uid: int | None = None
    login_user: str = ""
    server_user: str = ""  # who runs the server: the login user, or server.user as root
    server_home: str = ""
    server_user_exists: bool | None = None
    ssh_connection: str = ""
    interfaces: tuple[Interface, ...] = ()
    hostname_i: tuple[str, ...] = ()
    privilege: str = "none"  # root | sudo | none: can we install OS packages?
    package_root: str = ""  # the install root, absolute
    session_dir: str = ""
    packages: dict[str, bool] | None = None  # None: no dpkg on the box
    root_exists: bool = False
    launcher: bool = False  # CarlaUE4.sh at the install root
    marker: dict[str, str] | None = None  # deploy's install marker; None: none there
    download_verified: str | None = None  # sha256 of a verified archive not yet unpacked
    download_origin: str | None = None  # where that archive came from (URL or local path)
    leftovers: tuple[str, ...] = ()  # what an interrupted unpack, upgrade or upload left (paths)
    upload_owner: str | None = None  # PID.START of what serves this deploy on the box
    icd_files: tuple[str, ...] = ()
    vulkaninfo: bool | None = None
    vulkan_lines: tuple[str, ...] = ()
    free_kib: int | None = None  # free disk at (the nearest existing parent of) the root
    listeners: tuple[Listener, ...] = ()
    tmux_sessions: tuple[str, ...] = ()  # the server user's
    launch_sha: str | None = None
    status: dict[str, str] = field(default_factory=dict)
    deployed_port: int | None = None
    ps: dict[int, ProcInfo] = field(default_factory=dict)
    slots: tuple[SlotFacts, ...] = ()  # the profile's server folders (`slots`), in box order
    slurm: SlurmFacts | None = None  # a login node's Slurm (`slurm`); None: not asked

    @property
    def login_root(self) -> bool:
        return self.uid == 0

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return self.gpu.gpus

    @property
    def listening(self) -> set[int]:
        return {lst.port for lst in self.listeners}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_facts(
    stdout: str,
    *,
    packages: tuple[str, ...] = (),
    where: str = "the box",
    server_user: str | None = None,
) -> BoxFacts:
    """The output of `facts_script` -> BoxFacts. Missing sections leave fields unknown. CARLA
    processes count as ours when the login user or the server user runs them."""
    s = sections.parse(stdout)
    empty = sections.Section("", None)

    def lines(name: str) -> list[str]:
        return s.get(name, empty).lines

    ident = lines("id")
    uid = _int(ident[0]) if ident else None
    login = ident[1].strip() if uid is not None and len(ident) > 1 else ""
    user = s.get("user", empty).text.splitlines()
    su, home, exists = user[:3] if len(user) >= 3 else ("", "", "")
    su = su or server_user or ""
    paths = lines("paths")
    marker = parse_marker(s["marker"].text) if s.get("marker", empty).rc == 0 else None
    root = [ln.strip() for ln in lines("root")]
    download = [ln.strip() for ln in lines("download") if _is_sha256(ln.strip())]
    origin = [ln.strip()[5:] for ln in lines("download") if ln.strip().startswith("from=")]
    launch = [ln.strip() for ln in lines("launch") if len(ln.strip()) == 64]
    status = parse_key_values(lines("status") + lines("compose"))
    deployed_port = _int(status.pop("deployed_port", ""))
    tmux = s.get("tmux", empty)
    disk = s.get("disk", empty)
    icd, vk, vk_lines = _vulkan(lines("vulkan"))
    ps = parse_ps(s["ps"].text) if "ps" in s else {}
    report = with_roles(
        _gpu_report(s, where), ps, owners=frozenset(u for u in (login, su) if u) or None
    )
    return BoxFacts(
        gpu=report,
        uid=uid,
        login_user=login,
        server_user=su,
        server_home=home,
        server_user_exists=exists.strip() == "yes" if "user" in s else None,
        ssh_connection=(lines("ssh") or [""])[0].strip(),
        interfaces=tuple(parse_ip_addr(lines("ip"))),
        hostname_i=tuple(" ".join(lines("hostname")).split()),
        privilege=(lines("privilege") or ["none"])[0].strip(),
        package_root=paths[0] if len(paths) >= 2 else "",
        session_dir=paths[1] if len(paths) >= 2 else "",
        packages=parse_packages(lines("packages"), packages),
        root_exists="exists" in root,
        launcher="carla" in root,
        marker=marker,
        download_verified=download[0] if download else None,
        download_origin=(origin[0] or None) if origin else None,  # "": trusted (verified_here)
        leftovers=tuple(ln for ln in s.get("leftovers", empty).text.splitlines() if ln.strip()),
        upload_owner=parse_owner(lines("owner")),
        icd_files=icd,
        vulkaninfo=vk,
        vulkan_lines=vk_lines,
        free_kib=parse_df_free_kib(disk.text) if disk.rc == 0 else None,
        listeners=parse_listeners(s["ports"].text) if "ports" in s else (),
        tmux_sessions=tuple(ln.strip() for ln in tmux.lines) if tmux.rc == 0 else (),
        launch_sha=launch[0] if launch else None,
        status=status,
        deployed_port=deployed_port,
        ps=ps,
        slots=parse_slots(lines("slots")),
        slurm=parse_slurm(lines("slurm")) if "slurm" in s else None,
    )


def parse_slots(lines: list[str]) -> tuple[SlotFacts, ...]:
    """The `slots` section: a `slot=NAME` line, then its `key=value` lines, per server folder.

    >>> parse_slots(["slot=carla", "launch=" + "a" * 64, "port=2000", "state=running",
    ...              "session=yes", "slot=carla-1", "port=2003"])[1]
    SlotFacts(session='carla-1', launch_sha=None, port=2003, state=None, running=False)
    """
    found: list[dict[str, str]] = []
    for line in lines:
        key, sep, value = line.strip().partition("=")
        if not sep:
            continue
        if key == "slot":
            found.append({"slot": value})
        elif found:
            found[-1][key] = value
    return tuple(
        SlotFacts(
            d["slot"],
            d.get("launch") if _is_sha256(d.get("launch", "")) else None,
            _int(d.get("port", "")),
            d.get("state") or None,
            d.get("session") == "yes",
        )
        for d in found
    )


def parse_slurm(lines: list[str]) -> SlurmFacts:
    """The `slurm` section: `found=`, `version=`, then `partition=` (sinfo's lines) or
    `sinfo_error=`. A partition's lines (one per kind of node) become one `Partition`.

    >>> f = parse_slurm(["found=sbatch", "found=sinfo", "version=slurm 23.02.7",
    ...     "partition=gpu*|up|2-00:00:00|6|gpu:a100:4(S:0-1)",
    ...     "partition=gpu*|up|2-00:00:00|2|gpu:v100:2", "partition=cpu|drain|infinite|40|(null)"])
    >>> f.found, f.version
    (('sbatch', 'sinfo'), 'slurm 23.02.7')
    >>> f.partitions[0]  # doctest: +NORMALIZE_WHITESPACE
    Partition(name='gpu', default=True, avail='up', time_limit='2-00:00:00', nodes=8,
              gres=('gpu:a100:4(S:0-1)', 'gpu:v100:2'))
    >>> f.partitions[1].gres, f.partitions[1].default
    ((), False)
    >>> parse_slurm(["found=sinfo", "sinfo_error=sinfo: error: Unable to contact slurm controller"])
    SlurmFacts(found=('sinfo',), version=None, partitions=(), \
sinfo_error='sinfo: error: Unable to contact slurm controller')
    """
    found: list[str] = []
    version = error = None
    parts: dict[str, dict[str, Any]] = {}
    for line in lines:
        key, _, value = line.strip().partition("=")
        if key == "found":
            found.append(value)
        elif key == "version":
            version = value.strip() or None
        elif key == "sinfo_error":
            error = value.strip() or "sinfo failed"
        elif key == "partition" and value.count("|") >= 4:
            name, avail, limit, nodes, gres = (v.strip() for v in value.split("|", 4))
            p = parts.setdefault(
                name.rstrip("*"),
                {"default": name.endswith("*"), "avail": avail, "limit": limit, "n": 0, "g": []},
            )
            p["n"] += _int(nodes) or 0
            p["g"] += [g for g in _gres_items(gres) if g not in p["g"]]
    return SlurmFacts(
        tuple(found),
        version,
        tuple(
            Partition(n, p["default"], p["avail"], p["limit"], p["n"], tuple(p["g"]))
            for n, p in parts.items()
        ),
        error,
    )


def _gres_items(text: str) -> list[str]:
    """sinfo's %G: items split at the commas outside parentheses; `(null)`: none.

    >>> _gres_items("gpu:tesla:2(S:0,1),mps:200")
    ['gpu:tesla:2(S:0,1)', 'mps:200']
    """
    items, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return [i.strip() for i in items if i.strip() and i.strip() != "(null)"]


def _gpu_report(s: dict[str, sections.Section], where: str) -> GpuReport:
    g = s.get("gpus", sections.Section("", None))
    glines = g.text.splitlines()
    fields: tuple[str, ...] = GPU_FIELDS
    if glines and glines[0].startswith("fields="):
        fields = tuple(glines[0][len("fields=") :].split(","))
        glines = glines[1:]
    apps = s.get("apps", sections.Section("", None))
    rc = g.rc if g.rc is not None else 1
    return smi_report(rc, "\n".join(glines), apps.rc, apps.text, fields, where)


def _vulkan(lines: list[str]) -> tuple[tuple[str, ...], bool | None, tuple[str, ...]]:
    icd: list[str] = []
    vk: bool | None = None
    other: list[str] = []
    for ln in lines:
        ln = ln.strip()
        if ln.endswith(".json"):
            icd.append(ln)
        elif ln.startswith("vulkaninfo="):
            vk = ln.endswith("yes")
        elif ln:
            other.append(ln)
    return tuple(icd), vk, tuple(other)


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None
