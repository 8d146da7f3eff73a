"""pyinfra glue: the fact that reads a box and the operation that runs one planned step.

Imports pyinfra, so only the deploy child process (and a plain `pyinfra` deploy file, as in
bench/deploy.py) may import this module. The decisions live in `plan.py`; an operation with
nothing to do reports a no-op and sends no command, so a second deploy costs one round trip.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation


class BoxFactsFact(FactBase):
    """Runs `facts.box_facts_script(...)`; returns its raw lines (parsed by `facts.py`)."""

    def command(self, script: str) -> str:  # type: ignore[override]
        return script

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:  # type: ignore[override]
        return list(output)


@operation()
def step(
    script: str | None = None,
    why: str = "",
    upload: tuple[str, str] | list[str] | None = None,
    after_upload: str | None = None,
):
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
