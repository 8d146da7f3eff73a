"""A stand-in for CARLA's server binary (`CarlaUE4-Linux-Shipping`), for tests.

Standard library only: it runs as the box's server user with the system python3, which has no
msgpack. It behaves as the facts in notes/carla-and-peers.md say a real server does:
- refuses to run as root ("Refusing to run with the root privileges.");
- listens on the RPC port N (-carla-rpc-port / -world-port / -carla-port / -carla-world-port,
  default 2000), the streaming port N+1 and the secondary port N+2 (bind clash: Signal 11);
- answers the msgpack-rpc call `version` only with CARLA's call metadata: request
  `[0, id, "version", [[false]]]`, reply `[1, id, nil, [[1, "<version>"]]]`; a call without
  the metadata gets an rpclib error, an unknown function too;
- prints log lines like a server; on SIGSEGV (and SIGTERM, as UE4 does) it prints
  "Signal 11 caught." and dies of signal 11.
Test knobs (not CARLA's): -standin-startup=SECONDS (map loading before the RPC port opens),
-standin-version=V, CARLA_STANDIN_ALLOW_ROOT=1, and the `argv=` log line with the exact args.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

DEFAULT_VERSION = "0.9.15"  # the package builder rewrites this line for other versions


# -- a minimal msgpack (the subset rpclib uses) ---------------------------------------------------
class NeedMore(Exception):
    pass


def pack(obj: object) -> bytes:
    if obj is None:
        return b"\xc0"
    if obj is True:
        return b"\xc3"
    if obj is False:
        return b"\xc2"
    if isinstance(obj, int):
        if 0 <= obj < 0x80:
            return bytes([obj])
        if -32 <= obj < 0:
            return struct.pack("b", obj)
        if 0 <= obj < 2**32:
            return b"\xce" + struct.pack(">I", obj)
        return b"\xd3" + struct.pack(">q", obj)
    if isinstance(obj, float):
        return b"\xcb" + struct.pack(">d", obj)
    if isinstance(obj, str):
        data = obj.encode()
        if len(data) < 32:
            return bytes([0xA0 | len(data)]) + data
        if len(data) < 256:
            return b"\xd9" + bytes([len(data)]) + data
        return b"\xdb" + struct.pack(">I", len(data)) + data
    if isinstance(obj, bytes):
        return b"\xc6" + struct.pack(">I", len(obj)) + obj
    if isinstance(obj, (list, tuple)):
        head = bytes([0x90 | len(obj)]) if len(obj) < 16 else b"\xdd" + struct.pack(">I", len(obj))
        return head + b"".join(pack(x) for x in obj)
    raise TypeError(type(obj))


def unpack(buf: bytes, i: int = 0) -> tuple[object, int]:
    """One object from buf[i:], and the index after it; NeedMore if incomplete."""

    def take(n: int) -> bytes:
        nonlocal i
        if i + n > len(buf):
            raise NeedMore
        chunk = buf[i : i + n]
        i += n
        return chunk

    b = take(1)[0]
    if b < 0x80:
        return b, i
    if b >= 0xE0:
        return b - 0x100, i
    if 0xA0 <= b <= 0xBF:
        return take(b & 0x1F).decode("utf-8", "replace"), i
    if 0x90 <= b <= 0x9F:
        return _seq(buf, i, b & 0x0F)
    if 0x80 <= b <= 0x8F:
        return _map(buf, i, b & 0x0F)
    simple = {0xC0: None, 0xC2: False, 0xC3: True}
    if b in simple:
        return simple[b], i
    ints = {
        0xCC: ">B",
        0xCD: ">H",
        0xCE: ">I",
        0xCF: ">Q",
        0xD0: ">b",
        0xD1: ">h",
        0xD2: ">i",
        0xD3: ">q",
        0xCA: ">f",
        0xCB: ">d",
    }
    if b in ints:
        fmt = ints[b]
        return struct.unpack(fmt, take(struct.calcsize(fmt)))[0], i
    lens = {0xD9: ">B", 0xDA: ">H", 0xDB: ">I", 0xC4: ">B", 0xC5: ">H", 0xC6: ">I"}
    if b in lens:
        fmt = lens[b]
        n = struct.unpack(fmt, take(struct.calcsize(fmt)))[0]
        data = take(n)
        return (data.decode("utf-8", "replace") if b >= 0xD9 else data), i
    if b in (0xDC, 0xDD):
        n = struct.unpack(">H" if b == 0xDC else ">I", take(2 if b == 0xDC else 4))[0]
        return _seq(buf, i, n)
    if b in (0xDE, 0xDF):
        n = struct.unpack(">H" if b == 0xDE else ">I", take(2 if b == 0xDE else 4))[0]
        return _map(buf, i, n)
    raise ValueError(f"msgpack type 0x{b:02x} not supported by the stand-in")


def _seq(buf: bytes, i: int, n: int) -> tuple[list, int]:
    out = []
    for _ in range(n):
        item, i = unpack(buf, i)
        out.append(item)
    return out, i


def _map(buf: bytes, i: int, n: int) -> tuple[dict, int]:
    out = {}
    for _ in range(n):
        k, i = unpack(buf, i)
        v, i = unpack(buf, i)
        out[k] = v
    return out, i


# -- the server ----------------------------------------------------------------------------------
def log(line: str) -> None:
    print(line, flush=True)


def option(argv: list[str], names: tuple[str, ...], default: str | None = None) -> str | None:
    for arg in argv:
        for name in names:
            for dashes in ("-", "--"):
                prefix = f"{dashes}{name}="
                if arg.lower().startswith(prefix):
                    return arg[len(prefix) :]
    return default


def crash(signum: int, _frame: object) -> None:
    log("Signal 11 caught.")
    log("Malloc Size=65538 LargeMemoryPoolOffset=65554")
    log("CommonUnixCrashHandler: Signal=11")
    signal.signal(signal.SIGSEGV, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGSEGV)


def reply_for(request: object, version: str) -> bytes | None:
    if not isinstance(request, list) or len(request) != 4 or request[0] != 0:
        return None  # notifications and garbage get no answer
    _, msgid, method, params = request
    params = params if isinstance(params, list) else [params]
    if method != "version":
        return pack(
            [
                1,
                msgid,
                f"rpclib: server could not find function '{method}' with argument "
                f"count {len(params)}.",
                None,
            ]
        )
    metadata_ok = (
        len(params) == 1
        and isinstance(params[0], list)
        and len(params[0]) == 1
        and isinstance(params[0][0], bool)
    )
    if not metadata_ok:
        return pack(
            [
                1,
                msgid,
                "rpclib: function 'version' (called with "
                f"{len(params)} arg(s)) threw an exception. The exception "
                "contained this information: Function 'version' was called with "
                f"an invalid number of arguments. Expected: 1, got: {len(params)}",
                None,
            ]
        )
    return pack([1, msgid, None, [[1, version]]])


def main(argv: list[str]) -> int:
    args = argv[1:]
    if args and args[0] == "CarlaUE4":  # CarlaUE4.sh passes the project name first
        args = args[1:]
    log("4.26.2-0+++UE4+Release-4.26 522 0")
    log("Disabling core dumps.")
    if os.geteuid() == 0 and os.environ.get("CARLA_STANDIN_ALLOW_ROOT") != "1":
        log("Refusing to run with the root privileges.")
        return 1
    log("LogInit: Command Line: " + " ".join(args))
    log("StandIn: argv=" + json.dumps(args))
    port = int(
        option(args, ("carla-rpc-port", "world-port", "carla-port", "carla-world-port"), "2000")
        or 2000
    )
    streaming = int(option(args, ("carla-streaming-port",), str(port + 1)) or port + 1)
    secondary = int(option(args, ("carla-secondary-port",), str(port + 2)) or port + 2)
    version = option(args, ("standin-version",), DEFAULT_VERSION) or DEFAULT_VERSION
    startup = float(option(args, ("standin-startup",), "0") or 0)
    signal.signal(signal.SIGSEGV, crash)
    signal.signal(signal.SIGTERM, crash)  # UE4 segfaults on a plain SIGTERM
    log("LogCarla: Loading map ...")
    if startup > 0:
        time.sleep(startup)
    sel = selectors.DefaultSelector()
    listeners = {}
    for p in (port, streaming, secondary):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", p))
        except OSError as e:
            log(f"bind: {e.strerror}")
            crash(signal.SIGSEGV, None)
        s.listen(16)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, "listen")
        listeners[s] = p
    log(
        f"LogCarla: Initialized CarlaServer: Ports(rpc={port}, streaming={streaming}, "
        f"secondary={secondary})"
    )
    log(f"LogCarla: Server version {version} ready")
    buffers: dict[socket.socket, bytes] = {}
    while True:
        for key, _ in sel.select(timeout=1.0):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "listen":
                try:
                    conn, _addr = sock.accept()
                except OSError:
                    continue
                conn.setblocking(False)
                if listeners[sock] == port:
                    sel.register(conn, selectors.EVENT_READ, "rpc")
                    buffers[conn] = b""
                else:
                    sel.register(conn, selectors.EVENT_READ, "other")
                continue
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                buffers.pop(sock, None)
                sock.close()
                continue
            if key.data != "rpc":
                continue
            buf = buffers[sock] + data
            i = 0
            try:
                while i < len(buf):
                    request, i = unpack(buf, i)
                    out = reply_for(request, version)
                    if out:
                        sock.setblocking(True)
                        sock.sendall(out)
                        sock.setblocking(False)
            except NeedMore:
                pass
            except ValueError:
                sel.unregister(sock)
                sock.close()
                buffers.pop(sock, None)
                continue
            buffers[sock] = buf[i:]


if __name__ == "__main__":
    sys.exit(main(sys.argv))
