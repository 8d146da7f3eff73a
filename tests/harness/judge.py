"""Judge a distributed variant written by `sync`: the real compose loader's model of it must be
the oracle's model of its source (tests/harness/oracle.py), and a case's text fragments, absent
fragments and other files must be as the case says. Shared by the contract and real-world
tests, whose cases have the same shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.harness.compose_loader import load_model
from tests.harness.oracle import comparable, expected_model, with_host_gateway


def judge_variant(
    case: dict[str, Any],
    folder: Path,
    address: str,
    port: int | None,
    sim: str,
    env: dict[str, str] | None = None,
) -> None:
    """The case's variant, loaded by compose, is the oracle's model of its source; and the
    case's text fragments, absent fragments and other files are as it says."""
    variant = folder / case["variant"]
    source = folder / case["variant"].replace(".distributed", "").replace("-distributed", "")
    assert variant.is_file(), (
        f"no variant written; files: {sorted(p.name for p in folder.iterdir())}"
    )
    model = load_model(source)
    want = expected_model(model, sim, address, port)
    if env is not None:  # the env mode: the address may be a tunnel's host.docker.internal
        want = with_host_gateway(want, model)
    assert comparable(load_model(variant, env=env)) == comparable(want)
    text = variant.read_text()
    for fragment in case.get("text", []):
        assert fragment in text
    for fragment in case.get("absent", []):
        assert fragment not in text.split("\n", 3)[3]
    for extra in case.get("also", []):
        assert (folder / extra).is_file()
    for other, fragments in case.get("absent_in", {}).items():
        body = (folder / other).read_text().split("\n", 3)[3]
        for fragment in fragments:
            assert fragment not in body, f"{fragment!r} left in {other}:\n{body}"
    for missing in case.get("no_variant", []):
        assert not (folder / missing).exists()
