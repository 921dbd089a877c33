"""Helpers shared by the security, limits and metrics tests: raw clients that expose what the
SDK-level client hides (handshake status, close codes, headers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

USER = [{"role": "user", "content": "Tell me something"}]
GENERATE = {"type": "generate", "messages": USER}


def ws_url(base_url: str, path: str = "/v1/ws") -> str:
    return base_url.replace("http://", "ws://", 1) + path


@contextlib.asynccontextmanager
async def ws_connect(base_url: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    """A real ``websockets`` client connection to ``/v1/ws`` (pass ``path=`` for another)."""
    path = kwargs.pop("path", "/v1/ws")
    async with websockets.connect(ws_url(base_url, path), open_timeout=10, **kwargs) as ws:
        yield ws


async def handshake_status(base_url: str, **kwargs: Any) -> tuple[int, dict[str, Any] | None]:
    """The HTTP status of a refused WebSocket handshake and its JSON body (if any).

    Raises AssertionError if the handshake was accepted."""
    try:
        async with ws_connect(base_url, **kwargs):
            pass
    except websockets.InvalidStatus as exc:
        body = exc.response.body
        return exc.response.status_code, (json.loads(body) if body else None)
    raise AssertionError("the handshake was accepted")


async def close_code(ws: ClientConnection, within: float = 10.0) -> int | None:
    """Read until the server closes; the close code it sent."""
    try:
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None


async def ws_events(ws: ClientConnection, within: float = 10.0) -> list[dict[str, Any]]:
    """Frames of one stream, up to and including its ``stream.end`` (or a stream-less
    ``error``)."""
    events = []
    async with asyncio.timeout(within):
        while True:
            frame = json.loads(await ws.recv())
            events.append(frame)
            if frame["type"] == "stream.end" or (
                frame["type"] == "error" and "stream_id" not in frame
            ):
                return events


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "text.delta")


def sse_events(body: str) -> list[dict[str, Any]]:
    """The JSON payloads of a complete SSE body."""
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def post_stream(
    client: httpx.AsyncClient, url: str, body: dict[str, Any] | None = None, **kwargs: Any
) -> httpx.Response:
    """``POST /v1/streams`` and read the whole answer."""
    return await client.post(url + "/v1/streams", json=body or {"messages": USER}, **kwargs)
