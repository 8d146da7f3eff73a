"""The one protocol for asking a box several things in one round trip. Pure.

A script is a list of named shell snippets. Each prints `##carla-launch## NAME`, its output,
then `##carla-launch## rc N` with the snippet's exit code, so a caller can tell "no output"
from "failed". Every snippet reads /dev/null (the script also works when fed to `sh -s` on
stdin, as OpenSSH gets it) and its stderr is dropped (a snippet that wants the error text
redirects it into stdout itself). Text before the first section (a login banner, a noisy
~/.bashrc) is ignored by `parse`.

>>> import subprocess
>>> out = subprocess.run(["sh", "-c", script([("a", "echo hi"), ("b", "false")])],
...                      capture_output=True, text=True).stdout
>>> parse(out)
{'a': Section(text='hi', rc=0), 'b': Section(text='', rc=1)}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MARK = "##carla-launch## "


@dataclass(frozen=True)
class Section:
    """What one snippet printed, and its exit code (None: the script stopped inside it)."""

    text: str
    rc: int | None

    @property
    def lines(self) -> list[str]:
        """The non-blank lines of the output."""
        return [line for line in self.text.splitlines() if line.strip()]


def script(items: Iterable[tuple[str, str]]) -> str:
    """The shell text that runs each (name, snippet) as one section."""
    out = []
    for name, command in items:
        if not name.replace("_", "").replace("-", "").isalnum() or name == "rc":
            raise ValueError(f"not a section name: {name!r}")
        out.append(f"printf '\\n{MARK}%s\\n' {name}")
        out.append(f"{{ {command.strip()}\n}} </dev/null 2>/dev/null")
        out.append(f"printf '\\n{MARK}rc %s\\n' \"$?\"")
    return "\n".join(out) + "\n"


def parse(stdout: str) -> dict[str, Section]:
    """The inverse of `script`: NAME -> Section. A section cut short keeps rc None."""
    out: dict[str, Section] = {}
    name: str | None = None
    buf: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(MARK):
            tag = line[len(MARK) :].strip()
            if tag.startswith("rc ") and name is not None:
                rc = tag[3:].strip()
                out[name] = Section(
                    "\n".join(buf).strip("\n"), int(rc) if rc.lstrip("-").isdigit() else None
                )
                name, buf = None, []
            else:
                if name is not None:
                    out[name] = Section("\n".join(buf).strip("\n"), None)
                name, buf = tag, []
        elif name is not None:
            buf.append(line)
    if name is not None:
        out[name] = Section("\n".join(buf).strip("\n"), None)
    return out
