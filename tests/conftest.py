"""
Fixtures shared by the test modules.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .test_twistd import Daemon


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """
    The C{twistd zero} daemons a test starts, stopped at its end.
    """
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()
