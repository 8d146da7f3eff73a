#!/usr/bin/env python3
"""Benchmark of `carla-launch doctor`: prints JSON.

1. `doctor --json` as a fresh process on this machine (goal < 2 s), with the tests' FAKE
   nvidia-smi first on PATH (this machine has no GPU; its own cost is measured and reported,
   since a real nvidia-smi takes 50-500 ms depending on the driver's persistence mode).
2. `doctor P --json` against one box on loopback (goal < 5 s): a real OpenSSH server on
   127.0.0.1 started here (root only), strict host keys, the fake installed on the box's PATH.
   That adds one real ssh round trip (connect, key exchange, the check script) to (1).

Runs each case `--repeat` times and reports min and median wall time.

    python -m bench.doctor [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.harness.fake_nvidia_smi import install


def timed(
    argv: list[str], env: dict[str, str], cwd: Path, repeat: int
) -> tuple[list[float], subprocess.CompletedProcess[str]]:
    times = []
    last = None
    for _ in range(repeat):
        t = time.perf_counter()
        last = subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=cwd, stdin=subprocess.DEVNULL
        )
        times.append(time.perf_counter() - t)
    assert last is not None
    return times, last


def stats(times: list[float]) -> dict[str, float]:
    return {"min": round(min(times), 3), "median": round(statistics.median(times), 3)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sshd(work: Path, fake_bin: Path) -> tuple[subprocess.Popen[bytes], int, Path, Path]:
    """sshd on 127.0.0.1 with its own host key; the session PATH starts with the fake."""
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / name)], check=True
        )
    shutil.copy(work / "client.pub", work / "authorized_keys")
    port = free_port()
    cfg = work / "sshd_config"
    cfg.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {work / 'host'}\n"
        f"AuthorizedKeysFile {work / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PidFile {work / 'sshd.pid'}\nSetEnv PATH={fake_bin}:/usr/local/bin:/usr/bin:/bin\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)], stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    known = work / "known_hosts"
    known.write_text(
        f"[127.0.0.1]:{port} " + " ".join((work / "host.pub").read_text().split()[:2]) + "\n"
    )
    return proc, port, work / "client", known


def netns_box(
    work: Path, env: dict[str, str], cmd: list[str], args: argparse.Namespace
) -> dict[str, object]:
    """The same against a network-namespace box of the test suite (tests/harness/netns_box.py):
    a user login, the fake in its ~/.local/bin, the stand-in package installed and verified."""
    try:
        from tests.harness.netns_box import make_box, missing
    except ImportError as e:
        return {"netns_box_s": None, "netns_box_skipped": str(e)}
    why = missing()
    if why:
        return {"netns_box_s": None, "netns_box_skipped": why}
    box = make_box(work / "netns", login="user")
    try:
        home = Path(f"/home/{box.user}")
        install(home / ".local" / "bin", args.case)
        subprocess.run(["chown", "-R", f"{box.user}:", str(home / ".local")], check=True)
        box.preinstall()
        times, res = timed([*cmd[:-1], str(box.profile_path), "--json"], env, box.dir, args.repeat)
        data = json.loads(res.stdout)
        return {
            "netns_box_s": stats(times),
            "netns_box_ok": statistics.median(times) < 5.0,
            "netns_box_checks": {c["name"]: c["status"] for c in data["checks"] if c.get("host")},
        }
    finally:
        box.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--case", default="rtx3060-12gb", help="the fake's recorded case")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cl-bench-doctor-"))
    out: dict[str, object] = {
        "goal_local_s": 2.0,
        "goal_box_s": 5.0,
        "repeat": args.repeat,
        "fake_case": args.case,
    }
    try:
        fake_bin = work / "fakebin"
        install(fake_bin, args.case)
        (work / "home").mkdir()
        env = dict(os.environ)
        env.update(
            PATH=f"{fake_bin}{os.pathsep}{env['PATH']}",
            CARLA_LAUNCH_GPU_BACKEND="smi",
            HOME=str(work / "home"),
            XDG_STATE_HOME=str(work / "state"),
        )
        env.pop("FAKE_NVIDIA_SMI_CASE", None)
        cmd = [sys.executable, "-m", "carla_launcher", "doctor", "--json"]

        fake_t, _ = timed(
            [
                str(fake_bin / "nvidia-smi"),
                "--query-gpu=index,name",
                "--format=csv,noheader,nounits",
            ],
            env,
            work,
            args.repeat,
        )
        out["fake_nvidia_smi_call_s"] = stats(fake_t)
        local_t, res = timed(cmd, env, work, args.repeat)
        out["local_s"] = stats(local_t)
        out["local_verdict"] = json.loads(res.stdout)["verdict"]

        if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
            out["box_s"] = None
            out["box_skipped"] = "needs root and openssh-server for a loopback sshd"
        else:
            proc, port, key, known = start_sshd(work, fake_bin)
            try:
                prof = work / "profiles" / "loop.yaml"
                prof.parent.mkdir()
                prof.write_text(
                    f"remote:\n  host: 127.0.0.1\n  port: {port}\n  user: root\n"
                    f"  identity_file: {key}\n  known_hosts: {known}\nserver:\n  port: 2000\n"
                )
                t0 = time.perf_counter()
                probe = subprocess.run(
                    [
                        "ssh",
                        "-i",
                        str(key),
                        "-p",
                        str(port),
                        "-o",
                        f"UserKnownHostsFile={known}",
                        "-o",
                        "BatchMode=yes",
                        "-o",
                        "StrictHostKeyChecking=yes",
                        "root@127.0.0.1",
                        "true",
                    ],
                    capture_output=True,
                    env=env,
                )
                out["plain_ssh_round_trip_s"] = round(time.perf_counter() - t0, 3)
                if probe.returncode != 0:
                    raise RuntimeError(f"loopback sshd refused us: {probe.stderr.decode().strip()}")
                box_t, res = timed([*cmd[:-1], "loop", "--json"], env, work, args.repeat)
                if not res.stdout.strip():
                    raise RuntimeError(f"doctor printed nothing: {res.stderr.strip()}")
                data = json.loads(res.stdout)
                out["box_s"] = stats(box_t)
                out["box_checks"] = {
                    c["name"]: c["status"] for c in data["checks"] if c.get("host")
                }
            finally:
                proc.terminate()
                proc.wait(timeout=5)
        out.update(netns_box(work, env, cmd, args))
        out["local_ok"] = out["local_s"]["median"] < 2.0  # type: ignore[index]
        if isinstance(out.get("box_s"), dict):
            out["box_ok"] = out["box_s"]["median"] < 5.0  # type: ignore[index]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
