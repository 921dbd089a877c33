"""The stream log's documents (``put_document`` / ``get_document``), on both backends: kept
for their TTL, replaced by a later put, shared by every process on one Redis."""

from __future__ import annotations

import pytest

from tests.helpers import LOG_BOUNDS as BOUNDS
from tests.helpers import RedisServer
from tokenwire.streams.log import MemoryStreamLog, StreamLogUnavailable
from tokenwire.streams.redis_log import RedisStreamLog


async def test_a_document_put_by_one_worker_is_read_by_another(shared_logs):
    writer, reader = shared_logs
    assert await reader.get_document("doc:absent") is None
    await writer.put_document("doc:a", '{"v":1}', ttl=60)
    assert await reader.get_document("doc:a") == '{"v":1}'
    await writer.put_document("doc:a", "é2", ttl=60)  # replaced; text round-trips
    assert await reader.get_document("doc:a") == "é2"


async def test_an_expired_document_is_gone(shared_logs, monkeypatch):
    writer, reader = shared_logs
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
