"""Helpers for the FAKE nvidia-smi (`fake-nvidia-smi`): recorded outputs, because this machine
has no GPU. Only tests use it; the product never looks for it."""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAKE = HERE / "fake-nvidia-smi"
CASES_DIR = HERE / "cases"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if p.is_dir())


def install(bin_dir: Path, case: str) -> Path:
    """Copy the fake into `bin_dir` as `nvidia-smi`, with its recorded cases, and choose `case`.
    A copy (not a symlink into the work tree) so that another user (a test box) can run it."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / "nvidia-smi"
    shutil.copy2(FAKE, target)
    target.chmod(0o755)
    cases = bin_dir / "fake-nvidia-smi-cases"
    if cases.exists():
        shutil.rmtree(cases)
    shutil.copytree(CASES_DIR, cases)
    set_case(bin_dir, case)
    return target


def set_case(bin_dir: Path, case: str) -> None:
    """Switch what the installed fake replays (atomically: a running watcher never sees half)."""
    tmp = bin_dir / ".fake-nvidia-smi.case.tmp"
    tmp.write_text(case + "\n", encoding="utf-8")
    tmp.replace(bin_dir / "fake-nvidia-smi.case")


def set_pids(bin_dir: Path, **pids: int) -> None:
    """Which real pids the recorded `{pid:NAME}` rows show (for a box, where env does not reach)."""
    (bin_dir / "fake-nvidia-smi.pids").write_text(
        "".join(f"{k}={v}\n" for k, v in pids.items()), encoding="utf-8"
    )
