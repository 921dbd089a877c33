"""``AsyncClient``: stream tokenwire events over SSE or WebSocket with one API, resuming by
itself when the connection drops.

    async with AsyncClient("http://127.0.0.1:8000", transport="websocket") as client:
        async with client.stream([{"role": "user", "content": "Hi"}]) as stream:
            async for event in stream:
                if event.type == "text.delta":
                    print(event.delta, end="")
        print(stream.text, stream.end.finish_reason)

Events are the protocol's models (:mod:`tokenwire.protocol.events`); an iteration ends after
``stream.end``. Besides ``text``, a stream gathers the model's ``reasoning`` (``reasoning.delta``)
and its complete ``tool_calls`` (:class:`ToolCall`, one per ``tool_call.end``):

    async with client.stream(messages, tools=[...]) as stream:
        async for event in stream:
            ...
    stream.reasoning, stream.text, stream.tool_calls  # [ToolCall(index, call_id, name, arguments)]
 A lost connection is invisible to the caller: the client reconnects with
exponential backoff and jitter (:class:`Reconnect`) and resumes after the last seq it received
(SSE: ``Last-Event-ID``, WHATWG HTML 9.2; WebSocket: a ``resume`` message), so no text is
duplicated or missing. The iteration yields ``stream.resumed`` each time that happens.

Exceptions (see :mod:`tokenwire_client.errors`): :class:`ServerError` when the server refuses,
:class:`ConnectionLost` when the stream cannot be resumed (:class:`StreamReset` when the server
no longer has it), :class:`ProtocolError` for frames that are not wire protocol v1. An
``error`` event inside a stream (e.g. ``provider_error``) is not raised: it is yielded and
followed by ``stream.end`` with finish_reason ``error``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from tokenwire.protocol.events import (
    ErrorEvent,
    Event,
    ReasoningDelta,
    StreamEnd,
    StreamReset,
    StreamResumed,
    StreamStart,
    TextDelta,
    ToolCallEnd,
)
from tokenwire_client.connections import Dropped, SSEConnection, WebSocketConnection, http_error
from tokenwire_client.errors import ConnectionLost, ProtocolError, StreamFailed
from tokenwire_client.errors import StreamReset as StreamResetError

TransportName = Literal["sse", "websocket"]

_CANCEL_TIMEOUT = 5.0  # seconds; a best-effort cancel on close never hangs longer


@dataclass(frozen=True)
class ToolCall:
    """One complete tool call of a stream (from its ``tool_call.end``).

    ``index`` orders the calls of one reply (parallel calls have distinct indexes);
    ``arguments`` is the JSON text the model wrote, exactly as sent (parse it with
    ``json.loads``; a model may write invalid JSON)."""

    index: int
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, kw_only=True)
class Reconnect:
    """How a stream reconnects after a lost connection. Durations in seconds.

    An outage gets up to ``attempts`` tries; the count starts again once the server has sent
    a new event. Before try ``n`` (from 1) the client waits
    ``min(initial * 2**(n-1) + uniform(0, jitter), maximum)``, and never less than the
    server's ``retry:`` hint (SSE). The first try of an outage waits only for that hint.
    """

    attempts: int = 8
    initial: float = 0.1
    maximum: float = 5.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if min(self.initial, self.maximum, self.jitter) < 0:
            raise ValueError("initial, maximum and jitter are seconds: they must be >= 0")


class AsyncClient:
    """A client of one tokenwire server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        transport: ``"sse"`` or ``"websocket"``; the events and the API are the same.
        api_key: sent as ``Authorization: Bearer <api_key>``.
        reconnect: the backoff policy; ``None`` turns automatic resume off (a drop then raises
            :class:`ConnectionLost` at once).
        read_timeout: seconds without a byte after which an SSE connection counts as lost
            (the server sends ``: ping`` every 15 s by default); ``None``: wait forever.
            WebSocket liveness uses protocol pings (httpx-ws: every 20 s).
        http_client: an ``httpx.AsyncClient`` to use (e.g. with an in-process ASGI transport);
            by default the client makes one and closes it in :meth:`aclose`.

    With ``reconnect`` on, streams are started with ``on_disconnect: "detach"`` (unless the
    call says otherwise) so that the generation survives a drop; closing a stream before its
    end then cancels it on the server.
    """

    def __init__(
        self,
        base_url: str,
        *,
        transport: TransportName = "sse",
        api_key: str | None = None,
        reconnect: Reconnect | None = Reconnect(),  # noqa: B008 - frozen, so sharing is safe
        read_timeout: float | None = 60.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if transport not in ("sse", "websocket"):
            raise ValueError(f"transport must be 'sse' or 'websocket', got {transport!r}")
        self.base_url = base_url.rstrip("/")
        self.transport: TransportName = transport
        self.reconnect = reconnect
        self.read_timeout = read_timeout
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None))

    @property
    def http(self) -> httpx.AsyncClient:
        """The httpx client requests go through (the one given, or the client's own), for
        calls this client has no method for, e.g. ``GET /healthz``."""
        return self._http

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this client made it (idempotent)."""
        if self._owns_http:
            await self._http.aclose()

    def stream(
        self, messages: Sequence[dict[str, Any]], *, model: str | None = None, **params: Any
    ) -> EventStream:
        """Start a stream (the connection opens on the first ``__anext__``).

        ``messages`` are ``{"role", "content"}`` dicts; ``params`` are the other fields of
        ``POST /v1/streams`` (``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``,
        ``on_disconnect``). Raises :class:`ServerError` on the first ``__anext__`` when the
        server refuses the request (e.g. 422 ``invalid_request``).
        """
        body: dict[str, Any] = {"messages": list(messages), **params}
        if model is not None:
            body["model"] = model
        if self.reconnect is not None:
            body.setdefault("on_disconnect", "detach")
        return EventStream(self, body)

    async def text(self, messages: Sequence[dict[str, Any]], **params: Any) -> str:
        """Stream and return the whole generated text.

        Raises :class:`StreamFailed` when the stream ends with an ``error`` event (its code
        and message, and the text so far), and what :meth:`stream` raises."""
        async with self.stream(messages, **params) as stream:
            async for _ in stream:
                pass
        return stream.result()

    async def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``: the models the server serves, the default first, each as the
        OpenAI model object ``{"id", "object", "created", "owned_by"}`` plus
        ``context_window`` (tokens) when the server knows it.

        Raises :class:`ServerError` when the server refuses (e.g. 401 ``unauthorized``) and
        :class:`ConnectionLost` when no server answers (not retried)."""
        try:
            response = await self._http.get(f"{self.base_url}/v1/models", headers=self._headers)
        except httpx.TransportError as exc:
            raise ConnectionLost(f"GET {self.base_url}/v1/models: {exc}") from exc
        if response.status_code != 200:
            raise http_error(response)
        try:
            data = response.json()["data"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"GET /v1/models: not a model list: {response.text[:200]}") from exc
        return [dict(model) for model in data]

    def _connection(self) -> SSEConnection | WebSocketConnection:
        if self.transport == "sse":
            return SSEConnection(self._http, self.base_url, self._headers, self.read_timeout)
        return WebSocketConnection(self._http, self.base_url, self._headers, None)


class EventStream:
    """The events of one stream, and what has been learnt from them so far.

    Attributes:
        text: the text of every ``text.delta`` so far (exactly once each, across resumes).
        reasoning: the text of every ``reasoning.delta`` so far: the model's reasoning, kept
            apart from ``text`` ("" from a model that does not reason).
        tool_calls: the complete tool calls so far (:class:`ToolCall`, in the order their
            ``tool_call.end`` arrived; a call whose arguments are still streaming is not in it).
        stream_id: the server's id of the stream, once known.
        last_seq: seq of the last numbered event received (the resume cursor), 0 before any.
        reconnects: connections lost and resumed so far.
        end: the ``stream.end`` event, once received.
        error: the ``error`` event of a failed stream, if any.
        retry_after: the server's reconnection delay in seconds (SSE ``retry:``, or an HTTP
            ``Retry-After``), ``None`` until it gives one; the client never reconnects sooner.

    Iterate it from one task. :meth:`cancel` may be called from any task of the same loop.
    """

    def __init__(self, client: AsyncClient, body: dict[str, Any]) -> None:
        self._client = client
        self._body = body
        self.request_id = "req_" + secrets.token_urlsafe(9)
        self.text = ""
        self.reasoning = ""
        self.tool_calls: list[ToolCall] = []
        self.stream_id: str | None = None
        self.last_seq = 0
        self.reconnects = 0
        self.end: StreamEnd | None = None
        self.error: ErrorEvent | None = None
        self._connection: SSEConnection | WebSocketConnection | None = None
        self.retry_after: float | None = None
        self._cancel_requested = False
        self._cancel_sent = False
        self._events = self._run()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    async def __aenter__(self) -> EventStream:
        return self

    def result(self) -> str:
        """The text of a stream iterated to its end. Raises :class:`StreamFailed` when it
        ended with an ``error`` event (finish_reason ``error``)."""
        if self.error is not None:
            raise StreamFailed(
                self.error.message,
                code=str(self.error.code),
                retryable=self.error.retryable,
                stream_id=self.stream_id,
                text=self.text,
            )
        return self.text

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (idempotent). A stream left before its end is cancelled on the
        server (best effort, at most 5 s), since with resume on it would otherwise run on
        detached for the server's grace period."""
        await self._events.aclose()
        detached = self._body.get("on_disconnect") == "detach"
        if self.end is None and self.stream_id is not None and detached:
            connection = self._client._connection()
            try:
                async with asyncio.timeout(_CANCEL_TIMEOUT):
                    await connection.post_cancel(self.stream_id)
            except Exception:  # best effort by contract: the server's grace period is the backstop
                pass
            finally:
                await connection.aclose()

    async def cancel(self) -> None:
        """Ask the server to end the stream; the iteration then goes on up to ``stream.end``
        (finish_reason ``cancelled``, with the usage so far). Idempotent; a no-op after the
        end. Before the stream id is known the cancel is sent as soon as it is. Over
        WebSocket it is a ``cancel`` message, over SSE ``POST /v1/streams/{id}/cancel``; while
        reconnecting, it goes over HTTP."""
        self._cancel_requested = True
        await self._send_cancel()

    async def _send_cancel(self) -> None:
        if self._cancel_sent or self.end is not None or self.stream_id is None:
            return
        self._cancel_sent = True
        connection = self._connection
        try:
            if connection is not None:
                await connection.cancel(self.stream_id)
                return
            helper = self._client._connection()
            try:
                await helper.post_cancel(self.stream_id)
            finally:
                await helper.aclose()
        except Dropped:
            self._cancel_sent = False  # sent again once reconnected

    # -- the stream's life ------------------------------------------------------------------

    async def _run(self) -> AsyncGenerator[Event, None]:
        resuming = False
        while True:
            connection, pending = await self._establish(resuming)
            self._connection = connection
            try:
                await self._send_cancel_if_requested()
                while True:
                    for event in pending:
                        if self._accept(event):
                            yield event
                            if self.end is not None:
                                return
                            await self._send_cancel_if_requested()
                    pending = [await connection.next()]
            except Dropped as exc:
                if self._client.reconnect is None:
                    raise self._lost(f"connection lost and reconnect is off: {exc}") from exc
                self.retry_after = exc.retry_after or connection.retry_after or self.retry_after
                self.reconnects += 1
                resuming = True
            finally:
                self._connection = None
                await connection.aclose()

    async def _send_cancel_if_requested(self) -> None:
        if self._cancel_requested and not self._cancel_sent:
            await self._send_cancel()

    async def _establish(self, resuming: bool) -> tuple[Any, list[Event]]:
        """Connect (start or resume) until the server makes progress: returns the live
        connection and the events read so far, the last of which is new. Raises
        :class:`ConnectionLost` when every attempt failed."""
        policy = self._client.reconnect
        if policy is None:
            try:
                return await self._attempt()
            except Dropped as exc:
                raise self._lost(f"could not connect: {exc}") from exc
        if resuming and self.retry_after:
            await asyncio.sleep(self.retry_after)
        backoff = wait_exponential_jitter(
            multiplier=policy.initial, max=policy.maximum, jitter=policy.jitter
        )

        def wait(state: RetryCallState) -> float:
            return max(self.retry_after or 0.0, backoff(state))

        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait,
            retry=retry_if_exception_type(Dropped),
            reraise=True,
        )
        try:
            return await retrying(self._attempt)
        except Dropped as exc:
            attempts = retrying.statistics.get("attempt_number", policy.attempts)
            raise self._lost(f"gave up after {attempts} attempts: {exc}", attempts) from exc

    async def _attempt(self) -> tuple[Any, list[Event]]:
        connection = self._client._connection()
        try:
            if self.stream_id is None:
                await connection.start(self._body, self.request_id)
            else:
                await connection.resume(self.stream_id, self.last_seq)
            if connection.stream_id and self.stream_id is None:
                self.stream_id = connection.stream_id
            pending: list[Event] = []
            while True:
                event = await connection.next()
                pending.append(event)
                if self._is_progress(event):
                    return connection, pending
        except BaseException as exc:
            if isinstance(exc, Dropped):
                self.retry_after = exc.retry_after or connection.retry_after or self.retry_after
            await connection.aclose()
            raise

    def _is_progress(self, event: Event) -> bool:
        if isinstance(event, StreamReset):
            return True
        seq = getattr(event, "seq", None)
        return seq is not None and (seq > self.last_seq or self._terminal_at_cursor(event))

    def _terminal_at_cursor(self, event: Event) -> bool:
        """Whether ``event`` is an ``error`` or ``stream.end`` that carries the client's own
        last seq: the server's answer when the stream is lost past that seq (its worker died,
        or the log failed). It is new, not a duplicate: a stream's own error and end come
        after the events they follow."""
        if self.end is not None or getattr(event, "seq", None) != self.last_seq:
            return False
        if isinstance(event, StreamEnd):
            return True
        return isinstance(event, ErrorEvent) and (
            self.error is None or (self.error.seq or 0) < self.last_seq
        )

    def _accept(self, event: Event) -> bool:
        """Update the state from one event; whether to hand it to the caller."""
        if isinstance(event, StreamReset):
            raise StreamResetError(
                f"the server cannot resume stream {event.stream_id} ({event.reason})",
                reason=event.reason,
                stream_id=self.stream_id,
                last_seq=self.last_seq,
            )
        if isinstance(event, ErrorEvent) and event.code == "slow_consumer" and event.retryable:
            # Evicted: the generation goes on; the stream.end that follows is this
            # connection's, not the stream's. Both carry the last seq sent, so resume after it.
            raise Dropped(f"evicted as a slow consumer: {event.message}")
        if isinstance(event, StreamResumed):
            return True
        seq = getattr(event, "seq", None)
        if seq is None or (seq <= self.last_seq and not self._terminal_at_cursor(event)):
            return False  # a duplicate from a replay overlap: already handed over
        self.last_seq = seq
        if isinstance(event, StreamStart):
            self.stream_id = event.stream_id
        elif isinstance(event, TextDelta):
            self.text += event.delta
        elif isinstance(event, ReasoningDelta):
            self.reasoning += event.delta
        elif isinstance(event, ToolCallEnd):
            call = ToolCall(event.index, event.call_id, event.name, event.arguments)
            self.tool_calls.append(call)
        elif isinstance(event, ErrorEvent):
            self.error = event
        elif isinstance(event, StreamEnd):
            self.end = event
        return True

    def _lost(self, message: str, attempts: int = 0) -> ConnectionLost:
        return ConnectionLost(
            message, stream_id=self.stream_id, last_seq=self.last_seq, attempts=attempts
        )
