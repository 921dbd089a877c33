"""Faults of a Redis-backed deployment found by attacking running servers: a burst of resumes
must not starve the log's writer; ownership holds across workers and after the end; a
WebSocket cancel reaches the worker that runs the stream; cursors out of the log's range and
cursors past a dead worker's last write get answers a client can act on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets

import httpx
from httpx_ws import aconnect_ws

from tests.helpers import asgi_client, delta, scripted_app, serve
from tests.streams.test_resume import detached, resume
from tokenwire.providers.scripted import Script
from tokenwire.streams.redis_log import RedisStreamLog


async def test_a_resume_burst_cuts_no_running_stream(redis_server):
    """150 concurrent resumes of unknown streams (each one waits for Redis to reach its
    cursor) while 3 streams run: the streams all end with `stop`; the excess readers are
    refused (503, retryable) or reset, never served by starving the writer."""
    script = Script(tokens=60, interval=0.05)
    app, _ = scripted_app(script, stream_log=redis_server.url, stream_log_max_readers=20)
    async with contextlib.AsyncExitStack() as stack:
        server = stack.enter_context(serve(app))
        streams = [await detached(server, on_disconnect="detach") for _ in range(3)]
        peers = [await resume("sse", server, s["stream_id"], 0) for s in streams]
        for peer in peers:
            await stack.enter_async_context(peer)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:

            async def probe() -> int:
                stream_id = "str_" + secrets.token_urlsafe(16)
                url = f"{server.base_url}/v1/streams/{stream_id}/events"
                response = await http.get(url, headers={"Last-Event-ID": "1"})
                return response.status_code

            statuses = await asyncio.gather(*(probe() for _ in range(150)))
        ends = [(await peer.rest())[-1] for peer in peers]
    assert [end["finish_reason"] for end in ends] == ["stop"] * 3, ends
    assert set(statuses) <= {200, 503}, statuses


async def test_a_cursor_past_a_dead_workers_last_write_gets_stream_reset_lost(
    transport, redis_server
):
    """A worker wrote seqs 1..5 of a stream and died (no end, its lease lapses); its client
    had seen seq 8 (delivered before the write). Resuming after 8 anywhere is answered
    ``stream.reset`` with reason ``lost``: the stream cannot continue, and nothing the client
    can retry would change that (not a 400 invalid_request)."""
    dead = RedisStreamLog(redis_server.url, max_events=100, max_bytes=1 << 20, ttl=60, lease=1)
    await dead.start()
    stream_id = "str_" + secrets.token_urlsafe(16)
    dead.begin(stream_id)
    dead.claim(stream_id, None)
    for seq in range(1, 6):
        dead.append(stream_id, delta(seq, "x", stream_id))
    await dead.aclose()  # writes what is pending, then stops: no end, no lease renewal
    app, _ = scripted_app(stream_log=redis_server.url)
    with serve(app) as server:
        async with await resume(transport, server, stream_id, 8) as peer:
            event = await peer.event()
    assert event is not None and event["type"] == "stream.reset", event
    assert event["reason"] == "lost"


async def test_a_websocket_cancel_reaches_the_worker_that_runs_the_stream(redis_server):
    """Start on A, resume on B over a WebSocket, cancel on that socket: A stops the stream
    and B's socket gets its ``stream.end`` (cancelled), as with the HTTP cancel route."""
    script = Script(tokens=100_000, interval=0.005)
    app_a, provider_a = scripted_app(script, stream_log=redis_server.url)
    app_b, _ = scripted_app(script, stream_log=redis_server.url)
    with serve(app_a) as a, serve(app_b) as b:
        stream_id = (await detached(a, on_disconnect="detach"))["stream_id"]
        async with await resume("websocket", b, stream_id, 0) as peer:
            for _ in range(5):
                assert await peer.event() is not None
            peer._send_ws(json.dumps({"type": "cancel", "stream_id": stream_id}))
            rest = await peer.rest()
    assert rest[-1]["type"] == "stream.end", rest[-3:]
    assert rest[-1]["finish_reason"] == "cancelled"
    assert provider_a.records[0].closed_at is not None


async def test_a_cursor_beyond_the_logs_range_is_an_invalid_request(redis_server):
    """``after_seq`` past any seq a stream can have (Redis stream ids are 64-bit) is refused
    up front as invalid_request, on both transports, and no Redis key name leaks."""
    app, _ = scripted_app(stream_log=redis_server.url)
    stream_id = "str_" + secrets.token_urlsafe(16)
    async with asgi_client(app) as http:
        async with aconnect_ws("/v1/ws", http) as ws:
            for after_seq in (2**64, 2**53):
                message = {"type": "resume", "stream_id": stream_id, "after_seq": after_seq}
                await ws.send_text(json.dumps(message))
                frame = json.loads(await ws.receive_text())
                assert frame["type"] == "error" and frame["code"] == "invalid_request", frame
                assert "tokenwire:" not in frame["message"]
        url = f"/v1/streams/{stream_id}/events"
        response = await http.get(url, headers={"Last-Event-ID": str(2**53)})
        assert response.status_code == 400, response.text
