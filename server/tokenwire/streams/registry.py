"""StreamRegistry: the live generations of one server process, and how consumers attach to any
stream (live here, live in another process, or ended) through the stream log."""

from __future__ import annotations

import asyncio
import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Required, TypedDict, Unpack

from tokenwire.errors import ErrorCode, NotFound
from tokenwire.protocol.events import (
    ErrorEvent,
    Event,
    FinishReason,
    StreamEnd,
    StreamResumed,
    Usage,
    seq_of,
)
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import Provider
from tokenwire.settings import DisconnectPolicy, OverflowPolicy, Settings
from tokenwire.streams.generation import Detach, Generation
from tokenwire.streams.log import (
    LogReader,
    MemoryStreamLog,
    StreamLog,
    StreamLogUnavailable,
    check_cursor,
)
from tokenwire.streams.observe import NO_OBSERVER, StreamObserver
from tokenwire.streams.subscription import Subscription

log = logging.getLogger("tokenwire.streams")


def new_stream_id() -> str:
    """An opaque, unguessable stream id (``str_`` + 22 URL-safe characters)."""
    return "str_" + secrets.token_urlsafe(16)


@dataclass(eq=False)
class Attachment:
    """One consumer's view of a stream: ``catch_up`` (events to send first, in order), then
    whatever ``subscription`` delivers (``None`` when the catch-up ends the stream).

    A transport sends the catch-up, drains the subscription, and calls :meth:`detach` once,
    with how the delivery ended.
    """

    stream_id: str
    catch_up: list[Event]
    subscription: Subscription | None
    generation: Generation | None = None  # a stream that runs in this process
    _feeder: asyncio.Task[None] | None = field(default=None, repr=False)
    _on_detach: Callable[[], None] | None = field(default=None, repr=False)

    def usage_so_far(self) -> Usage | None:
        """The usage counted so far, when the stream runs here (else unknown: ``None``)."""
        return None if self.generation is None else self.generation.usage_so_far()

    def detach(self, reason: Detach) -> None:
        """The consumer is done (``ended``), gone (``disconnected``) or was cut off
        (``evicted``). Idempotent."""
        if self.subscription is not None:
            if self.generation is not None:
                self.generation.unsubscribe(self.subscription, reason)
            else:
                self.subscription.close()
        if self._feeder is not None:
            self._feeder.cancel()
            self._feeder = None
        if self._on_detach is not None:
            on_detach, self._on_detach = self._on_detach, None
            on_detach()


class DrainSignal:
    """Set once, when the server starts to shut down. A connection registers a callback with
    :meth:`watch` rather than parking a task on an ``asyncio.Event``: a task per connection
    costs memory for as long as the connection lives."""

    def __init__(self) -> None:
        self._set = False
        self._watchers: set[Callable[[], None]] = set()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Call every watcher once (in no particular order). Idempotent."""
        if self._set:
            return
        self._set = True
        watchers, self._watchers = self._watchers, set()
        for callback in watchers:
            callback()

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when the drain begins (soon, if it has begun). Returns the function
        that unregisters it; call that when the connection ends."""
        if self._set:
            asyncio.get_running_loop().call_soon(callback)
            return _nothing
        self._watchers.add(callback)
        return lambda: self._watchers.discard(callback)


def _nothing() -> None:
    pass


class QueueSettings(TypedDict):
    """A subscription's queue: ``maxsize`` events, the overflow policy, and ``evict_after``
    (seconds a full queue may stay full under ``disconnect``)."""

    maxsize: int
    overflow: OverflowPolicy
    evict_after: float


class StreamOptions(TypedDict, total=False):
    """How a stream is created: ``transport`` (required), the route's name for it (``sse``,
    ``websocket``, ``openai``, ...); ``request_id``, echoed in ``stream.start``;
    ``on_disconnect``, its disconnect policy when the request's own is not to be used;
    ``owner``, the API key id that owns it (kept in the log, see :meth:`StreamLog.claim`)."""

    transport: Required[str]
    request_id: str | None
    on_disconnect: DisconnectPolicy | None
    owner: str | None


class Streams(ABC):
    """What a route or a transport may do with streams: the registry itself
    (:class:`StreamRegistry`), or a view of it that the edge narrows to one caller's rights
    (``tokenwire.edge.limits.ScopedRegistry``). The methods' contracts are
    :class:`StreamRegistry`'s."""

    draining: DrainSignal

    @abstractmethod
    def create(self, params: GenerateParams, **options: Unpack[StreamOptions]) -> Generation: ...

    @abstractmethod
    def attach(self, generation: Generation) -> Attachment: ...

    @abstractmethod
    async def resume(self, stream_id: str, after_seq: int) -> Attachment: ...

    @abstractmethod
    def get(self, stream_id: str) -> Generation: ...

    @abstractmethod
    def cancel(self, stream_id: str) -> Generation: ...

    @abstractmethod
    async def cancel_anywhere(self, stream_id: str) -> str: ...

    @abstractmethod
    def __len__(self) -> int: ...


class StreamRegistry(Streams):
    """Creates, finds, resumes, cancels and drains generations, with the limits and policies of
    ``settings``. A generation leaves the registry as soon as its ``stream.end`` is published;
    the stream log keeps its events for resume."""

    def __init__(
        self, provider: Provider, settings: Settings | None = None, log: StreamLog | None = None
    ) -> None:
        self.provider = provider
        self.settings = settings or Settings()
        self.log = log or MemoryStreamLog.from_settings(self.settings)
        self.log.on_control(self._on_control)
        self.draining = DrainSignal()  # set when the streams are handed off (shared log)
        self.closing = False  # set when the server starts to shut down: no new streams
        self.observer: StreamObserver = NO_OBSERVER  # the edge's, set when the app is wired
        self._live: dict[str, Generation] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._live)

    def live(self) -> list[Generation]:
        """The generations running in this process, oldest first."""
        return list(self._live.values())

    def create(self, params: GenerateParams, **options: Unpack[StreamOptions]) -> Generation:
        """A new generation, registered but not started (attach first, then ``start()``).
        Its disconnect policy is ``on_disconnect``, else the request's, else the server's;
        ``owner`` (an API key id) is kept with its events in the log (see
        :meth:`StreamLog.claim`).

        Raises:
            NotFound: the provider does not serve ``params.model``.
            StreamLogUnavailable: the server is shutting down (retry on another worker).
        """
        if self.closing:
            raise StreamLogUnavailable("the server is shutting down; retry")
        model = self.provider.resolve_model(params.model)
        transport = options["transport"]
        policy = options.get("on_disconnect") or params.on_disconnect or self.settings.on_disconnect
        generation = Generation(
            new_stream_id(),
            self.provider,
            params,
            model=model,
            log=self.log,
            transport=transport,
            request_id=options.get("request_id"),
            on_disconnect=DisconnectPolicy(policy),
            detach_grace=self.settings.detach_grace,
            first_token_timeout=self.settings.first_token_timeout,
            max_duration=self.settings.max_stream_duration,
        )
        self.log.claim(generation.stream_id, options.get("owner"))
        generation.observer = self.observer
        self.observer.stream_started(transport)
        generation.when_ended(self._forget)
        self._live[generation.stream_id] = generation
        return generation

    def subscribe(self, generation: Generation) -> Subscription:
        """Attach a consumer with the server's queue size and overflow policy."""
        return generation.subscribe(**self._queue_settings())

    def attach(self, generation: Generation) -> Attachment:
        """Attach a consumer to a new generation from its first event."""
        return Attachment(
            generation.stream_id, [], self.subscribe(generation), generation=generation
        )

    async def resume(self, stream_id: str, after_seq: int) -> Attachment:
        """Attach a consumer to any stream after its cursor ``after_seq`` (0: from the start).

        The catch-up begins with ``stream.resumed`` when ``after_seq`` > 0. A stream that runs
        here is continued from memory; any other is read from the stream log (catch-up, then
        live through a reader task).

        Raises:
            UnknownStream, CursorExpired: answer with ``stream.reset``.
            CursorAhead, InvalidRequest: an invalid request (a cursor past ``MAX_SEQ``).
            StreamLogUnavailable: the log's storage cannot be reached (retryable).
        """
        check_cursor(after_seq)
        preamble: list[Event] = (
            [StreamResumed(stream_id=stream_id, after_seq=after_seq)] if after_seq else []
        )
        generation = self._live.get(stream_id)
        if generation is not None:
            attached = generation.attach(after_seq, **self._queue_settings())
            if attached is not None:
                catch_up, subscription = attached
                return Attachment(
                    stream_id, preamble + catch_up, subscription, generation=generation
                )
        reader = await self.log.open_reader(stream_id, after_seq)
        if reader.ended:
            return Attachment(stream_id, preamble + reader.catch_up, None)
        subscription = Subscription(
            stream_id,
            **self._queue_settings(),
            on_evicted=lambda _: attachment.detach("evicted"),
        )
        attachment = Attachment(
            stream_id, preamble + reader.catch_up, subscription, _on_detach=self._closer(reader)
        )
        feeder = asyncio.create_task(_feed(reader, subscription, after_seq))
        attachment._feeder = feeder
        self._tasks.add(feeder)
        feeder.add_done_callback(self._tasks.discard)
        return attachment

    def _closer(self, reader: LogReader) -> Callable[[], None]:
        def close() -> None:
            task = asyncio.get_running_loop().create_task(reader.aclose())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return close

    def _queue_settings(self) -> QueueSettings:
        return {
            "maxsize": self.settings.queue_maxsize,
            "overflow": self.settings.overflow,
            "evict_after": self.settings.slow_consumer_timeout,
        }

    def live_generation(self, stream_id: str) -> Generation | None:
        """The generation ``stream_id`` when it runs in this process, else ``None``."""
        return self._live.get(stream_id)

    def get(self, stream_id: str) -> Generation:
        """The live generation ``stream_id``. Raises :class:`NotFound`."""
        try:
            return self._live[stream_id]
        except KeyError:
            raise NotFound(f"no live stream {stream_id!r}") from None

    def cancel(self, stream_id: str) -> Generation:
        """Cancel a generation of this process (see :meth:`Generation.cancel`).
        Raises :class:`NotFound`."""
        generation = self.get(stream_id)
        generation.cancel()
        return generation

    async def cancel_anywhere(self, stream_id: str) -> str:
        """Cancel ``stream_id`` wherever it runs. Returns ``cancelled`` (it ran here),
        ``cancelling`` (the request went to the process that runs it) or ``ended``.

        Raises:
            NotFound: no such stream.
            StreamLogUnavailable: the log's storage cannot be reached.
        """
        generation = self._live.get(stream_id)
        if generation is not None:
            return "cancelled" if generation.cancel() else "ended"
        if await self.log.publish_cancel(stream_id):
            return "cancelling"
        reader = await self.log.open_reader(stream_id, 0)  # raises UnknownStream
        await reader.aclose()
        if reader.ended:
            return "ended"
        await self.log.publish_cancel(stream_id)  # its owner had not written its lease yet
        return "cancelling"

    def _on_control(self, op: str, stream_id: str) -> None:
        generation = self._live.get(stream_id)
        if generation is None:
            return
        if op == "cancel":
            generation.cancel()
        elif op == "attach":
            generation.remote_attached()
        elif op == "detach":
            generation.remote_detached()
        elif op == "lost":
            message = "the stream log (Redis) is unavailable; retry later"
            generation.fail(ErrorCode.UNAVAILABLE, message, retryable=True)

    # -- shutdown -----------------------------------------------------------------------------

    def drain(self) -> None:
        """Start a graceful shutdown: refuse new streams. With a log that other processes
        serve (:attr:`StreamLog.shared`), hand the streams off: let the running generations go
        on without readers (writing to the log) for at most ``settings.drain_timeout``
        seconds, and set :attr:`draining`, which transports watch to tell their clients to
        reconnect (elsewhere). With a log nobody else can serve, the streams stay with their
        clients: see :meth:`wait_idle`."""
        if self.closing:
            return
        self.closing = True
        if not self.log.shared:
            log.info("draining: serving %d live streams to their end", len(self._live))
            return
        self.draining.set()
        log.info("draining %d live streams", len(self._live))
        for generation in list(self._live.values()):
            generation.prepare_drain(self.settings.drain_timeout)

    async def wait_idle(self) -> None:
        """Wait until no generation that runs here now is running (bound it with
        ``asyncio.timeout``; cancelling the wait is safe)."""
        await asyncio.gather(*(generation.wait() for generation in list(self._live.values())))

    async def aclose(self) -> None:
        """Wait up to the drain timeout for the live generations to end (when draining), then
        cancel the rest and wait for their ``stream.end``."""
        generations = list(self._live.values())
        if self.draining.is_set() and generations:
            waits = [asyncio.ensure_future(generation.wait()) for generation in generations]
            await asyncio.wait(waits, timeout=self.settings.drain_timeout)
            for waiting in waits:
                waiting.cancel()
        generations = list(self._live.values())
        for generation in generations:
            generation.cancel()
        await asyncio.gather(*(generation.wait() for generation in generations))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _forget(self, generation: Generation) -> None:
        self._live.pop(generation.stream_id, None)


async def _feed(reader: LogReader, subscription: Subscription, after_seq: int) -> None:
    """Copy a log reader's events into ``subscription`` until ``stream.end``. If the log fails,
    the consumer gets ``error`` (retryable) and ``stream.end``, both carrying the last seq it
    was given, so that a later resume after them loses nothing."""
    cursor = seq_of(reader.catch_up[-1]) if reader.catch_up else after_seq
    try:
        async for batch in reader.live():
            for event in batch:
                await subscription.put(event)
                cursor = seq_of(event)
        return
    except StreamLogUnavailable as exc:
        code, message = exc.code, exc.message
    except Exception:
        log.exception("reading stream %s from the log failed", reader.stream_id)
        code, message = ErrorCode.INTERNAL_ERROR, "internal error"
    stream_id = reader.stream_id
    error = ErrorEvent(stream_id=stream_id, seq=cursor, code=code, message=message, retryable=True)
    await subscription.put(error)
    end = StreamEnd(stream_id=stream_id, seq=cursor, finish_reason=FinishReason.ERROR, usage=None)
    await subscription.put(end)
