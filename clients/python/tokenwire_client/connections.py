"""One connection to a tokenwire server: :class:`SSEConnection` and :class:`WebSocketConnection`
are siblings of the same shape, driven by :class:`tokenwire_client.client.EventStream`:

- ``start(body, request_id)``: open and ask for a new stream;
  ``resume(stream_id, after_seq)``: open and ask for the events after ``after_seq`` of an
  existing one.
- ``next()``: the next event. Raises :class:`Dropped` when the connection is lost in a way that
  a resume can repair, and a :class:`~tokenwire_client.errors.ClientError` when it is terminal.
- ``cancel(stream_id)``: ask the server to end the stream (``stream.end``, cancelled).
- ``aclose()``: close (idempotent). Must run in the task that called ``start``/``resume``.

What counts as repairable: a network error, an end of the connection before ``stream.end``, an
HTTP 429/5xx answer whose body says ``retryable`` (its ``Retry-After`` is honoured), and the
WebSocket close codes in :data:`RESUMABLE_CLOSE_CODES` (RFC 6455 section 7.4.1 and the IANA
registry: 1012 service restart, 1013 try again later; tokenwire's 4008 slow consumer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from contextlib import AsyncExitStack
from typing import Any

import httpx
from httpx_ws import (
    AsyncWebSocketSession,
    WebSocketDisconnect,
    WebSocketNetworkError,
    WebSocketUpgradeError,
    aconnect_ws,
)
from pydantic import ValidationError

from tokenwire.protocol.events import ErrorEvent, Event, parse_event
from tokenwire_client.errors import ConnectionLost, ProtocolError, ServerError
from tokenwire_client.sse import SSEDecoder

RESUMABLE_CLOSE_CODES = frozenset({1000, 1001, 1005, 1006, 1011, 1012, 1013, 1014, 4008})
"""Close codes after which the client reconnects and resumes (1000 counts only when it comes
before ``stream.end``: the server never ends a stream that way). Any other code is terminal:
1002/1003/1007 protocol errors, 1008 policy violation, 1009 message too big, ..."""

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class Dropped(Exception):
    """The connection was lost before ``stream.end`` and a resume may repair it.

    ``retry_after`` is the server's hint in seconds (SSE ``retry:``), or ``None``.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse(data: str | bytes) -> Event:
    """One wire protocol v1 event. Raises :class:`ProtocolError`."""
    try:
        return parse_event(data)
    except ValidationError as exc:
        raise ProtocolError(f"not a wire protocol v1 event: {data[:200]!r}") from exc


_STATUS_CODES = {
    401: "unauthorized",
    403: "forbidden",
    413: "payload_too_large",
    429: "rate_limited",
}  # a refused WebSocket handshake may come without a readable body


def http_error(response: httpx.Response) -> ServerError:
    """The :class:`ServerError` of an HTTP error answer (``{"error": {code, message, retryable}}``
    when the body has one)."""
    try:
        error = response.json()["error"]
        return ServerError(
            str(error["message"]),
            code=str(error["code"]),
            status=response.status_code,
            retryable=bool(error.get("retryable", False)),
        )
    except (ValueError, KeyError, TypeError, httpx.ResponseNotRead):
        try:
            message = response.text[:200] or response.reason_phrase
        except httpx.ResponseNotRead:
            message = f"HTTP {response.status_code} {response.reason_phrase}"
        return ServerError(
            message,
            code=_STATUS_CODES.get(response.status_code, "http_error"),
            status=response.status_code,
            retryable=response.status_code in _RETRYABLE_STATUS,
        )


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (RFC 9110 section 10.2.3; the HTTP-date form is
    not used by tokenwire and counts as absent)."""
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdecimal() else None


class _Connection:
    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        headers: dict[str, str],
        read_timeout: float | None,
    ) -> None:
        self._http = http
        self._base_url = base_url
        self._headers = headers
        self._read_timeout = read_timeout
        self._stack = AsyncExitStack()
        self.stream_id: str | None = None  # when the server told it at connection time
        self.retry_after: float | None = None

    async def aclose(self) -> None:
        await self._stack.aclose()

    async def post_cancel(self, stream_id: str) -> None:
        """``POST /v1/streams/{id}/cancel``; 404 (already ended) is fine."""
        url = f"{self._base_url}/v1/streams/{stream_id}/cancel"
        try:
            response = await self._http.post(url, headers=self._headers)
        except httpx.TransportError as exc:
            raise Dropped(f"cancel failed: {exc!r}") from exc
        if response.status_code not in (202, 404):
            raise http_error(response)


class SSEConnection(_Connection):
    """``POST /v1/streams`` to start; ``GET /v1/streams/{id}/events`` with ``Last-Event-ID``
    to resume (WHATWG HTML 9.2: the last event id is the seq of the last event received)."""

    async def start(self, body: dict[str, Any], request_id: str) -> None:
        await self._open("POST", f"{self._base_url}/v1/streams", json=body, headers=self._headers)

    async def resume(self, stream_id: str, after_seq: int) -> None:
        headers = {**self._headers, "Last-Event-ID": str(after_seq)}
        await self._open("GET", f"{self._base_url}/v1/streams/{stream_id}/events", headers=headers)

    async def _open(self, method: str, url: str, **kwargs: Any) -> None:
        timeout = httpx.Timeout(10.0, read=self._read_timeout)
        headers = {**kwargs.pop("headers"), "Accept": "text/event-stream"}
        try:
            response = await self._stack.enter_async_context(
                self._http.stream(method, url, headers=headers, timeout=timeout, **kwargs)
            )
        except httpx.TransportError as exc:
            raise Dropped(f"could not connect: {exc!r}") from exc
        if response.status_code == 204:
            raise ConnectionLost("the server has no more events for this stream (HTTP 204)")
        if response.status_code != 200:
            try:
                await response.aread()
            except httpx.TransportError as exc:
                raise Dropped(f"HTTP {response.status_code}, then {exc!r}") from exc
            error = http_error(response)
            if error.retryable and error.status in _RETRYABLE_STATUS:
                raise Dropped(str(error), retry_after=retry_after(response)) from error
            raise error
        self.stream_id = response.headers.get("x-stream-id")
        self._decoder = SSEDecoder()
        self._chunks = response.aiter_raw()
        self._ready: deque[Event] = deque()

    async def next(self) -> Event:
        while not self._ready:
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._decoder.flush()
                raise Dropped(
                    "the server closed the stream before stream.end", retry_after=self.retry_after
                ) from None
            except httpx.TransportError as exc:
                raise Dropped(f"connection lost: {exc!r}", retry_after=self.retry_after) from exc
            events = self._decoder.decode(chunk)
            if self._decoder.retry is not None:
                self.retry_after = self._decoder.retry / 1000
            self._ready.extend(parse(sse.data) for sse in events)
        return self._ready.popleft()

    async def cancel(self, stream_id: str) -> None:
        await self.post_cancel(stream_id)


class WebSocketConnection(_Connection):
    """``GET /v1/ws`` (one socket per stream); ``generate`` to start, ``resume`` with
    ``after_seq`` to resume, ``cancel`` to stop.

    The socket lives in a task of its own that reads frames into a small queue (httpx-ws opens
    a task group, which must be entered and left by one task): so any task may call ``next``,
    ``cancel`` and ``aclose``. Backpressure holds: when the queue is full the reader stops
    reading, and so, in the end, does the server.
    """

    _QUEUE = 16  # frames read ahead

    async def _connect(self) -> None:
        url = self._base_url.replace("http", "ws", 1) + "/v1/ws"
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[AsyncWebSocketSession] = loop.create_future()
        self._frames: asyncio.Queue[str | BaseException] = asyncio.Queue(self._QUEUE)
        self._owner = loop.create_task(self._own(url, ready))
        try:
            self._ws = await ready
        except WebSocketUpgradeError as exc:
            response = exc.response
            with contextlib.suppress(httpx.StreamError):  # closed already with the handshake
                await response.aread()
            error = http_error(response)
            if error.retryable and error.status in _RETRYABLE_STATUS:
                raise Dropped(str(error), retry_after=retry_after(response)) from error
            raise error from exc
        except (httpx.TransportError, WebSocketNetworkError) as exc:
            raise Dropped(f"could not connect: {exc!r}") from exc

    async def _own(self, url: str, ready: asyncio.Future[AsyncWebSocketSession]) -> None:
        try:
            # a copy: httpx-ws adds its upgrade headers to the dict it is given
            ws: AsyncWebSocketSession
            async with aconnect_ws(url, self._http, headers=dict(self._headers)) as ws:
                ready.set_result(ws)
                while True:
                    try:
                        frame: str | BaseException = await ws.receive_text()
                    except Exception as exc:  # the end of this socket: handed to next()
                        frame = exc
                    await self._frames.put(frame)
                    if not isinstance(frame, str):
                        return
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                await self._frames.put(exc)

    async def aclose(self) -> None:
        owner = getattr(self, "_owner", None)
        if owner is not None and not owner.done():
            owner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await owner
        await super().aclose()

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            await self._ws.send_text(json.dumps(message, separators=(",", ":")))
        except (WebSocketNetworkError, WebSocketDisconnect, httpx.TransportError) as exc:
            raise Dropped(f"connection lost while sending: {exc!r}") from exc
        except Exception as exc:  # wsproto refuses to send on a closing connection
            raise Dropped(f"connection closing while sending: {exc!r}") from exc

    async def start(self, body: dict[str, Any], request_id: str) -> None:
        await self._connect()
        await self._send({"type": "generate", "request_id": request_id, **body})

    async def resume(self, stream_id: str, after_seq: int) -> None:
        await self._connect()
        await self._send({"type": "resume", "stream_id": stream_id, "after_seq": after_seq})

    async def next(self) -> Event:
        frame = await self._frames.get()
        if isinstance(frame, WebSocketDisconnect):
            if frame.code in RESUMABLE_CLOSE_CODES:
                raise Dropped(f"closed with code {frame.code} {frame.reason!r}") from frame
            raise ConnectionLost(
                f"the server closed the connection with code {frame.code}"
                + (f" ({frame.reason})" if frame.reason else "")
            ) from frame
        if isinstance(frame, (WebSocketNetworkError, httpx.TransportError)):
            raise Dropped(f"connection lost: {frame!r}") from frame
        if isinstance(frame, BaseException):
            raise ProtocolError(f"unexpected frame: {frame!r}") from frame
        event = parse(frame)
        if isinstance(event, ErrorEvent) and event.stream_id is None:
            raise ServerError(event.message, code=event.code, retryable=event.retryable)
        return event

    async def cancel(self, stream_id: str) -> None:
        await self._send({"type": "cancel", "stream_id": stream_id})
