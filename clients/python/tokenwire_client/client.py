"""``AsyncClient``: stream tokenwire events over SSE or WebSocket with one API.

    async with AsyncClient("http://127.0.0.1:8000", transport="websocket") as client:
        async for event in client.stream([{"role": "user", "content": "Hi"}]):
            if event.type == "text.delta":
                print(event.delta, end="")

Events are the protocol's models (:mod:`tokenwire.protocol.events`). A stream ends after its
``stream.end``. Raises :class:`ServerError` for an HTTP error answer or a stream-less ``error``
frame, and :class:`ProtocolError` for frames that are not wire protocol v1.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any, Literal

import httpx
from httpx_ws import WebSocketUpgradeError, aconnect_ws
from pydantic import ValidationError

from tokenwire.protocol.events import ErrorEvent, Event, StreamEnd, parse_event
from tokenwire_client.sse import SSEDecoder

TransportName = Literal["sse", "websocket"]


class ClientError(Exception):
    """Root of the client's exceptions."""


class ProtocolError(ClientError):
    """The server sent something that is not wire protocol v1."""


class ServerError(ClientError):
    """The server refused the request. ``status`` is the HTTP status (0 over WebSocket)."""

    def __init__(self, message: str, *, code: str, status: int = 0, retryable: bool = False):
        super().__init__(f"{code}: {message}" + (f" (HTTP {status})" if status else ""))
        self.code = code
        self.status = status
        self.retryable = retryable


def _parse(data: str | bytes) -> Event:
    try:
        return parse_event(data)
    except ValidationError as exc:
        raise ProtocolError(f"not a wire protocol v1 event: {data[:200]!r}") from exc


class AsyncClient:
    """A client of one tokenwire server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        transport: ``"sse"`` or ``"websocket"``.
        api_key: sent as ``Authorization: Bearer``.
        http_client: an ``httpx.AsyncClient`` to use (e.g. with an in-process ASGI transport);
            by default the client makes and owns one.
    """

    def __init__(
        self,
        base_url: str,
        *,
        transport: TransportName = "sse",
        api_key: str | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if transport not in ("sse", "websocket"):
            raise ValueError(f"transport must be 'sse' or 'websocket', got {transport!r}")
        self.base_url = base_url.rstrip("/")
        self.transport = transport
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None))
        self._headers = headers

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def stream(
        self, messages: Sequence[dict[str, Any]], *, model: str | None = None, **params: Any
    ) -> EventStream:
        """Start a stream: an async iterator of its events, up to and including ``stream.end``.

        Leaving the iteration early: ``async with client.stream(...) as events:`` (or call
        ``await events.aclose()``) closes the connection; the server then applies its
        disconnect policy. Raises :class:`ServerError` when the server refuses the request.
        """
        body: dict[str, Any] = {"messages": list(messages), **params}
        if model is not None:
            body["model"] = model
        return EventStream(self, body)

    async def text(self, messages: Sequence[dict[str, Any]], **params: Any) -> str:
        """Stream and return the whole generated text."""
        parts = []
        async with self.stream(messages, **params) as events:
            async for event in events:
                if event.type == "text.delta":
                    parts.append(event.delta)
        return "".join(parts)


class EventStream:
    """The events of one stream; the connection opens on the first ``__anext__``."""

    def __init__(self, client: AsyncClient, body: dict[str, Any]) -> None:
        self._client = client
        self._body = body
        self._stack = AsyncExitStack()
        self._read: Callable[[], Awaitable[Event | None]] | None = None
        self._done = False

    def __aiter__(self) -> EventStream:
        return self

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (idempotent)."""
        self._done = True
        await self._stack.aclose()

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        try:
            if self._read is None:
                if self._client.transport == "sse":
                    self._read = await self._open_sse()
                else:
                    self._read = await self._open_websocket()
            event = await self._read()
        except BaseException:
            await self.aclose()
            raise
        if event is None:
            await self.aclose()
            raise ProtocolError("the connection closed before stream.end")
        if isinstance(event, StreamEnd):
            await self.aclose()
        return event

    async def _open_sse(self) -> Callable[[], Awaitable[Event | None]]:
        client = self._client
        response = await self._stack.enter_async_context(
            client._http.stream(
                "POST", f"{client.base_url}/v1/streams", json=self._body, headers=client._headers
            )
        )
        if response.status_code != 200:
            await response.aread()
            raise _http_error(response)
        decoder = SSEDecoder()
        chunks = response.aiter_raw()
        ready: deque[Event] = deque()

        async def read() -> Event | None:
            while not ready:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    return None
                ready.extend(_parse(sse.data) for sse in decoder.decode(chunk))
            return ready.popleft()

        return read

    async def _open_websocket(self) -> Callable[[], Awaitable[Event | None]]:
        client = self._client
        url = client.base_url.replace("http", "ws", 1) + "/v1/ws"
        try:
            ws = await self._stack.enter_async_context(
                aconnect_ws(url, client._http, headers=client._headers)
            )
        except WebSocketUpgradeError as exc:  # the handshake was refused (401, 403, 429)
            raise _http_error(exc.response) from None
        await ws.send_text(json.dumps({"type": "generate", **self._body}))

        async def read() -> Event | None:
            event = _parse(await ws.receive_text())
            if isinstance(event, ErrorEvent) and event.stream_id is None:
                raise ServerError(event.message, code=event.code, retryable=event.retryable)
            return event

        return read


_STATUS_CODES = {401: "unauthorized", 403: "forbidden", 429: "rate_limited"}


def _http_error(response: httpx.Response) -> ServerError:
    try:
        error = response.json()["error"]
        return ServerError(
            error["message"],
            code=error["code"],
            status=response.status_code,
            retryable=bool(error.get("retryable", False)),
        )
    except (ValueError, KeyError, TypeError, httpx.ResponseNotRead):
        code = _STATUS_CODES.get(response.status_code, "http_error")
        return ServerError(f"HTTP {response.status_code}", code=code, status=response.status_code)
