"""Generation: runs one provider call as a task and publishes its events to subscriptions.

Data flows one way: provider -> Generation -> StreamLog and Subscription(queue) -> transport.
Control flows back: :meth:`Generation.cancel` (an explicit cancel, or a disconnect under the
``cancel`` policy) cancels the task, which closes the provider's iterator and so stops the
upstream work.

Every generation publishes, in order: ``stream.start``; per provider event, in the provider's
order, ``text.delta`` (:class:`Delta`), ``reasoning.delta`` (:class:`Reasoning`),
``tool_call.start`` (:class:`ToolCall`) and ``tool_call.delta`` (:class:`ToolArguments`); when
the provider finishes, one ``tool_call.end`` per call, in index order, with the call's whole
arguments; ``error`` if the provider failed; exactly one ``stream.end`` with the finish reason
and the usage (the provider's own when it reports one, else what was counted so far). Its end
is logged once.

When ``tool_call.end`` comes: at the provider's finish, not when a later call starts, because
the arguments of parallel calls may interleave (OpenAI's chunks name each fragment's call by
index, and nothing says a call is complete before ``finish_reason``). A stream that is
cancelled, fails or times out ends no call: a call without its ``tool_call.end`` is incomplete.
A provider that breaks the order (arguments of a call never begun, a call begun twice) fails
the stream with ``error`` (provider_error) then ``stream.end``; what
came before it is kept.

Deadlines (seconds, ``None`` to disable), each ending the stream and closing the provider:
``first_token_timeout`` -> ``error`` (provider_timeout, retryable) then ``stream.end``
(finish_reason error), counted from the start or, for a provider that queues the request
(``stream.queued``), from its admission: no first-token deadline runs while it waits;
``max_duration`` -> ``stream.end`` (finish_reason timeout). The token limit is the request's
``max_tokens`` (finish_reason length), enforced by the provider.

Every event is appended to the :class:`~tokenwire.streams.log.StreamLog` before any subscription
sees it, so that :meth:`Generation.attach` (a snapshot of the log plus a new subscription, taken
in one step of the event loop) continues a consumer's cursor with no gap and no duplicate.

Disconnect policy, applied when the last reader goes away before the end (local subscriptions
and readers in other processes alike): ``cancel`` stops the generation at once, also while the
provider still waits for its first token; ``detach`` lets it run on, and cancels it if nobody
has attached again within ``detach_grace`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import aclosing
from enum import StrEnum
from typing import Literal

from tokenwire.errors import ErrorCode, ProviderError
from tokenwire.protocol.events import (
    ErrorEvent,
    Event,
    FinishReason,
    ReasoningDelta,
    StreamEnd,
    StreamQueued,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import (
    Delta,
    Finish,
    Prompt,
    Provider,
    Queued,
    Reasoning,
    ToolArguments,
    ToolCall,
)
from tokenwire.settings import DisconnectPolicy, OverflowPolicy
from tokenwire.streams.log import StreamLog
from tokenwire.streams.observe import NO_OBSERVER, StreamEnded, StreamObserver
from tokenwire.streams.subscription import Subscription

log = logging.getLogger("tokenwire.streams")


Detach = Literal["ended", "disconnected", "evicted"]


class GenerationState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    ENDED = "ended"


class Generation:
    """One stream: one provider call, numbered events, any number of subscriptions.

    Args:
        stream_id: opaque id of the stream.
        provider: the backend to call; ``model`` must be one it resolved.
        params: what to generate.
        transport: name of the transport that started it ("sse", "websocket", "openai"), logged.
        request_id: echoed in ``stream.start`` (WebSocket ``generate.request_id``).
        log: where every event is kept for resume; the stream is begun in it at once.
        on_disconnect: what a disconnect of the last subscriber does (``cancel`` stops it).
    """

    def __init__(
        self,
        stream_id: str,
        provider: Provider,
        params: GenerateParams,
        *,
        model: str,
        log: StreamLog,
        transport: str,
        request_id: str | None = None,
        on_disconnect: DisconnectPolicy = DisconnectPolicy.CANCEL,
        detach_grace: float = 60.0,
        first_token_timeout: float | None = None,
        max_duration: float | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.provider = provider
        self.params = params
        self.model = model
        self.log = log
        self.transport = transport
        self.request_id = request_id
        self.on_disconnect = on_disconnect
        self.detach_grace = detach_grace
        self.first_token_timeout = first_token_timeout
        self.max_duration = max_duration
        self.state = GenerationState.CREATED
        self.seq = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.reasoning_tokens = 0  # part of completion_tokens
        self.tool_calls: dict[int, _Call] = {}  # by index, in the order they began
        self.finish_reason: FinishReason | None = None
        self.usage: Usage | None = None
        self.created = time.time()
        self.started_at = time.monotonic()
        self.first_token_at: float | None = None
        self._ended: asyncio.Future[None] | None = None  # made by wait(), if anyone waits
        self.subscriptions: list[Subscription] = []
        self.remote_readers = 0  # readers attached through the log from other processes
        self._on_ended: list[Callable[[Generation], None]] = []  # see when_ended()
        self._task: asyncio.Task[None] | None = None
        self._cancel_requested = False
        self._failure: tuple[ErrorCode, str, bool] | None = None
        self._grace: asyncio.TimerHandle | None = None
        self.observer: StreamObserver = NO_OBSERVER  # set by the registry that creates it
        log.begin(stream_id)

    # -- subscriptions ------------------------------------------------------------------------

    def when_ended(self, callback: Callable[[Generation], None]) -> None:
        """Call ``callback(generation)`` once ``stream.end`` has been published (at once if it
        has been)."""
        if self.state is GenerationState.ENDED:
            callback(self)
        else:
            self._on_ended.append(callback)

    def subscribe(
        self,
        *,
        maxsize: int = 64,
        overflow: OverflowPolicy = OverflowPolicy.BLOCK,
        evict_after: float = 5.0,
    ) -> Subscription:
        """Attach a consumer. It receives every event published from now on.

        ``evict_after`` (seconds) applies to the ``disconnect`` overflow policy."""
        self._stop_grace()
        subscription = Subscription(
            self.stream_id,
            maxsize=maxsize,
            overflow=overflow,
            evict_after=evict_after,
            on_evicted=lambda evicted: self.unsubscribe(evicted, "evicted"),
        )
        self.subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription, reason: Detach = "ended") -> None:
        """Detach a consumer (idempotent: only the first call for a subscription counts).

        ``reason``: ``ended`` (it saw ``stream.end``), ``disconnected`` (its client went away)
        or ``evicted`` (the server cut off a slow consumer). When the last subscriber leaves
        before the end, the disconnect policy applies to both of the latter alike.
        """
        subscription.close()
        if subscription not in self.subscriptions:
            return
        self.subscriptions.remove(subscription)
        if reason != "ended":
            self._reader_left()

    def attach(
        self,
        after_seq: int,
        *,
        maxsize: int = 64,
        overflow: OverflowPolicy = OverflowPolicy.BLOCK,
        evict_after: float = 5.0,
    ) -> tuple[list[Event], Subscription | None] | None:
        """Resume a consumer after its cursor ``after_seq``: the logged events after it, and a
        subscription for everything later (``None`` when the catch-up already ends the stream).
        Returns ``None`` when the log no longer holds this stream locally (read it through the
        log instead).

        Raises:
            CursorAhead: ``after_seq`` is beyond the newest event.
            CursorExpired: events right after ``after_seq`` are no longer kept.
        """
        snapshot = self.log.snapshot(self.stream_id, after_seq)
        if snapshot is None:
            return None
        catch_up, ended = snapshot
        if ended:
            return catch_up, None
        subscription = self.subscribe(maxsize=maxsize, overflow=overflow, evict_after=evict_after)
        return catch_up, subscription

    def remote_attached(self) -> None:
        """A reader in another process attached through the log (it holds off the grace)."""
        self.remote_readers += 1
        self._stop_grace()

    def remote_detached(self) -> None:
        """A reader in another process went away: the disconnect policy may apply."""
        self.remote_readers = max(0, self.remote_readers - 1)
        self._reader_left()

    def prepare_drain(self, timeout: float) -> None:
        """The server is shutting down: readers will be told to reconnect elsewhere, and the
        generation runs on (writing to the log) for at most ``timeout`` seconds without one."""
        self.on_disconnect = DisconnectPolicy.DETACH
        self.detach_grace = timeout
        self._stop_grace()
        self._reader_left()

    def _reader_left(self) -> None:
        if self.subscriptions or self.remote_readers or self.state is GenerationState.ENDED:
            return
        if self.on_disconnect is DisconnectPolicy.CANCEL:
            self.cancel()
        elif self._grace is None:
            loop = asyncio.get_running_loop()
            self._grace = loop.call_later(self.detach_grace, self._grace_expired)

    def _stop_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def _grace_expired(self) -> None:
        self._grace = None
        if not self.subscriptions and not self.remote_readers:
            self.cancel()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run the provider in a new task. Raises ``RuntimeError`` if already started.

        Started with no reader (a detached start), the disconnect policy applies at once."""
        if self._task is not None:
            raise RuntimeError(f"generation {self.stream_id} was already started")
        self.state = GenerationState.RUNNING
        self._task = asyncio.create_task(self._run(), name=f"generation-{self.stream_id}")
        self._reader_left()
        return self._task

    def cancel(self) -> bool:
        """Stop the generation: the provider is closed and the stream ends with finish_reason
        ``cancelled`` and the usage so far. Returns False if it had already ended."""
        if self.state is GenerationState.ENDED or self._cancel_requested:
            return False
        self._cancel_requested = True
        if self._task is not None:
            self._task.cancel()
        return True

    def fail(self, code: ErrorCode, message: str, *, retryable: bool) -> bool:
        """Stop the generation with an ``error`` (``code``, ``message``) and ``stream.end``
        (finish_reason error): the provider is closed as on cancel. Returns False if it had
        already ended."""
        if self.state is GenerationState.ENDED or self._cancel_requested:
            return False
        self._failure = (code, message, retryable)
        return self.cancel()

    def usage_so_far(self) -> Usage:
        """The usage counted so far (the final one once the stream has ended)."""
        if self.usage is not None:
            return self.usage
        usage = Usage.of(self.prompt_tokens, self.completion_tokens)
        if self.reasoning_tokens:
            return usage.model_copy(update={"reasoning_tokens": self.reasoning_tokens})
        return usage

    @property
    def ended(self) -> bool:
        """Whether ``stream.end`` has been published."""
        return self.state is GenerationState.ENDED

    async def wait(self) -> None:
        """Wait until ``stream.end`` has been published."""
        if self.state is GenerationState.ENDED:
            return
        if self._ended is None:  # made on demand: most streams are never waited for
            self._ended = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._ended)

    # -- the run ------------------------------------------------------------------------------

    async def _publish(self, event: Event) -> None:
        waiting = self._offer(event)
        if waiting:
            await _put(waiting, event)

    def _offer(self, event: Event) -> list[Subscription] | None:
        """Log ``event``, then queue it for every subscription with room. Returns those whose
        queue is full (``None`` if none is): the caller awaits their ``put``, where the
        overflow policy applies."""
        self.log.append(self.stream_id, event)  # first: see attach()
        waiting = None
        for subscription in self.subscriptions:
            if not subscription.offer(event):
                waiting = waiting or []
                waiting.append(subscription)
        return waiting

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def _run(self) -> None:
        finish = FinishReason.STOP
        first_by: float | None = None
        end_by: float | None = None
        deadline: asyncio.Timeout | None = None
        provider_usage: Usage | None = None
        error: ErrorEvent | None = None
        external_cancel = False
        try:
            await self._publish(
                StreamStart(
                    stream_id=self.stream_id,
                    seq=self._next_seq(),
                    model=self.model,
                    created=int(self.created),
                    request_id=self.request_id,
                )
            )
            if self._cancel_requested:  # cancelled between create() and start()
                raise asyncio.CancelledError
            loop = asyncio.get_running_loop()
            end_by = None if self.max_duration is None else loop.time() + self.max_duration
            first_by = (
                None if self.first_token_timeout is None else loop.time() + self.first_token_timeout
            )
            async with (
                aclosing(self.provider.stream(self.params, self.model)) as events,
                asyncio.timeout_at(_earliest(first_by, end_by)) as deadline,
            ):
                stream_id = self.stream_id
                async for item in events:
                    # The per-token path: a delta of each kind costs the same (one isinstance
                    # more per kind), built positionally, offered without a coroutine.
                    event: Event
                    if isinstance(item, Delta):
                        self.completion_tokens += item.tokens
                        self.seq = seq = self.seq + 1
                        event = TextDelta(stream_id, seq, item.text)
                    elif isinstance(item, Reasoning):
                        self.completion_tokens += item.tokens
                        self.reasoning_tokens += item.tokens
                        self.seq = seq = self.seq + 1
                        event = ReasoningDelta(stream_id, seq, item.text)
                    elif isinstance(item, ToolArguments):  # _tool_arguments(), inlined
                        call = self.tool_calls.get(item.index)
                        if call is None:
                            raise ProviderError(
                                f"provider sent arguments of tool call {item.index}, "
                                "which never began"
                            )
                        self.completion_tokens += item.tokens
                        call.arguments.append(item.text)
                        self.seq = seq = self.seq + 1
                        event = ToolCallDelta(stream_id, seq, item.index, item.text)
                    elif isinstance(item, Prompt):
                        self.prompt_tokens = item.tokens
                        continue
                    elif isinstance(item, Finish):
                        finish, provider_usage = item.reason, item.usage
                        continue
                    elif isinstance(item, Queued):
                        if item.position:  # waiting for a slot: no first-token deadline
                            first_by = None
                            deadline.reschedule(end_by)
                        elif self.first_token_timeout is not None:  # admitted: count from now
                            first_by = loop.time() + self.first_token_timeout
                            deadline.reschedule(_earliest(first_by, end_by))
                        event = StreamQueued(
                            stream_id=stream_id, seq=self._next_seq(), position=item.position
                        )
                        await self._publish(event)
                        continue
                    else:
                        event = self._tool_call(item)
                    if self.first_token_at is None:
                        self.first_token_at = time.monotonic()
                        deadline.reschedule(end_by)
                    waiting = self._offer(event)  # _publish, inlined
                    if waiting:
                        await _put(waiting, event)
                    if self._cancel_requested:  # a provider that never awaits: let it land
                        await asyncio.sleep(0)
                for call in sorted(self.tool_calls.values(), key=_index):
                    await self._publish(call.end(self.stream_id, self._next_seq()))
        except asyncio.CancelledError:
            finish = FinishReason.CANCELLED
            task = asyncio.current_task()
            if self._cancel_requested and task is not None:
                task.uncancel()
            else:
                external_cancel = True  # server shutdown: still end the stream, then re-raise
            if self._failure is not None:
                finish = FinishReason.ERROR
                code, message, retryable = self._failure
                error = self._error(code, message, retryable)
        except TimeoutError:
            if deadline is None or not deadline.expired():  # not ours: a provider bug
                finish, error = self._internal_error()
            elif (
                self.first_token_at is None
                and first_by is not None
                and (end_by is None or first_by <= end_by)
            ):
                finish = FinishReason.ERROR
                error = self._error(
                    ErrorCode.PROVIDER_TIMEOUT,
                    f"no first token within {self.first_token_timeout} s",
                    True,
                )
            else:
                finish = FinishReason.TIMEOUT
        except ProviderError as exc:
            finish = FinishReason.ERROR
            error = self._error(exc.code, exc.message, exc.retryable)
        except Exception:
            finish, error = self._internal_error()
        self.usage = provider_usage or self.usage_so_far()
        self.finish_reason = finish
        try:
            if error is not None:
                await self._publish(error)
            await self._publish(
                StreamEnd(
                    stream_id=self.stream_id,
                    seq=self._next_seq(),
                    finish_reason=finish,
                    usage=self.usage,
                )
            )
        finally:
            self._end()
            self.observer.stream_ended(
                StreamEnded(
                    self.transport,
                    str(finish),
                    self.completion_tokens,
                    None if error is None else str(error.code),
                )
            )
        if external_cancel:
            raise asyncio.CancelledError

    def _tool_call(self, item: ToolCall) -> ToolCallStart:
        """The event of a tool call's start. Raises :class:`ProviderError` if the call began
        before."""
        if item.index in self.tool_calls:
            raise ProviderError(f"provider began tool call {item.index} twice")
        self.tool_calls[item.index] = _Call(item.index, item.call_id, item.name)
        return ToolCallStart(
            stream_id=self.stream_id,
            seq=self._next_seq(),
            index=item.index,
            call_id=item.call_id,
            name=item.name,
        )

    def _internal_error(self) -> tuple[FinishReason, ErrorEvent]:
        """Log the exception being handled; the client only learns "internal error"."""
        log.exception("generation %s failed", self.stream_id)
        return FinishReason.ERROR, self._error(ErrorCode.INTERNAL_ERROR, "internal error", False)

    def _error(self, code: ErrorCode, message: str, retryable: bool) -> ErrorEvent:
        return ErrorEvent(
            stream_id=self.stream_id,
            seq=self._next_seq(),
            code=code,
            message=message,
            retryable=retryable,
        )

    def _end(self) -> None:
        self.state = GenerationState.ENDED
        self._stop_grace()
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)
        now = time.monotonic()
        ttft = None if self.first_token_at is None else self.first_token_at - self.started_at
        log.info(
            "stream ended",
            extra={
                "stream_id": self.stream_id,
                "transport": self.transport,
                "finish_reason": str(self.finish_reason),
                "tokens": self.completion_tokens,
                "ttft_s": None if ttft is None else round(ttft, 6),
                "duration_s": round(now - self.started_at, 6),
            },
        )
        for callback in self._on_ended:
            callback(self)


class _Call:
    """A tool call under way: its identity and the pieces of its arguments so far."""

    __slots__ = ("index", "call_id", "name", "arguments")

    def __init__(self, index: int, call_id: str, name: str) -> None:
        self.index = index
        self.call_id = call_id
        self.name = name
        self.arguments: list[str] = []

    def end(self, stream_id: str, seq: int) -> ToolCallEnd:
        return ToolCallEnd(
            stream_id=stream_id,
            seq=seq,
            index=self.index,
            call_id=self.call_id,
            name=self.name,
            arguments="".join(self.arguments),
        )


def _index(call: _Call) -> int:
    return call.index


async def _put(subscriptions: list[Subscription], event: Event) -> None:
    for subscription in subscriptions:
        await subscription.put(event)


def _earliest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None
