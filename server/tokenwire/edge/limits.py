"""Limits: what one request, one socket, one API key and one server process may take.

Each limit is a setting (see :class:`tokenwire.settings.Settings`) and each has a documented
answer, the same on both transports where the transport allows:

=============================  ==============================  ==============================
limit (setting)                HTTP                            WebSocket
=============================  ==============================  ==============================
``max_body_size`` (bytes)      413 payload_too_large            --
``ws_max_message_size``        --                              close 1009
``max_messages``,              422 invalid_request              ``error`` invalid_request
``max_input_chars``,
``max_tokens_limit``
``max_streams_per_key``,       429 rate_limited + Retry-After   ``error`` rate_limited
``max_streams``                                                 (the socket stays open)
``ws_messages_per_minute``     --                              ``error`` rate_limited, the
                                                                message is dropped (on
                                                                ``/api/chat/ws``: the AI SDK's
                                                                ``error{requestId,errorText}``)
``max_ws_connections``,        --                              accept, then close 1013
``max_ws_connections_per_key``
``max_ws_unauthenticated``     --                              accept, then close 1013
=============================  ==============================  ==============================

A WebSocket that authenticates with its first message holds one of the
``max_ws_unauthenticated`` pre-auth slots (for at most ``auth_timeout`` seconds) until it has
authenticated, and only then takes a connection slot: sockets that never authenticate cannot
keep real clients out.

:class:`LimitsMiddleware` (pure ASGI) enforces the sizes before any route reads a byte;
:class:`StreamGuard` counts live streams per key and per process, and hands each request a
:class:`ScopedRegistry` through which it creates, finds and cancels streams: a stream is only
visible to the key that created it. The owner is kept with the stream in the stream log
(:meth:`tokenwire.streams.log.StreamLog.owner_of`), so this holds for ended streams and for
streams that run on another worker as well.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import Unpack

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenwire.edge.metrics import Metrics
from tokenwire.edge.responses import send_error
from tokenwire.edge.security import Authenticator, auth_state
from tokenwire.errors import (
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)
from tokenwire.lifecycle import route_path
from tokenwire.protocol import aisdk_ws
from tokenwire.protocol import websocket as ws_codec
from tokenwire.protocol.events import ErrorEvent
from tokenwire.protocol.requests import GenerateParams
from tokenwire.protocol.websocket import CloseCode
from tokenwire.settings import Settings
from tokenwire.streams.generation import Generation
from tokenwire.streams.log import check_cursor
from tokenwire.streams.registry import Attachment, StreamOptions, StreamRegistry, Streams

# How long a client should wait before trying again after a concurrency limit (seconds): a
# hint only; streams end at their own pace.
CONCURRENCY_RETRY_AFTER = 1.0


# -- request contents -------------------------------------------------------------------------


def check_request(params: GenerateParams, settings: Settings) -> None:
    """Enforce ``max_messages`` and ``max_input_chars`` (all message contents together).

    Raises :class:`InvalidRequest` naming the limit and the value found."""
    if len(params.messages) > settings.max_messages:
        raise InvalidRequest(
            f"messages: at most {settings.max_messages} messages, got {len(params.messages)}"
        )
    chars = sum(len(message.content) for message in params.messages)
    if chars > settings.max_input_chars:
        raise InvalidRequest(
            f"messages: at most {settings.max_input_chars} characters of content, got {chars}"
        )


# -- sizes ------------------------------------------------------------------------------------


class LimitsMiddleware:
    """Body and message sizes, enforced before the app sees them.

    HTTP: a body over ``max_body_size`` bytes (by ``Content-Length``, or counted as it
    arrives) is answered 413 payload_too_large; the body is read into memory (at most that many
    bytes) before the route runs. WebSocket: a message over ``ws_max_message_size`` bytes
    closes the socket with 1009 and the app sees a disconnect (uvicorn enforces the same limit
    on the wire with ``ws_max_size``; this covers other servers and in-process clients); a
    message over ``messages_per_minute`` (per socket) is dropped and answered with an
    ``error`` frame (rate_limited), and the socket stays open.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_size: int,
        max_message_size: int,
        messages_per_minute: int | None = None,
        send_timeout: float | None = None,
    ) -> None:
        self.app = app
        self.max_body_size = max_body_size
        self.max_message_size = max_message_size
        self.messages_per_minute = messages_per_minute
        self.send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            budget = MessageBudget(self.messages_per_minute)
            guard = _MessageGuard(
                self.max_message_size,
                budget,
                receive,
                send,
                send_timeout=self.send_timeout,
                refusal=refusal_frame_of(route_path(scope)),
            )
            await self.app(scope, guard, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        too_large = PayloadTooLarge(f"request body over {self.max_body_size} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_size:
                await send_error(send, too_large, route_path(scope))
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_size:
                await send_error(send, too_large, route_path(scope))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class _MessageGuard:
    """A WebSocket's ``receive`` with its limits: a message over ``limit`` bytes closes the
    socket with 1009 (the app sees a disconnect); a message over ``budget`` is dropped and
    answered with an ``error`` frame (rate_limited, ``retry_after`` in the message), and the
    socket stays open. That answer is bounded by ``send_timeout`` seconds: a client that sends
    but never reads is then disconnected (the app sees a disconnect, code 4008)."""

    def __init__(
        self,
        limit: int,
        budget: MessageBudget,
        receive: Receive,
        send: Send,
        *,
        send_timeout: float | None = None,
        refusal: Refusal | None = None,
    ) -> None:
        self.limit = limit
        self.budget = budget
        self.refusal = refusal or _v1_refusal
        self.send_timeout = send_timeout
        self._receive = receive
        self._send = send
        self._closed: Message | None = None

    async def __call__(self) -> Message:
        while self._closed is None:
            message = await self._receive()
            if message["type"] != "websocket.receive":
                return message
            text = message.get("text")
            size = len(text.encode()) if text is not None else len(message.get("bytes") or b"")
            if size > self.limit:
                await self._close_too_big()
            elif self.budget.allow():
                return message
            else:
                await self._refuse(self.refusal(message, rate_limited_message(self.budget)))
        return self._closed

    async def _close_too_big(self) -> None:
        self._closed = {"type": "websocket.disconnect", "code": CloseCode.MESSAGE_TOO_BIG}
        try:
            await self._send(
                {
                    "type": "websocket.close",
                    "code": CloseCode.MESSAGE_TOO_BIG,
                    "reason": f"message over {self.limit} bytes",
                }
            )
        except (OSError, RuntimeError):
            pass  # the peer is gone already

    async def _refuse(self, frame: str) -> None:
        try:
            async with asyncio.timeout(self.send_timeout):
                await self._send({"type": "websocket.send", "text": frame})
        except TimeoutError:  # sends, never reads: let go of it
            self._closed = {"type": "websocket.disconnect", "code": CloseCode.SLOW_CONSUMER}
        except (OSError, RuntimeError):
            pass  # the peer is gone: the next receive says so


# -- rates ------------------------------------------------------------------------------------


class MessageBudget:
    """A token bucket: ``per_minute`` messages a minute, in bursts of up to ``per_minute``.

    ``per_minute=None`` never limits. ``allow()`` takes one message's worth and says whether
    there was one."""

    def __init__(self, per_minute: int | None) -> None:
        self.capacity = per_minute
        self.tokens = float(per_minute or 0)
        self.updated = time.monotonic()

    def allow(self) -> bool:
        if self.capacity is None:
            return True
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.capacity / 60)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def retry_after(self) -> float:
        """Seconds until the next message would be allowed."""
        if self.capacity is None:
            return 0.0
        return max(0.0, (1 - self.tokens) * 60 / self.capacity)


Refusal = Callable[[Message, RateLimited], str]
"""The frame that answers a dropped WebSocket message, in its route's protocol."""


def _v1_refusal(message: Message, exc: RateLimited) -> str:
    """Wire protocol v1's ``error`` frame (no stream_id)."""
    event = ErrorEvent(code=exc.code, message=exc.message, retryable=exc.retryable)
    return ws_codec.encode_event(event)


def _chat_socket_refusal(message: Message, exc: RateLimited) -> str:
    """The AI SDK WebSocketChatTransport's ``error`` frame for the dropped request (its
    ``requestId``, so that the SDK errors that request's stream instead of waiting for it)."""
    data = message.get("text")
    if data is None:
        data = message.get("bytes") or b""
    return aisdk_ws.error_frame(aisdk_ws.request_id_of(data), f"{exc.code}: {exc.message}")


def refusal_frame_of(path: str) -> Refusal:
    """How the socket of route ``path`` answers a dropped message: ``/api/chat/ws`` in the
    AI SDK's frames, any other in wire protocol v1's."""
    return _chat_socket_refusal if path == "/api/chat/ws" else _v1_refusal


def rate_limited_message(budget: MessageBudget) -> RateLimited:
    return RateLimited(
        f"more than {budget.capacity} messages a minute on this socket; message dropped",
        retry_after=budget.retry_after(),
    )


# -- concurrency ------------------------------------------------------------------------------


class ConnectionLimiter:
    """Open WebSocket connections per process and per API key, and sockets still waiting for
    their ``auth`` message (``max_pending``, counted apart).

    ``acquire`` and ``acquire_pending`` raise :class:`RateLimited` when full; every successful
    one must be paired with one ``release`` (same arguments) or ``release_pending``."""

    def __init__(self, max_total: int, max_per_key: int, max_pending: int = 256) -> None:
        self.max_total = max_total
        self.max_per_key = max_per_key
        self.max_pending = max_pending
        self.total = 0
        self.pending = 0
        self.per_key: defaultdict[str | None, int] = defaultdict(int)

    def acquire_pending(self) -> None:
        if self.pending >= self.max_pending:
            raise RateLimited(
                f"the server has {self.max_pending} WebSockets waiting to authenticate already",
                retry_after=CONCURRENCY_RETRY_AFTER,
            )
        self.pending += 1

    def release_pending(self) -> None:
        self.pending -= 1

    def acquire(self, key_id: str | None, *, per_key: bool) -> None:
        if per_key:
            if self.per_key[key_id] >= self.max_per_key:
                raise RateLimited(
                    f"this API key has {self.max_per_key} open WebSockets already",
                    retry_after=CONCURRENCY_RETRY_AFTER,
                )
            self.per_key[key_id] += 1
        else:
            if self.total >= self.max_total:
                raise RateLimited(
                    f"the server has {self.max_total} open WebSockets already",
                    retry_after=CONCURRENCY_RETRY_AFTER,
                )
            self.total += 1

    def release(self, key_id: str | None, *, per_key: bool) -> None:
        if per_key:
            self.per_key[key_id] -= 1
            if self.per_key[key_id] <= 0:
                del self.per_key[key_id]
        else:
            self.total -= 1


class StreamGuard:
    """Live streams per process (``max_streams``) and per key (``max_streams_per_key``), and
    who owns which stream. A stream counts from its creation until its ``stream.end``."""

    def __init__(self, settings: Settings, authenticator: Authenticator, metrics: Metrics) -> None:
        self.settings = settings
        self.auth = authenticator
        self.metrics = metrics
        self._owner: weakref.WeakKeyDictionary[Generation, str | None] = weakref.WeakKeyDictionary()
        self._live = 0  # tracked generations that have not ended
        self._live_per_key: defaultdict[str | None, int] = defaultdict(int)

    def live(self) -> list[Generation]:
        """The tracked generations that have not ended yet."""
        return [g for g in list(self._owner) if not g.ended]

    def count(self, key_id: str | None = None, *, per_key: bool = False) -> int:
        """Live tracked streams: of the process, or (``per_key``) of ``key_id``. O(1)."""
        return self._live_per_key.get(key_id, 0) if per_key else self._live

    def admit(self, key_id: str | None) -> None:
        """Raise :class:`RateLimited` if one more stream would exceed a limit."""
        if key_id is not None and (
            self.count(key_id, per_key=True) >= self.settings.max_streams_per_key
        ):
            self.metrics.limited("streams_per_key")
            raise RateLimited(
                f"this API key has {self.settings.max_streams_per_key} live streams already",
                retry_after=CONCURRENCY_RETRY_AFTER,
            )
        if self.count() >= self.settings.max_streams:
            self.metrics.limited("streams")
            raise RateLimited(
                f"the server has {self.settings.max_streams} live streams already",
                retry_after=CONCURRENCY_RETRY_AFTER,
            )

    def track(self, generation: Generation, key_id: str | None) -> None:
        self._owner[generation] = key_id
        self._live += 1
        self._live_per_key[key_id] += 1
        generation.when_ended(lambda _: self._ended(key_id))

    def _ended(self, key_id: str | None) -> None:
        self._live -= 1
        self._live_per_key[key_id] -= 1
        if not self._live_per_key[key_id]:
            del self._live_per_key[key_id]

    def owner_here(self, generation: Generation) -> str | None:
        """The key that created a generation of this process (see :meth:`track`)."""
        return self._owner.get(generation)

    def scoped(self, registry: StreamRegistry, scope: Scope) -> ScopedRegistry:
        """The registry as seen by the caller of ``scope``."""
        return ScopedRegistry(self, registry, scope)


class ScopedRegistry(Streams):
    """A :class:`StreamRegistry` seen through one connection's credentials.

    ``create`` enforces the stream limits (:class:`RateLimited`) and checks that the key has not
    been revoked since the connection authenticated (:class:`Unauthorized`); ``get``,
    ``cancel``, ``cancel_anywhere`` and ``resume`` only find the caller's own streams, live or
    ended, here or on another worker: another key's stream raises :class:`NotFound` (404
    not_found, or an ``error`` not_found on a WebSocket), never its events.
    Everything else is the registry's.
    """

    def __init__(self, guard: StreamGuard, registry: StreamRegistry, scope: Scope) -> None:
        self._guard = guard
        self._registry = registry
        self._auth = auth_state(scope)
        self.draining = registry.draining

    @property
    def key_id(self) -> str | None:
        principal = self._auth.principal
        return None if principal is None else principal.key_id

    def create(self, params: GenerateParams, **options: Unpack[StreamOptions]) -> Generation:
        """The registry's ``create``, within the limits of the caller's key, which owns the
        stream (an ``owner`` given is replaced). Raises :class:`RateLimited`,
        :class:`Unauthorized`, and what ``create`` raises."""
        principal = self._auth.principal
        if principal is None or not self._guard.auth.still_valid(principal):
            raise Unauthorized("the API key of this connection was revoked")
        self._guard.admit(principal.key_id)
        options["owner"] = principal.key_id
        generation = self._registry.create(params, **options)
        self._guard.track(generation, principal.key_id)
        return generation

    def attach(self, generation: Generation) -> Attachment:
        return self._registry.attach(generation)

    def get(self, stream_id: str) -> Generation:
        generation = self._registry.get(stream_id)
        if self._guard.owner_here(generation) != self.key_id:
            raise NotFound(f"no live stream {stream_id!r}")
        return generation

    def cancel(self, stream_id: str) -> Generation:
        self.get(stream_id)
        generation = self._registry.cancel(stream_id)
        self._guard.metrics.cancel_requested(generation.transport)
        return generation

    async def _check_owner(self, stream_id: str) -> None:
        """Raise :class:`NotFound` unless the log says the caller owns ``stream_id``
        (:class:`UnknownStream` when no such stream is kept, :class:`StreamLogUnavailable`
        when the log cannot say)."""
        if await self._registry.log.owner_of(stream_id) != self.key_id:
            raise NotFound(f"no stream {stream_id!r}")

    async def cancel_anywhere(self, stream_id: str) -> str:
        await self._check_owner(stream_id)
        generation = self._registry.live_generation(stream_id)
        if generation is not None:
            self._guard.metrics.cancel_requested(generation.transport)
        return await self._registry.cancel_anywhere(stream_id)

    async def resume(self, stream_id: str, after_seq: int) -> Attachment:
        check_cursor(after_seq)  # before the log is asked anything
        await self._check_owner(stream_id)
        generation = self._registry.live_generation(stream_id)
        attachment = await self._registry.resume(stream_id, after_seq)
        self._guard.metrics.resumed(generation.transport if generation else "unknown")
        return attachment

    def __len__(self) -> int:
        return len(self._registry)
