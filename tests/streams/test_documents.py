"""The stream log's documents (``put_document`` / ``get_document``), on both backends: kept
for their TTL, replaced by a later put, shared by every process on one Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.helpers import RedisServer
from tokenwire.streams.log import MemoryStreamLog, StreamLog, StreamLogUnavailable
from tokenwire.streams.redis_log import RedisStreamLog

BOUNDS = {"max_events": 100, "max_bytes": 1 << 20, "ttl": 60.0}


@pytest.fixture(params=["memory", "redis"])
async def logs(request, redis_server: RedisServer) -> AsyncIterator[tuple[StreamLog, StreamLog]]:
    """Two logs that share their storage (two workers): the same object in memory."""
    if request.param == "memory":
        log = MemoryStreamLog(**BOUNDS)
        yield log, log
        return
    first, second = (
        RedisStreamLog(redis_server.url, **BOUNDS),
        RedisStreamLog(redis_server.url, **BOUNDS),
    )
    await first.start()
    await second.start()
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_document_put_by_one_worker_is_read_by_another(logs):
    writer, reader = logs
    assert await reader.get_document("doc:absent") is None
    await writer.put_document("doc:a", '{"v":1}', ttl=60)
    assert await reader.get_document("doc:a") == '{"v":1}'
    await writer.put_document("doc:a", "é2", ttl=60)  # replaced; text round-trips
    assert await reader.get_document("doc:a") == "é2"


async def test_an_expired_document_is_gone(logs, monkeypatch):
    writer, reader = logs
    if isinstance(writer, RedisStreamLog):
        await writer.put_document("doc:short", "x", ttl=0.2)  # Redis rounds up to 1 s
        assert await writer.redis.ttl("tokenwire:doc:doc:short") == 1
        return
    await writer.put_document("doc:short", "x", ttl=5)
    import tokenwire.streams.log as module

    later = module.time.monotonic() + 6
    monkeypatch.setattr(module.time, "monotonic", lambda: later)
    assert await reader.get_document("doc:short") is None


async def test_the_memory_log_keeps_at_most_max_streams_documents():
    log = MemoryStreamLog(**BOUNDS, max_streams=2)
    for key in ("a", "b", "c"):
        await log.put_document(key, key, ttl=60)
    assert [await log.get_document(key) for key in ("a", "b", "c")] == [None, "b", "c"]


async def test_redis_down_is_unavailable(own_redis: RedisServer):
    log = RedisStreamLog(own_redis.url, **BOUNDS)
    await log.start()
    try:
        own_redis.kill()
        with pytest.raises(StreamLogUnavailable):
            await log.put_document("doc:x", "x", ttl=60)
        with pytest.raises(StreamLogUnavailable):
            await log.get_document("doc:x")
    finally:
        await log.aclose()
