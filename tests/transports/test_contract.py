"""The contract suite: the same behaviour over SSE and WebSocket, in-process and over real
uvicorn sockets. Each test runs for every (transport, level) pair."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from httpx_ws import aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from starlette.applications import Starlette

from tests.helpers import asgi_client, scripted_app, serve, wait_for
from tokenwire.protocol.events import ErrorEvent, StreamEnd, StreamStart, TextDelta
from tokenwire.providers.scripted import Script, scripted_text
from tokenwire_client import AsyncClient, ServerError

USER = [{"role": "user", "content": "Tell me something"}]


@pytest.fixture(params=["in-process", "uvicorn"])
def level(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def connect(app: Starlette, level: str, transport: str) -> AsyncIterator[AsyncClient]:
    if level == "in-process":
        async with asgi_client(app) as http:
            yield AsyncClient("http://localhost", transport=transport, http_client=http)
    else:
        with serve(app) as server:
            async with AsyncClient(server.base_url, transport=transport) as client:
                yield client


async def collect(client: AsyncClient, messages: list[dict] = USER, **params) -> list:
    return [event async for event in client.stream(messages, **params)]


async def test_stream_carries_numbered_events_and_the_exact_text(level, transport):
    app, provider = scripted_app(Script(tokens=25))
    async with connect(app, level, transport) as client:
        events = await collect(client)
    assert isinstance(events[0], StreamStart)
    assert events[0].model == "scripted"
    assert isinstance(events[-1], StreamEnd)
    assert all(isinstance(e, TextDelta) for e in events[1:-1])
    assert "".join(e.delta for e in events[1:-1]) == scripted_text(25)
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)) and seqs[0] == 1
    assert {e.stream_id for e in events} == {events[0].stream_id}
    end = events[-1]
    assert end.finish_reason == "stop"
    assert end.usage is not None and end.usage.completion_tokens == 25
    assert end.usage.prompt_tokens == 3 and end.usage.total_tokens == 28
    assert provider.records[0].completed


async def test_max_tokens_ends_with_length(level, transport):
    app, _ = scripted_app(Script(tokens=25))
    async with connect(app, level, transport) as client:
        events = await collect(client, max_tokens=4)
    assert "".join(e.delta for e in events if isinstance(e, TextDelta)) == scripted_text(4)
    assert events[-1].finish_reason == "length"
    assert events[-1].usage.completion_tokens == 4


async def test_provider_failure_mid_stream_is_an_error_then_the_end(level, transport):
    app, _ = scripted_app(Script(tokens=10, error_after=3))
    async with connect(app, level, transport) as client:
        events = await collect(client)
    error, end = events[-2], events[-1]
    assert "".join(e.delta for e in events if isinstance(e, TextDelta)) == scripted_text(3)
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == ("provider_error", True)
    assert "after 3 tokens" in error.message
    assert isinstance(end, StreamEnd) and end.finish_reason == "error"
    assert end.usage.completion_tokens == 3
    assert error.seq < end.seq


async def test_unknown_model_is_refused_by_name(level, transport):
    app, _ = scripted_app()
    async with connect(app, level, transport) as client:
        with pytest.raises(ServerError) as caught:
            await collect(client, model="gpt-17")
    assert caught.value.code == "not_found"
    assert "gpt-17" in str(caught.value) and "available: scripted" in str(caught.value)
    if transport == "sse":
        assert caught.value.status == 404


async def test_invalid_field_is_refused_by_name(level, transport):
    app, _ = scripted_app()
    async with connect(app, level, transport) as client:
        with pytest.raises(ServerError) as caught:
            await collect(client, temperature=9)
    assert caught.value.code == "invalid_request"
    assert "temperature" in str(caught.value)
    if transport == "sse":
        assert caught.value.status == 422


async def test_failing_stream_does_not_disturb_others(level, transport):
    def script_for(params):
        failing = params.messages[0].content == "fail"
        return Script(tokens=15, interval=0.002, error_after=2 if failing else None)

    app, _ = scripted_app()
    app.state.tokenwire.provider.script_for = script_for
    async with connect(app, level, transport) as client:
        good = [client.text(USER) for _ in range(3)]
        bad = [collect(client, [{"role": "user", "content": "fail"}])]
        results = await asyncio.gather(*good, *bad)
    assert results[:3] == [scripted_text(15)] * 3
    assert results[3][-1].finish_reason == "error"


async def test_health_reports_live_streams(level, transport):
    app, _ = scripted_app(Script(tokens=3))
    async with connect(app, level, transport) as client:
        await collect(client)
        response = await client.http.get(client.base_url + "/healthz")
    assert response.json()["status"] == "ok"
    assert response.json()["live_streams"] == 0


# -- WebSocket specifics ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_ws(app: Starlette, level: str):
    if level == "in-process":
        async with asgi_client(app) as http, aconnect_ws("http://localhost/v1/ws", http) as ws:
            yield ws
    else:
        with serve(app) as server:
            async with httpx.AsyncClient() as http:
                async with aconnect_ws(server.base_url + "/v1/ws", http) as ws:
                    yield ws


async def read_until_ends(ws, count: int) -> dict[str, list[dict]]:
    """Read frames until ``count`` streams have ended; frames grouped by stream_id."""
    streams: dict[str, list[dict]] = {}
    ended = 0
    while ended < count:
        frame = json.loads(await ws.receive_text())
        streams.setdefault(frame.get("stream_id", ""), []).append(frame)
        ended += frame["type"] == "stream.end"
    return streams


async def test_websocket_multiplexes_concurrent_streams(level):
    app, _ = scripted_app(Script(tokens=20, interval=0.001))
    async with raw_ws(app, level) as ws:
        for request_id in ("a", "b", "c"):
            await ws.send_text(
                json.dumps({"type": "generate", "request_id": request_id, "messages": USER})
            )
        streams = await read_until_ends(ws, 3)
    assert sorted(frames[0]["request_id"] for frames in streams.values()) == ["a", "b", "c"]
    for frames in streams.values():
        text = "".join(f["delta"] for f in frames if f["type"] == "text.delta")
        assert text == scripted_text(20)
        assert frames[-1]["finish_reason"] == "stop"


async def test_websocket_bad_messages_get_errors_and_the_socket_stays_open(level):
    app, _ = scripted_app(Script(tokens=3))
    async with raw_ws(app, level) as ws:
        for bad in ["{nope", "[]", '{"type":"generate"}', '{"type":"cancel","stream_id":"x"}']:
            await ws.send_text(bad)
            error = json.loads(await ws.receive_text())
            assert error["type"] == "error" and "stream_id" not in error
            assert error["code"] in ("invalid_request", "not_found")
        await ws.send_text('{"type":"ping","id":"p1"}')
        assert json.loads(await ws.receive_text()) == {"type": "pong", "id": "p1"}
        await ws.send_text(json.dumps({"type": "generate", "messages": USER}))
        streams = await read_until_ends(ws, 1)
    (frames,) = streams.values()
    assert "".join(f.get("delta", "") for f in frames) == scripted_text(3)


async def test_websocket_cancel_ends_the_stream_and_closes_the_provider(level):
    app, provider = scripted_app(Script(tokens=1000, interval=0.01))
    async with raw_ws(app, level) as ws:
        await ws.send_text(json.dumps({"type": "generate", "messages": USER}))
        start = json.loads(await ws.receive_text())
        json.loads(await ws.receive_text())  # a first delta
        await ws.send_text(json.dumps({"type": "cancel", "stream_id": start["stream_id"]}))
        frames = (await read_until_ends(ws, 1))[start["stream_id"]]
    end = frames[-1]
    assert end["finish_reason"] == "cancelled"
    assert end["usage"]["completion_tokens"] >= 1
    await wait_for(lambda: provider.records[0].closed_at is not None)
    assert provider.records[0].produced < 1000


async def test_sse_cancel_from_another_connection():
    # Real sockets only: httpx's in-process ASGI transport buffers a whole response body.
    app, provider = scripted_app(Script(tokens=1000, interval=0.01))
    async with connect(app, "uvicorn", "sse") as client:
        events = []
        async for event in client.stream(USER):
            events.append(event)
            if len(events) == 2:
                url = f"{client.base_url}/v1/streams/{event.stream_id}/cancel"
                response = await client.http.post(url)
                assert response.status_code == 202
                assert response.json() == {"stream_id": event.stream_id, "status": "cancelled"}
        missing = await client.http.post(f"{client.base_url}/v1/streams/nope/cancel")
    assert events[-1].finish_reason == "cancelled"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert provider.records[0].closed_at is not None


async def test_disconnect_mid_stream_stops_the_provider(transport):
    app, provider = scripted_app(Script(tokens=1000, interval=0.005))
    async with connect(app, "uvicorn", transport) as client:
        # The client asks for `detach` when it may resume; this test is about `cancel`.
        async with client.stream(USER, on_disconnect="cancel") as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    break
        await wait_for(lambda: provider.records[0].closed_at is not None)
        await wait_for(lambda: len(app.state.tokenwire.registry) == 0)
    assert provider.records[0].produced < 1000
    assert not provider.records[0].completed


async def test_middleware_around_the_app_sees_every_frame(transport):
    """The transports write frames to the ASGI server's own ``send``, past Starlette's inner
    wrappers (``tokenwire.lifecycle.server_send``): middleware wrapped around tokenwire's
    app from outside must still see every frame, since that ``send`` is the one the app got."""
    app, _ = scripted_app(Script(tokens=25))
    seen: list[bytes] = []

    async def outer(scope, receive, send):
        async def recording_send(message):
            if message["type"] in ("http.response.body", "websocket.send"):
                seen.append(message.get("body") or message.get("text", "").encode())
            await send(message)

        await app(scope, receive, recording_send)

    async with app.router.lifespan_context(app):
        http = httpx.AsyncClient(
            transport=ASGIWebSocketTransport(outer), base_url="http://localhost"
        )
        async with (
            http,
            AsyncClient("http://localhost", transport=transport, http_client=http) as client,
        ):
            events = await collect(client)
    assert isinstance(events[-1], StreamEnd) and len(events) >= 3
    frames = b"".join(seen)
    for event in events:
        assert b'"seq":%d,' % event.seq in frames
