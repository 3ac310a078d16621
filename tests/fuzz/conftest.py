"""Fuzz fixtures: the servers under fuzz, started on first use and stopped after the module."""

from __future__ import annotations

import pytest
from fuzz_servers import SERVERS, Target


@pytest.fixture(scope="module")
def servers():
    started: dict[str, Target] = {}

    def get(name: str) -> Target:
        if name not in started:
            started[name] = SERVERS[name]()
        return started[name]

    yield get
    for target in started.values():
        target.stop()
