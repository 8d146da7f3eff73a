"""The install marker: what deploy installed at the package root, read the same way everywhere.

Deploy's unpack step writes `sha256=<hex>`, `url=<url>` and `archive=<name>` lines into
`<root>/.carla-launch-package` (`shell.MARKER`); the next deploy skips the install when it names
the same archive, and `doctor` says whether the install matches the profile. Pure.

>>> m = parse_marker("sha256=" + "AB" * 32 + "\\nurl=https://x/y.tar.xz\\n")
>>> marker_sha256(m) == "ab" * 32, marker_url(m)
(True, 'https://x/y.tar.xz')
"""

from __future__ import annotations

from collections.abc import Mapping

from carla_launcher.box.parsers import parse_key_values

SHA256_KEY = "sha256"
URL_KEY = "url"


def parse_marker(text: str) -> dict[str, str]:
    """The marker's `key=value` lines -> dict."""
    return parse_key_values(text.splitlines())


def marker_sha256(marker: Mapping[str, str] | None) -> str | None:
    """The archive checksum the marker records (lower-case hex), or None."""
    value = (marker or {}).get(SHA256_KEY, "").strip().lower()
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value
    return None


def marker_url(marker: Mapping[str, str] | None) -> str | None:
    """The URL the installed archive came from, or None."""
    return (marker or {}).get(URL_KEY) or None
