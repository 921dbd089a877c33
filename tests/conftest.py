"""Shared fixtures (helpers live in tests/helpers.py): the contract suite's ``transport``
parameter, real redis-servers, and two workers' stream logs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.helpers import LOG_BOUNDS, RedisServer
from tokenwire.streams.log import MemoryStreamLog, StreamLog
from tokenwire.streams.redis_log import RedisStreamLog


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


@pytest.fixture(params=["memory", "redis"])
async def shared_logs(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[tuple[StreamLog, StreamLog]]:
    """Two stream logs that share their storage, as two workers' (on one Redis; in memory,
    the same object), once per backend."""
    if request.param == "memory":
        log = MemoryStreamLog(**LOG_BOUNDS)
        yield log, log
        return
    first, second = (
        RedisStreamLog(redis_server.url, **LOG_BOUNDS),
        RedisStreamLog(redis_server.url, **LOG_BOUNDS),
    )
    await first.start()
    await second.start()
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()
