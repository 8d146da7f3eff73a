"""A stand-in CARLA package for tests: built small, on the fly, shaped like the real one.

`build_package(dest)` writes `CARLA_Leaderboard_20/` with a `CarlaUE4.sh` that, like the real
script, starts `CarlaUE4/Binaries/Linux/CarlaUE4-Linux-Shipping` without `exec` (so signals to
the script do not reach the server), the binary being `server.py` here (a msgpack-rpc server
answering `version` as CARLA does), packed as .tar.gz, .tar.xz or .zip.
`run_local(port)` runs the binary directly on this machine (probe and client tests).
`PackageServer` (in `http.py`) serves packages over HTTP with Range support and can break a
transfer on purpose.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

from tests.harness.polling import wait_for

HERE = Path(__file__).resolve().parent
SERVER_SOURCE = HERE / "server.py"
TOP = "CARLA_Leaderboard_20"
BINARY = "CarlaUE4/Binaries/Linux/CarlaUE4-Linux-Shipping"

START_SCRIPT = """#!/bin/sh
# Stand-in for CARLA's start script. Like the real one it runs the binary as a child, without
# exec: signals sent to this script do not reach the server.
here=$(dirname "$(readlink -f "$0")")
chmod +x "$here/CarlaUE4/Binaries/Linux/CarlaUE4-Linux-Shipping"
"$here/CarlaUE4/Binaries/Linux/CarlaUE4-Linux-Shipping" CarlaUE4 "$@"
"""


def standin_python() -> str | None:
    """A python3 that any user can run (the box's server user runs the stand-in).

    The test's own interpreter may live under /root (mode 700), so prefer the system one.
    """
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3") or ""):
        if not cand or not Path(cand).is_file():
            continue
        real = Path(os.path.realpath(cand))
        if all(p.stat().st_mode & stat.S_IXOTH for p in [real, *real.parents]):
            return cand
    return None


def package_files(
    version: str = "0.9.15", python: str | None = None, padding: int = 0
) -> dict[str, tuple[bytes, int]]:
    """Relative path (below the top folder) -> (content, mode)."""
    python = python or standin_python() or "/usr/bin/python3"
    binary = f"#!{python}\n".encode() + SERVER_SOURCE.read_bytes()
    binary = binary.replace(
        b'DEFAULT_VERSION = "0.9.15"', f"DEFAULT_VERSION = {version!r}".encode(), 1
    )
    files = {
        "CarlaUE4.sh": (START_SCRIPT.encode(), 0o755),
        BINARY: (binary, 0o755),
        "PythonAPI/carla/README.txt": (b"stand-in: no PythonAPI here\n", 0o644),
        "Engine/Config/BaseEngine.ini": (b"[stand-in]\n", 0o644),
    }
    if padding:
        files["Import/padding.bin"] = (os.urandom(padding), 0o644)
    return files


def build_package(
    dest_dir: Path,
    fmt: str = "tar.gz",
    *,
    version: str = "0.9.15",
    top: str = TOP,
    name: str | None = None,
    python: str | None = None,
    padding: int = 0,
) -> Path:
    """Write the stand-in archive into dest_dir; returns its path."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    ext = {"tar.gz": ".tar.gz", "tar.xz": ".tar.xz", "zip": ".zip"}[fmt]
    path = dest_dir / (name or f"CARLA_standin_{version}{ext}")
    files = package_files(version, python, padding)
    if fmt == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for rel, (data, mode) in files.items():
                info = zipfile.ZipInfo(
                    f"{top}/{rel}" if top else rel, date_time=(2024, 1, 1, 0, 0, 0)
                )
                info.external_attr = (stat.S_IFREG | mode) << 16
                z.writestr(info, data)
        return path
    with tarfile.open(path, "w:gz" if fmt == "tar.gz" else "w:xz") as t:
        dirs = sorted({str(Path(rel).parent) for rel in files} - {"."})
        for d in ([top] if top else []) + [f"{top}/{d}" if top else d for d in dirs]:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            t.addfile(info)
        for rel, (data, mode) in files.items():
            info = tarfile.TarInfo(f"{top}/{rel}" if top else rel)
            info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
            t.addfile(info, io.BytesIO(data))
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def free_port_triple(host: str = "0.0.0.0") -> int:
    """A port N with N, N+1, N+2 free on host (0.0.0.0: free on every address, as the
    stand-in binds them)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port + 2 > 65535:
            continue
        ok = True
        for p in (port + 1, port + 2):
            with socket.socket() as s:
                try:
                    s.bind((host, p))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free port triple")


def run_local(port: int, *args: str, tmp: Path, version: str = "0.9.15") -> subprocess.Popen:
    """Run the stand-in binary here (as root: allowed by CARLA_STANDIN_ALLOW_ROOT)."""
    files = package_files(version=version, python=standin_python())
    binary = Path(tmp) / "CarlaUE4-Linux-Shipping"
    binary.write_bytes(files[BINARY][0])
    binary.chmod(0o755)
    env = dict(os.environ, CARLA_STANDIN_ALLOW_ROOT="1")
    proc = subprocess.Popen(
        [str(binary), "CarlaUE4", f"-carla-rpc-port={port}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    return proc


def wait_listening(
    host: str, port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None
) -> None:
    """Until host:port accepts; with `proc`, fail at once (with its output) when it exits."""

    def accepts() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            if proc is not None and proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise ServerExited(
                    f"exited with {proc.returncode} before listening on {port}: {out[-500:]}"
                ) from None
            return False

    wait_for(accepts, timeout, f"something listening on {host}:{port}")


class ServerExited(RuntimeError):
    pass


def start_local(
    tmp: Path, *args: str, tries: int = 3, version: str = "0.9.15"
) -> tuple[int, subprocess.Popen]:
    """The stand-in on free ports here, listening; another port triple when a bind lost a race."""
    for attempt in range(tries):
        port = free_port_triple()
        proc = run_local(port, *args, tmp=tmp, version=version)
        try:
            wait_listening("127.0.0.1", port, proc=proc)
            return port, proc
        except ServerExited:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")
