"""Hypothesis against the running server: arbitrary request bodies and WebSocket frames get a
documented answer (a stream, or a 4xx JSON error / a stream-less ``error`` event with a known
code), the server never crashes, and no task outlives its request."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import UvicornThread, scripted_app, serve, wait_for
from tests.protocol.test_fuzz import json_values, schema_like
from tests.security_helpers import close_code, sse_events, ws_connect
from tokenwire.errors import ErrorCode
from tokenwire.providers.scripted import Script

CODES = {str(code) for code in ErrorCode}
KEY = "tw_fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SERVER_FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

bodies = (
    st.binary(max_size=400)
    | st.text(max_size=200).map(str.encode)
    | (json_values | schema_like).map(lambda v: json.dumps(v).encode())
)
frames = (
    st.binary(max_size=300)
    | st.text(max_size=300)
    | (json_values | schema_like).map(json.dumps)
    | schema_like.map(lambda d: json.dumps({**d, "type": "generate"}))
)


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornThread]:
    app, _ = scripted_app(
        Script(tokens=5),
        api_keys=KEY,
        max_streams_per_key=4,
        ws_messages_per_minute=100_000,
        max_body_size=4096,
        ws_max_message_size=4096,
    )
    with serve(app, ws_max_size=4096) as running:
        running.baseline = running.task_count()  # type: ignore[attr-defined]
        yield running


def check_error_body(response: httpx.Response, *, openai: bool) -> None:
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["code"] in CODES and error["message"]
    if openai:
        assert set(error) == {"message", "type", "param", "code"}
    else:
        assert set(error) == {"code", "message", "retryable"}
    assert "Traceback" not in response.text


@SERVER_FUZZ
@given(body=bodies, route=st.sampled_from(["/v1/streams", "/v1/chat/completions"]))
async def test_arbitrary_http_bodies_get_a_stream_or_a_documented_error(server, body, route):
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        response = await http.post(route, content=body, headers=AUTH)
    if response.status_code == 200:
        if route == "/v1/streams":
            assert sse_events(response.text)[-1]["type"] == "stream.end"
        else:
            assert response.text.rstrip().endswith("[DONE]") or response.json()["choices"]
    else:
        check_error_body(response, openai=route == "/v1/chat/completions")


async def answers(ws: websockets.ClientConnection, sent: int) -> list[dict[str, Any]]:
    """Read until every sent frame was answered (pong, a stream-less error, or a stream that
    ran to its end)."""
    answered, open_streams, frames_seen = 0, set(), []
    async with asyncio.timeout(30):
        while answered < sent or open_streams:
            frame = json.loads(await ws.recv())
            frames_seen.append(frame)
            kind = frame["type"]
            if kind == "pong" or (kind == "error" and "stream_id" not in frame):
                answered += 1
            elif kind == "stream.start":
                answered += 1
                open_streams.add(frame["stream_id"])
            elif kind == "stream.end":
                open_streams.discard(frame["stream_id"])
    return frames_seen


def size_of(frame: str | bytes) -> int:
    return len(frame.encode() if isinstance(frame, str) else frame)


@SERVER_FUZZ
@given(batch=st.lists(frames, min_size=1, max_size=6))
async def test_arbitrary_websocket_frames_get_documented_answers(server, batch):
    too_big = [index for index, frame in enumerate(batch) if size_of(frame) > 4096]
    if too_big:  # everything up to the first oversized frame, which closes the socket 1009
        async with ws_connect(server.base_url, additional_headers=AUTH) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                for frame in batch[: too_big[0] + 1]:
                    await ws.send(frame)
            assert await close_code(ws) == 1009
        return
    async with ws_connect(server.base_url, additional_headers=AUTH) as ws:
        for frame in batch:
            await ws.send(frame)
        seen = await answers(ws, len(batch))
        await ws.send(json.dumps({"type": "ping", "id": "still-open"}))
        assert json.loads(await ws.recv()) == {"type": "pong", "id": "still-open"}
    for frame in seen:
        if frame["type"] == "error":
            assert frame["code"] in CODES and frame["message"]
            assert "Traceback" not in frame["message"]


@SERVER_FUZZ
@given(first=frames)
async def test_arbitrary_first_frames_without_credentials_close_1008(server, first):
    async with ws_connect(server.base_url) as ws:
        await ws.send(first)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    expected = (
        1009 if size_of(first) > 4096 else 1008
    )  # too big to even read, else not an auth message
    assert closed.value.rcvd is not None and closed.value.rcvd.code == expected


async def test_no_task_outlives_the_fuzzing(server):
    """Runs after the fuzz tests of this module (same server): every connection and stream
    they started has ended and left no task behind."""
    state = server.config.app.state.tokenwire
    await wait_for(lambda: server.call(lambda: len(state.guards.streams.live())) == 0, within=10)
    await wait_for(lambda: server.task_count() <= server.baseline, within=10)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.get("/healthz")).json()["live_streams"] == 0
