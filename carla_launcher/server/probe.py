"""Is CARLA up? Ask it for its version over its own RPC protocol, without the 30 MB client.

CARLA's RPC is rpclib's msgpack-rpc over TCP (a raw msgpack stream, no length prefix):
request `[0, msgid, "version", [[false]]]` (CARLA prepends call metadata `[false]` to every
call, and a real server rejects a call without it), reply `[1, msgid, nil, [[1, "0.9.15"]]]`
(the result is a variant `[index, value]`; index 0 carries a server-side error). A TCP accept
alone is not enough: the port opens before the map has loaded.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable

import msgpack

from carla_launcher.errors import LauncherError

_ids = itertools.count(1)


class NotReady(LauncherError):
    """The server did not (yet) answer `version`; the message says how it failed."""

    exit_code = 1


class ProtocolError(NotReady):
    """Something answered, but not as a CARLA server does."""


class RpcErrorReply(ProtocolError):
    """A well-formed msgpack-rpc error reply: an RPC server is alive, its version unknown."""


def version_request(msgid: int) -> bytes:
    packed: bytes = msgpack.packb([0, msgid, "version", [[False]]])
    return packed


def parse_version_reply(reply: object, msgid: int) -> str:
    """The version in a reply; raises ProtocolError for anything else."""
    if not isinstance(reply, (list, tuple)) or len(reply) != 4 or reply[0] != 1:
        raise ProtocolError(f"not a msgpack-rpc response: {reply!r:.80}")
    _, rid, error, result = reply
    if rid != msgid:
        raise ProtocolError(f"response to call {rid!r}, expected {msgid}")
    if error is not None:
        # rpclib's own error (e.g. a server without CARLA's call metadata): alive, but odd.
        raise RpcErrorReply(f"the server answered with an RPC error: {error!r:.120}")
    value = result
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], (list, tuple)):
        value = value[0]  # Response<T> is an array holding the variant
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] in (0, 1):
        if value[0] == 0:
            raise ProtocolError(f"the server reported an error: {value[1]!r:.120}")
        value = value[1]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise ProtocolError(f"unexpected version value: {value!r:.80}")
    return value  # may be "0.9.15", "0.9.15-dirty" or a git hash like "abd96a94": all fine


def probe_version(host: str, port: int, timeout: float = 5.0) -> str:
    """CARLA's version string, or NotReady saying why not (refused, timed out, not CARLA)."""
    msgid = next(_ids) & 0xFFFFFFFF
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(version_request(msgid))
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NotReady(
                        f"{host}:{port}: connected, no answer to `version` within {timeout:g} s"
                    )
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    raise NotReady(f"{host}:{port}: connection closed before an answer")
                unpacker.feed(chunk)
                for reply in unpacker:
                    try:
                        return parse_version_reply(reply, msgid)
                    except ProtocolError as e:
                        raise type(e)(f"{host}:{port}: {e}") from None
    except NotReady:
        raise
    except ConnectionRefusedError:
        raise NotReady(f"{host}:{port}: connection refused") from None
    except TimeoutError:
        raise NotReady(f"{host}:{port}: no answer within {timeout:g} s") from None
    except msgpack.exceptions.ExtraData as e:
        raise ProtocolError(f"{host}:{port}: garbled answer ({e})") from None
    except (ValueError, msgpack.exceptions.UnpackException) as e:
        raise ProtocolError(f"{host}:{port}: not msgpack ({e})") from None
    except OSError as e:
        raise NotReady(f"{host}:{port}: {e.strerror or e}") from None


Progress = Callable[[float, str], None]  # (seconds waited so far, last reason) -> None


def wait_ready(
    host: str,
    port: int,
    budget_s: float,
    on_progress: Progress | None = None,
    *,
    interval: float = 1.0,
    attempt_timeout: float = 5.0,
    should_abort: Callable[[], str | None] | None = None,
    abort_every: float = 3.0,
) -> str:
    """Probe until CARLA answers or the budget is spent; the version, else NotReady.

    `on_progress` is called after every failed attempt; `should_abort` (e.g. "the server
    process is gone") is asked every `abort_every` seconds and ends the wait with its reason.
    """
    start = time.monotonic()
    last_abort_check = start
    reason = "not tried"
    while True:
        left = budget_s - (time.monotonic() - start)
        try:
            return probe_version(host, port, timeout=max(0.2, min(attempt_timeout, left)))
        except RpcErrorReply as e:  # alive; an old or odd build. Report, never fail on it.
            return f"unknown ({str(e).removeprefix(f'{host}:{port}: ')})"
        except NotReady as e:
            reason = str(e).removeprefix(f"{host}:{port}: ")
        waited = time.monotonic() - start
        if on_progress is not None:
            on_progress(waited, reason)
        if should_abort is not None and time.monotonic() - last_abort_check >= abort_every:
            last_abort_check = time.monotonic()
            why = should_abort()
            if why:
                raise NotReady(f"{host}:{port}: {why}")
        if waited + interval > budget_s:
            raise NotReady(f"{host}:{port}: not ready after {budget_s:g} s ({reason})")
        time.sleep(interval)
