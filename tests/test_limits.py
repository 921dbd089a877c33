"""Every limit hit on both transports, with the exact status, close code or error event; and a
flood beyond the limits leaves the streams already running intact."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import zlib

import httpx
import pytest
import websockets
from httpx_ws import aconnect_ws
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.helpers import asgi_client, scripted_app, serve, wait_for
from tests.security_helpers import (
    GENERATE,
    USER,
    close_code,
    post_stream,
    sse_events,
    text_of,
    ws_connect,
    ws_events,
)
from tokenwire.edge.limits import MessageBudget
from tokenwire.providers.scripted import Script, scripted_text

KEY = "tw_limits-key"
OTHER = "tw_limits-other"
AUTH = {"Authorization": f"Bearer {KEY}"}


def slow(tokens: int = 400) -> Script:
    return Script(tokens=tokens, interval=0.01)


# -- sizes ------------------------------------------------------------------------------------


async def test_http_body_over_the_limit_is_413_by_length_and_by_count():
    app, provider = scripted_app(max_body_size=2048)
    big = {"messages": [{"role": "user", "content": "x" * 4096}]}
    async with asgi_client(app) as http:
        response = await post_stream(http, "", big)
        assert response.status_code == 413
        assert response.json()["error"] == {
            "code": "payload_too_large",
            "message": "request body over 2048 bytes",
            "retryable": False,
        }

        async def chunked():  # no Content-Length: counted as it arrives
            for _ in range(5):
                yield b"x" * 1000

        streamed = await http.post("/v1/streams", content=chunked())
        assert streamed.status_code == 413
        openai_route = await http.post("/v1/chat/completions", json={"model": "m", **big})
        assert openai_route.status_code == 413
        assert openai_route.json()["error"] == {
            "message": "request body over 2048 bytes",
            "type": "invalid_request_error",
            "param": None,
            "code": "payload_too_large",
        }
        small = await post_stream(http, "")
        assert small.status_code == 200
    assert len(provider.records) == 1


async def test_http_body_limit_over_real_sockets():
    app, _ = scripted_app(max_body_size=2048)
    with serve(app) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.post("/v1/streams", content=b"{" + b" " * 10_000 + b"}")
    assert response.status_code == 413


@pytest.mark.parametrize("uvicorn_limit", [True, False])
async def test_websocket_message_over_the_limit_closes_1009(uvicorn_limit):
    """Whether uvicorn enforces it (``ws_max_size``, as ``tokenwire serve`` sets it) or only
    the app does (uvicorn's 16 MiB default): close 1009."""
    app, _ = scripted_app(ws_max_message_size=4096)
    config = {"ws_max_size": 4096} if uvicorn_limit else {}
    with serve(app, **config) as server:
        async with ws_connect(server.base_url) as ws:
            await ws.send(json.dumps({"type": "ping", "id": "x" * 5000}))
            assert await close_code(ws) == 1009
        async with ws_connect(server.base_url) as ws:
            await ws.send(json.dumps({"type": "ping", "id": 1}))
            assert json.loads(await ws.recv())["type"] == "pong"


async def test_websocket_message_over_the_limit_closes_1009_in_process():
    app, _ = scripted_app(ws_max_message_size=4096)
    async with asgi_client(app) as http, aconnect_ws("/v1/ws", http) as ws:
        await ws.send_text(json.dumps({"type": "ping", "id": "é" * 2100}))  # 4200+ bytes
        with pytest.raises(Exception) as caught:
            await ws.receive_text()
    assert getattr(caught.value, "code", None) == 1009


async def test_permessage_deflate_is_off_by_default():
    app, _ = scripted_app()
    with serve(app, ws_per_message_deflate=False) as server:
        async with ws_connect(server.base_url, compression="deflate") as ws:
            assert ws.protocol.extensions == []


async def test_permessage_deflate_limit_applies_to_the_decompressed_size():
    """A 1 MiB message deflates to about 1 KiB on the wire: still closed 1009 at 64 KiB."""
    app, _ = scripted_app(ws_per_message_deflate=True)
    limit = app.state.tokenwire.settings.ws_max_message_size
    bomb = json.dumps({"type": "ping", "id": "a" * (1 << 20)})
    assert len(zlib.compress(bomb.encode())) < limit // 16
    with serve(app, ws_per_message_deflate=True, ws_max_size=limit) as server:
        async with ws_connect(
            server.base_url, extensions=[ClientPerMessageDeflateFactory()], compression=None
        ) as ws:
            assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
            await ws.send(json.dumps(GENERATE))
            assert text_of(await ws_events(ws)) == scripted_text(12)
            await ws.send(bomb)
            assert await close_code(ws) == 1009


# -- request contents -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "body", "message"),
    [
        ({"max_messages": 3}, {"messages": USER * 4}, "at most 3 messages, got 4"),
        (
            {"max_input_chars": 100},
            {"messages": [{"role": "user", "content": "y" * 101}]},
            "at most 100 characters of content, got 101",
        ),
        ({"max_tokens_limit": 50}, {"messages": USER, "max_tokens": 51}, "must be <= 50"),
    ],
)
async def test_request_content_limits_on_both_transports(settings, body, message):
    app, provider = scripted_app(**settings)
    async with asgi_client(app) as http:
        response = await post_stream(http, "", body)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and message in error["message"]
        async with aconnect_ws("/v1/ws", http) as ws:
            await ws.send_text(json.dumps({"type": "generate", **body}))
            frame = json.loads(await ws.receive_text())
            assert frame["type"] == "error" and frame["code"] == "invalid_request"
            assert message in frame["message"] and "stream_id" not in frame
            await ws.send_text(json.dumps(GENERATE))  # the socket stays usable
            start = json.loads(await ws.receive_text())
            assert start["type"] == "stream.start"
    assert len(provider.records) == 1


# -- concurrency ------------------------------------------------------------------------------


async def test_streams_per_key_429_with_retry_after_and_ws_error_rate_limited():
    app, _ = scripted_app(slow(), api_keys=f"{KEY},{OTHER}", max_streams_per_key=2, max_streams=100)
    with serve(app) as server:
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=30) as http,
            ws_connect(server.base_url, additional_headers=AUTH) as ws,
        ):
            await ws.send(json.dumps(GENERATE))
            first = json.loads(await ws.recv())
            async with http.stream("POST", "/v1/streams", json={"messages": USER}, headers=AUTH):
                # the key now has 2 live streams (one per transport)
                refused = await post_stream(http, "", headers=AUTH)
                assert refused.status_code == 429
                assert refused.headers["retry-after"] == "1"
                assert refused.json()["error"] == {
                    "code": "rate_limited",
                    "message": "this API key has 2 live streams already",
                    "retryable": True,
                }
                await ws.send(json.dumps(GENERATE))
                frame = json.loads(await ws.recv())
                while frame.get("stream_id") == first["stream_id"]:
                    frame = json.loads(await ws.recv())
                assert frame["type"] == "error" and frame["code"] == "rate_limited"
                assert frame["retryable"] is True and "stream_id" not in frame
                # another key is not affected
                other = {"Authorization": f"Bearer {OTHER}"}
                async with http.stream(
                    "POST", "/v1/streams", json={"messages": USER}, headers=other
                ) as ok:
                    assert ok.status_code == 200
            await ws.send(json.dumps({"type": "cancel", "stream_id": first["stream_id"]}))
            while (frame := json.loads(await ws.recv()))["type"] != "stream.end":
                pass
            # both slots are free again once the streams ended
            await ws.send(json.dumps(GENERATE))
            started = json.loads(await ws.recv())
            assert started["type"] == "stream.start"


async def test_streams_per_server_limit_without_keys():
    app, _ = scripted_app(slow(), max_streams=1)
    async with asgi_client(app) as http:
        async with aconnect_ws("/v1/ws", http) as ws:
            await ws.send_text(json.dumps(GENERATE))
            assert json.loads(await ws.receive_text())["type"] == "stream.start"
            refused = await post_stream(http, "")
            assert refused.status_code == 429
            assert refused.json()["error"]["message"] == "the server has 1 live streams already"
            chat = await http.post(
                "/v1/chat/completions", json={"model": "scripted", "messages": USER}
            )
            assert chat.status_code == 429 and chat.headers["retry-after"] == "1"
            assert chat.json()["error"]["type"] == "rate_limit_error"


async def test_websocket_messages_per_minute():
    app, _ = scripted_app(ws_messages_per_minute=5)
    async with asgi_client(app) as http, aconnect_ws("/v1/ws", http) as ws:
        for index in range(7):
            await ws.send_text(json.dumps({"type": "ping", "id": index}))
        frames = [json.loads(await ws.receive_text()) for _ in range(7)]
    assert frames[:5] == [{"type": "pong", "id": i} for i in range(5)]
    for frame in frames[5:]:
        assert frame["type"] == "error" and frame["code"] == "rate_limited"
        assert frame["retryable"] is True and "5 messages a minute" in frame["message"]


def test_message_budget_refills_over_time(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("tokenwire.edge.limits.time.monotonic", lambda: now[0])
    budget = MessageBudget(60)
    assert all(budget.allow() for _ in range(60))
    assert not budget.allow() and budget.retry_after() == pytest.approx(1.0)
    now[0] += 2.5
    assert budget.allow() and budget.allow() and not budget.allow()
    assert MessageBudget(None).allow()


async def test_websocket_connections_per_server_and_per_key_close_1013():
    app, _ = scripted_app(
        api_keys=f"{KEY},{OTHER}", max_ws_connections=3, max_ws_connections_per_key=2
    )
    other = {"Authorization": f"Bearer {OTHER}"}
    with serve(app) as server:
        async with (
            ws_connect(server.base_url, additional_headers=AUTH) as a,
            ws_connect(server.base_url, additional_headers=AUTH),
        ):
            async with ws_connect(server.base_url, additional_headers=AUTH) as third:
                assert await close_code(third) == 1013  # per key
            async with ws_connect(server.base_url) as by_message:
                await by_message.send(json.dumps({"type": "auth", "token": KEY}))
                assert await close_code(by_message) == 1013  # per key, known after auth
            async with ws_connect(server.base_url, additional_headers=other) as b:
                async with ws_connect(server.base_url, additional_headers=other) as over:
                    assert await close_code(over) == 1013  # per server
                await b.send(json.dumps(GENERATE))
                assert text_of(await ws_events(b)) == scripted_text(12)
            await a.send(json.dumps(GENERATE))
            assert text_of(await ws_events(a)) == scripted_text(12)
        # closed sockets give their slots back
        async with ws_connect(server.base_url, additional_headers=AUTH) as again:
            await again.send(json.dumps({"type": "ping", "id": 1}))
            assert json.loads(await again.recv())["type"] == "pong"


async def test_websocket_connections_per_server_without_keys():
    app, _ = scripted_app(max_ws_connections=2)
    with serve(app) as server:
        async with ws_connect(server.base_url) as a, ws_connect(server.base_url) as b:
            async with ws_connect(server.base_url) as third:
                assert await close_code(third) == 1013
            for ws in (a, b):
                await ws.send(json.dumps({"type": "ping", "id": 1}))
                assert json.loads(await ws.recv())["type"] == "pong"


# -- a flood ----------------------------------------------------------------------------------


async def send_then_close_code(ws: websockets.ClientConnection, data: str) -> int | None:
    """Send, then read until closed; the server's close code (also when it closed first)."""
    try:
        await ws.send(data)
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None
    return await close_code(ws)


async def test_a_flood_beyond_the_limits_leaves_running_streams_intact():
    tokens = 500  # 5 s (max_tokens is 512): the streams outlast the flood on a loaded machine
    app, _ = scripted_app(
        Script(tokens=tokens, interval=0.01),
        api_keys=KEY,
        max_streams=4,
        max_streams_per_key=4,
        max_ws_connections=2,  # both taken by the running WebSocket streams
        ws_messages_per_minute=30,
        max_body_size=4096,
        ws_max_message_size=4096,
    )
    with serve(app, ws_max_size=4096) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:

            async def sse_text() -> str:
                response = await post_stream(http, "", headers=AUTH)
                assert response.status_code == 200
                return text_of(sse_events(response.text))

            async def ws_text() -> str:
                async with ws_connect(server.base_url, additional_headers=AUTH) as ws:
                    await ws.send(json.dumps(GENERATE))
                    return text_of(await ws_events(ws, within=60))

            running = [asyncio.create_task(f()) for f in (sse_text, sse_text, ws_text, ws_text)]
            await wait_for(lambda: len(app.state.tokenwire.guards.streams.live()) == 4, within=10)

            async def flood_ws() -> int | None:
                async with ws_connect(server.base_url, additional_headers=AUTH) as ws:
                    return await send_then_close_code(ws, json.dumps(GENERATE))

            async def flood_http() -> int:
                return (await post_stream(http, "", headers=AUTH)).status_code

            async def flood_bad() -> int:
                bad = await http.post("/v1/streams", content=b"x" * 10_000, headers=AUTH)
                return bad.status_code

            async def flood_unauthenticated() -> int | None:
                async with ws_connect(server.base_url) as ws:
                    return await send_then_close_code(ws, "{" * 100)

            floods = [flood_ws] * 20 + [flood_http] * 20 + [flood_bad] * 10
            floods += [flood_unauthenticated] * 10
            results = await asyncio.gather(*(f() for f in floods))
            assert set(results[:20]) == {1013}
            assert set(results[20:40]) == {429}
            assert set(results[40:50]) == {413}
            assert set(results[50:]) <= {1008, 1013}
            texts = await asyncio.gather(*running)
    assert texts == [scripted_text(tokens)] * 4


async def test_sockets_that_never_authenticate_do_not_take_the_websocket_slots():
    """8 sockets that never send their ``auth`` message, with 3 WebSocket slots: 3 real
    clients (with a key in their handshake) still get in, since pre-auth sockets have their
    own count (``max_ws_unauthenticated``); a pre-auth socket beyond it is closed 1013, and
    one that authenticates once a pre-auth slot is free trades it for a connection slot."""
    app, _ = scripted_app(
        api_keys=KEY, max_ws_connections=3, max_ws_unauthenticated=8, auth_timeout=30
    )
    with serve(app) as server:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(8):
                await stack.enter_async_context(ws_connect(server.base_url))
            async with ws_connect(server.base_url) as ninth:
                assert await close_code(ninth) == 1013
            real = [
                await stack.enter_async_context(
                    ws_connect(server.base_url, additional_headers=AUTH)
                )
                for _ in range(3)
            ]
            for ws in real:
                await ws.send(json.dumps({"type": "ping", "id": 1}))
                assert json.loads(await ws.recv()) == {"type": "pong", "id": 1}


async def test_a_client_that_floods_pings_and_never_reads_is_cut_off():
    """Pings with long ids, never a read: the pongs fill the socket's buffers and the next
    one waits. Every reply write is bounded by ``send_timeout``: the server closes the socket
    and frees its slot (uvicorn's own ping timeout is off here)."""
    app, _ = scripted_app(send_timeout=0.5, ws_messages_per_minute=None)
    limiter = app.state.tokenwire.guards.connections
    with serve(app, ws_ping_interval=None) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        client = ClientProtocol(parse_uri(f"ws://127.0.0.1:{server.port}/v1/ws"))
        client.send_request(client.connect())
        writer.write(b"".join(client.data_to_send()))
        client.receive_data(await reader.readuntil(b"\r\n\r\n"))
        assert client.state is State.OPEN
        await wait_for(lambda: limiter.total == 1)
        client.send_text(json.dumps({"type": "ping", "id": "x" * 128}).encode())
        frame = b"".join(client.data_to_send())
        try:
            for _ in range(400):  # ~70 MB of pongs asked for, in bursts; nothing read
                writer.write(frame * 1000)
                await asyncio.sleep(0)
                if limiter.total == 0:
                    break
            await wait_for(lambda: limiter.total == 0, within=30)
        finally:
            writer.transport.abort()
    assert limiter.total == 0
