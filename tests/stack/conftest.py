"""Fixtures of the stack's end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.dockerd import DockerDaemon
from tests.harness.parallel import projects, remove_projects


@pytest.fixture
def own_projects(dockerd: DockerDaemon) -> Iterator[None]:
    """The daemon serves the whole session: remove every compose project this test made."""
    before = projects(dockerd)
    yield
    remove_projects(dockerd, projects(dockerd) - before)
