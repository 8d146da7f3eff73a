"""Root conftest: the harnesses in tests/harness/ are plugins, so their fixtures (isolated HOME,
`run`, `compose_loader`, `box`, `box_factory`, `dockerd`, `dockerd_env`, `busybox_image`,
`daemons`, `project`, `small`) reach every test module without imports."""

from __future__ import annotations

import pytest

# Before any harness module is imported: their asserts get pytest's explanations too.
pytest.register_assert_rewrite("tests.harness")

pytest_plugins = [
    "tests.harness.cli",
    "tests.harness.netns_box",
    "tests.harness.dockerd",
    "tests.harness.daemon",
    "tests.harness.tmux",
    "tests.harness.slurm",
]
