"""Shared fixtures (helpers live in tests/helpers.py): the contract suite's ``transport``
parameter and real redis-servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import RedisServer


@pytest.fixture(params=["sse", "websocket"])
def transport(request: pytest.FixtureRequest) -> str:
    """The contract suite runs once per transport."""
    return str(request.param)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (tests use fresh stream ids, so they don't collide)."""
    server = RedisServer().start()
    yield server
    server.kill()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, which the test may kill and restart."""
    server = RedisServer().start()
    yield server
    server.kill()
