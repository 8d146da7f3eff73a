"""Pure: what a variant did to its source, told from the two texts: the simulator it removed, how
many references it points where, and the diff from source to variant (`sync --diff`).

Read from the files rather than from the derivation, so that a variant known current from its key
alone (keys.py: nothing parsed) is described as fully as one written a moment ago.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from carla_launcher.compose.hosts import DOCKER_HOST_NAME, ENV_HOST, ENV_URL_HOST
from carla_launcher.compose.keys import Target
from carla_launcher.compose.variants import split_header
from carla_launcher.netaddr import for_url, is_ipv6

# the key line's ` simulator=NAME:WORLD_PORT:FOUND` (keys.key_meta; NAME is %-escaped)
_SIMULATOR = re.compile(r" simulator=([^\s:]+):(\d+):")
_ENV_MARKS = ("${" + ENV_HOST + ":", "${" + ENV_URL_HOST + ":")


@dataclass(frozen=True)
class Facts:
    """What one variant did: `simulator` is the service its project no longer has (None for a
    variant of an included file, which is part of its entry's project); `where` is the
    address and port agents now use, or the variable they read in the env address mode."""

    simulator: str | None
    references: int
    where: str
    env: bool = False


def header_simulator(variant_text: str) -> tuple[str, int] | None:
    """(simulator, its world port) an entry's variant was derived for, from its header."""
    head = variant_text.split("\n", 3)[:3]
    m = _SIMULATOR.search(head[2]) if len(head) == 3 else None
    return (unquote(m.group(1)), int(m.group(2))) if m else None


def describe(
    variant_text: str, source_text: str, target: Target, entry: tuple[str, int] | None
) -> Facts:
    """The facts of one variant. `entry`: (simulator, world port) of its entry's variant
    (header_simulator), which also says where the port comes from."""
    _, _, body = split_header(variant_text)
    own = header_simulator(variant_text)
    simulator = own[0] if own is not None else None
    if target.env or target.address is None:
        return Facts(simulator, _added(source_text, body, _env_count), "$" + ENV_HOST, env=True)
    port = target.port if target.port is not None else entry[1] if entry else None
    where = for_url(target.address) + (f":{port}" if port is not None else "")
    pattern = _address_pattern(target.address)

    def references(text: str) -> int:  # the extra_hosts entry that maps the name is no reference
        return len(pattern.findall(_GATEWAY_ENTRY.sub("", text)))

    count = _added(source_text, body, references)
    return Facts(simulator, count, where)


#: `host.docker.internal:host-gateway` (list form) or `host.docker.internal: host-gateway`
_GATEWAY_ENTRY = re.compile(re.escape(DOCKER_HOST_NAME) + r"[\"']?\s*[:=]\s*[\"']?host-gateway")


def _address_pattern(address: str) -> re.Pattern[str]:
    """The address as a whole token: 10.0.0.5 is not in 10.0.0.50 nor in host-10.0.0.5."""
    after = r"(?![0-9A-Za-z_:-])" if is_ipv6(address) else r"(?![0-9A-Za-z_-]|\.[0-9A-Za-z])"
    return re.compile(r"(?<![0-9A-Za-z_.:-])" + re.escape(address) + after)


def _env_count(text: str) -> int:
    return sum(text.count(mark) for mark in _ENV_MARKS)


def _added(source: str, body: str, count: Callable[[str], int]) -> int:
    """How many occurrences the variant has that the lines it replaced did not: changed and new
    lines only, so that an address the source already held, or the removed simulator's own
    lines, do not count."""
    a, b = source.splitlines(), body.splitlines()
    total = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag in ("replace", "insert"):
            new = count("\n".join(b[j1:j2]))
            old = count("\n".join(a[i1:i2])) if tag == "replace" else 0
            total += max(0, new - old)
    return total


def source_diff(source_name: str, source_text: str, variant_name: str, variant_text: str) -> str:
    """The variant against its source, as `diff -u SOURCE VARIANT` shows it (header left out:
    it holds hashes, not content)."""
    _, _, body = split_header(variant_text)
    return "".join(
        difflib.unified_diff(
            source_text.splitlines(keepends=True),
            body.splitlines(keepends=True),
            source_name,
            variant_name,
        )
    )
