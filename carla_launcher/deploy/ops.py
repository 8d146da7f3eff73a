"""pyinfra glue: the fact that reads a box and the operation that runs one planned step.

Imports pyinfra, so only the deploy child process (and a plain `pyinfra` deploy file, as in
bench/deploy.py) may import this module. The decisions live in `plan.py`; an operation with
nothing to do reports a no-op and sends no command, so a second deploy costs one round trip.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pyinfra.api.command import FileUploadCommand, StringCommand
from pyinfra.api.facts import FactBase
from pyinfra.api.operation import operation
from pyinfra.context import host

from carla_launcher.box.facts import BoxFacts, parse_facts


class BoxFactsFact(FactBase[BoxFacts]):
    """pyinfra's transport for `box.facts`: runs a `facts_script(...)`, parses it with
    `parse_facts` (pyinfra makes one instance per host and fact, so `command` may keep the
    packages the parser needs)."""

    packages: tuple[str, ...] = ()

    def command(self, script: str, packages: tuple[str, ...] = ()) -> str:
        self.packages = tuple(packages)
        return script

    @staticmethod
    def default() -> BoxFacts:
        return BoxFacts()

    def process(self, output: list[str]) -> BoxFacts:
        return parse_facts("\n".join(output), packages=self.packages)


@operation()
def step(
    script: str | None = None,
    why: str = "",
    upload: tuple[str, str] | list[str] | None = None,
    after_upload: str | None = None,
) -> Generator[Any, None, None]:
    """One step of the plan: its script (plus an upload between two scripts), or a no-op."""
    if script is None:
        host.noop(why)
        return
    yield StringCommand(script)
    if upload:
        local, remote = upload
        yield FileUploadCommand(local, remote)
        if after_upload:
            yield StringCommand(after_upload)
