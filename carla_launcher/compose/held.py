"""Pure: the address a variant on disk already holds, read against a derivation made for a probe.

`sync --check` on a machine that knows no address (a fresh clone, CI, a pre-commit hook, a
profile with `address: null`) still has to tell a current variant from a stale one. It derives
each variant for a probe address and port that no compose file contains, lines that derivation
up with the file on disk, and reads what stands where the probe does: that is the address (and
port) the variant was written for. The caller then derives for that address and compares as
for any other: only a change of the sources, or a hand edit, makes the variant differ.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass

from carla_launcher.compose.hosts import ENV_HOST
from carla_launcher.netaddr import address_problem

# What the probe derivation writes where the address and the remote port go. `.invalid` is
# reserved (RFC 6761): no compose file names it, no resolver answers for it.
PROBE_ADDRESS = "carla-launch-probe.invalid"
PROBE_PORT = 64999
# How the probe reads in a diff shown to a user when no address could be found.
UNKNOWN_ADDRESS = "<address>"

# what may stand where the probe address does: an address, bracketed where a URL needs it
_ADDRESS = r"\[?([0-9A-Za-z][0-9A-Za-z.:-]*?)\]?"
_PORT = r"(\d{1,5})"
_PROBES = re.compile(f"({re.escape(PROBE_ADDRESS)}|(?<!\\d){PROBE_PORT}(?!\\d))")


@dataclass(frozen=True)
class Held:
    """What a variant on disk points at: an address and port, or the env address mode."""

    address: str | None = None
    port: int | None = None  # None: the line that holds the address names no port
    env: bool = False


def held_target(pairs: list[tuple[str, str]]) -> Held | None:
    """What the variants of one entry hold, from (probe body, body on disk) pairs: the address
    (and port) most of their differing lines agree on, else the env mode when a variant reads
    CARLA_LAUNCH_HOST, else None (nothing on disk says where it points)."""
    addresses: Counter[str] = Counter()
    ports: Counter[int] = Counter()
    env = False
    for probe, disk in pairs:
        for address, port in _votes(probe, disk):
            if address is not None:
                addresses[address] += 1
            if port is not None:
                ports[port] += 1
        env |= "${" + ENV_HOST in disk
    if addresses:
        port = ports.most_common(1)[0][0] if ports else None
        return Held(addresses.most_common(1)[0][0], port)
    return Held(env=True) if env else None


def _votes(probe: str, disk: str) -> list[tuple[str | None, int | None]]:
    """What each disk line holds where its probe line holds the probes. Lines are paired
    within each changed block, so that an edit elsewhere does not hide them."""
    a, b = probe.splitlines(), disk.splitlines()
    out: list[tuple[str | None, int | None]] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "replace":
            continue
        candidates = list(b[j1:j2])
        for line in a[i1:i2]:
            if not _PROBES.search(line):
                continue
            for k, other in enumerate(candidates):
                found = read_line(line, other)
                if found is not None:
                    out.append(found)
                    del candidates[k]
                    break
    return out


def read_line(probe_line: str, disk_line: str) -> tuple[str | None, int | None] | None:
    """The address and port that `disk_line` holds where `probe_line` holds the probes (None
    where it has no such place), when the two lines are otherwise the same and every place of
    one probe holds the same value; else None.

    >>> read_line(f"- CARLA_HOST={PROBE_ADDRESS}", "- CARLA_HOST=10.0.0.5")
    ('10.0.0.5', None)
    >>> read_line(f"url: http://{PROBE_ADDRESS}:{PROBE_PORT}/", "url: http://[fd00::5]:2003/")
    ('fd00::5', 2003)
    >>> read_line(f"--host {PROBE_ADDRESS}", "--host 10.0.0.5 --debug") is None  # not only that
    True
    """
    parts = _PROBES.split(probe_line)
    pattern = "".join(
        _ADDRESS if p == PROBE_ADDRESS else _PORT if p == str(PROBE_PORT) else re.escape(p)
        for p in parts
    )
    m = re.fullmatch(pattern, disk_line)
    if m is None:
        return None
    kinds = parts[1::2]
    addresses = {v for k, v in zip(kinds, m.groups(), strict=True) if k == PROBE_ADDRESS}
    ports = {int(v) for k, v in zip(kinds, m.groups(), strict=True) if k != PROBE_ADDRESS}
    if len(addresses) > 1 or len(ports) > 1:
        return None
    address = addresses.pop() if addresses else None
    if address is not None and address_problem(address) is not None:
        return None
    return address, ports.pop() if ports else None


def unknown_diff(diff: str) -> str:
    """A diff made against the probe, as a user reads it: `<address>` and `<port>` in its place."""
    return re.sub(
        f"(?<!\\d){PROBE_PORT}(?!\\d)", "<port>", diff.replace(PROBE_ADDRESS, UNKNOWN_ADDRESS)
    )
