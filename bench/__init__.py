"""Benchmarks, run from the repository root as modules (`python -m bench.sync`, ...); each
prints one JSON document. They import the test harnesses (`tests.harness`) as a package."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
