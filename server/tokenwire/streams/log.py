"""StreamLog: the events of each stream, kept so that any client can resume from a cursor.

A :class:`~tokenwire.streams.generation.Generation` appends every event it publishes, in seq
order, with :meth:`StreamLog.append` (which never waits). A consumer that (re)attaches reads
the log from its cursor, "the last seq seen": catch-up first, then live, with no gap and no
duplicate across the boundary.

- Streams that run in this process are served from the process's own memory:
  :meth:`StreamLog.snapshot` returns the events after a cursor synchronously, so that a
  subscription taken in the same step of the event loop continues exactly where the snapshot
  stops.
- Streams that ended, or that run in another process (the Redis backend), are served by
  :meth:`StreamLog.open_reader`.

Backends, chosen by ``TOKENWIRE_STREAM_LOG`` (see :func:`create_stream_log`):

- ``memory`` (default): one process. Each stream keeps at most ``max_events`` events and
  ``max_bytes`` bytes (oldest dropped first; a cursor before the kept window is *expired*), and
  an ended stream is forgotten ``ttl`` seconds after its end.
- ``redis://...``: Redis Streams, shared by every worker and host of a deployment
  (:mod:`tokenwire.streams.redis_log`).

Ownership: every stream carries its owner (the API key id that created it, ``None`` when
anonymous), given with :meth:`StreamLog.claim` and kept with the stream's events for as long
as they are kept, in memory and in Redis; :meth:`StreamLog.owner_of` answers it for any stream,
live here, live elsewhere or ended, so that the edge can check it on every read and cancel.

Beside the events, a log keeps small *documents* (:meth:`StreamLog.put_document`,
:meth:`StreamLog.get_document`): text under a key, with a TTL, shared as the events are, for
what a protocol keeps beside its streams (the OpenAI Responses API's response records).

Errors raised to callers: :class:`UnknownStream`, :class:`CursorExpired` and
:class:`StreamLost` (answered with ``stream.reset``, reason :func:`reset_reason`),
:class:`CursorAhead` (an ``invalid_request``), :class:`StreamLogUnavailable` (a retryable
``unavailable`` error).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import ClassVar

from tokenwire.errors import ErrorCode, InvalidRequest, NotFound, TokenwireError
from tokenwire.protocol.events import (
    Event,
    ReasoningDelta,
    ResetReason,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
)
from tokenwire.settings import Settings

MAX_SEQ = 2**53 - 1
"""The largest seq, and so the largest cursor, a stream can have: the largest integer that
JSON clients hold exactly (ECMA-262 ``Number.MAX_SAFE_INTEGER``), well inside a Redis stream
id's 64 bits. A cursor beyond it is an invalid request (:func:`check_cursor`)."""

EVENT_OVERHEAD = 64
"""Bytes counted per event on top of its text, for the ``max_bytes`` bound (an estimate of the
framing and JSON keys, so that the bound does not cost a serialization per event)."""


class UnknownStream(NotFound):
    """The log holds no stream with this id (never existed, or forgotten after its TTL)."""


class CursorExpired(TokenwireError):
    """The events right after the cursor were dropped from the log (its bounds)."""

    code = ErrorCode.INVALID_REQUEST


class StreamLost(CursorExpired):
    """The stream has no end in the log and the cursor is past the log's last event: the
    events after the last write were delivered by a process that died before writing them.
    Nothing can continue it (``stream.reset``, reason ``lost``); start a new stream."""


def reset_reason(exc: UnknownStream | CursorExpired) -> ResetReason:
    """The ``stream.reset`` reason that answers an unserveable cursor."""
    if isinstance(exc, StreamLost):
        return "lost"
    return "expired" if isinstance(exc, CursorExpired) else "unknown_stream"


class CursorAhead(InvalidRequest):
    """The cursor names a seq the stream has not reached: no client can have seen it."""


class StreamLogUnavailable(TokenwireError):
    """The log's storage cannot be reached (Redis down). Retryable."""

    code = ErrorCode.UNAVAILABLE
    retryable = True


def check_cursor(after_seq: int) -> None:
    """Raise :class:`InvalidRequest` unless ``0 <= after_seq <= MAX_SEQ``."""
    if not 0 <= after_seq <= MAX_SEQ:
        raise InvalidRequest(f"the cursor must be a seq in [0, {MAX_SEQ}], got {after_seq}")


Entry = Event | str | tuple[str] | tuple[int, str] | None
"""A slot of a :class:`StreamRecord`: a text delta's text, a reasoning delta's ``(text,)``, a
tool call's arguments delta's ``(index, text)``, any other event as it is, or a cleared slot."""


def kept_size(entry: Entry) -> int:
    """Bytes a kept event counts for in ``max_bytes``: a delta (text, reasoning, a tool
    call's arguments; kept as its text) counts its text's UTF-8 upper bound plus
    :data:`EVENT_OVERHEAD`; so does a ``tool_call.end`` (its ``arguments``); any other event,
    :data:`EVENT_OVERHEAD` (a cleared slot: nothing)."""
    if isinstance(entry, str):
        return len(entry) * 4 + EVENT_OVERHEAD
    if isinstance(entry, tuple):
        return len(entry[-1]) * 4 + EVENT_OVERHEAD
    if isinstance(entry, ToolCallEnd):
        return len(entry.arguments) * 4 + EVENT_OVERHEAD
    return 0 if entry is None else EVENT_OVERHEAD


class StreamRecord:
    """The kept events of one stream, oldest first, and their bounds' bookkeeping.

    Events come in with consecutive seqs (a generation numbers every event it logs), so the
    kept ones are the window ``[first_seq, last_seq]`` and a snapshot is a slice found by
    arithmetic. Dropping the oldest event clears its slot and moves the window's start; the
    list is compacted once the cleared slots outnumber the kept ones, so appending and
    dropping cost amortized O(1).

    A delta is kept as its text alone (a reasoning delta as ``(text,)``, a tool call's
    arguments as ``(index, text)``, see :data:`Entry`; a tuple of strings and ints leaves the
    garbage collector's view at its first collection): its stream id is the record's and its
    seq is its
    place in the window, so the event is rebuilt when it is read (a resume; rare) rather than
    kept alive for as long as the stream is. That matters beyond memory: a string is not
    tracked by Python's cyclic garbage collector, an event object is, and thousands of streams
    that each keep thousands of them would make every full collection walk them all (a pause
    of every stream of the process, tens of milliseconds per hundred thousand objects).
    """

    __slots__ = ("stream_id", "_entries", "_first", "size", "last_seq", "ended_at", "owner")

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        # [_first:] are kept (see Entry); before it, cleared slots
        self._entries: list[Entry] = []
        self._first = 0
        self.size = 0  # bytes, as counted by kept_size
        self.last_seq = 0  # the seq of the newest event ever appended
        self.ended_at: float | None = None  # time.monotonic() of stream.end
        self.owner: str | None = None  # the API key id that created the stream (None: anonymous)

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    @property
    def events(self) -> list[Event]:
        """The kept events, oldest first (a copy)."""
        return self._read(self._first)

    def __len__(self) -> int:
        return len(self._entries) - self._first

    def add(self, event: Event, max_events: int, max_bytes: int) -> None:
        """Keep ``event`` and drop the oldest events beyond the bounds.

        Raises ``ValueError`` if its seq does not follow the last one's, or if a text delta
        belongs to another stream."""
        seq = getattr(event, "seq", None)
        if seq != self.last_seq + 1:
            raise ValueError(f"seq {seq} does not follow {self.last_seq}")
        entries = self._entries
        if isinstance(event, TextDelta):  # the per-token path: kept_size of a str, inlined
            if event.stream_id != self.stream_id:
                raise ValueError(f"a delta of {event.stream_id} in {self.stream_id}'s log")
            text = event.delta
            entries.append(text)
            self.size = size = self.size + len(text) * 4 + EVENT_OVERHEAD
        elif isinstance(event, ToolCallDelta):  # per token too: the same, as a tuple
            if event.stream_id != self.stream_id:
                raise ValueError(f"a delta of {event.stream_id} in {self.stream_id}'s log")
            text = event.delta
            entries.append((event.index, text))
            self.size = size = self.size + len(text) * 4 + EVENT_OVERHEAD
        elif isinstance(event, ReasoningDelta):
            if event.stream_id != self.stream_id:
                raise ValueError(f"a delta of {event.stream_id} in {self.stream_id}'s log")
            text = event.delta
            entries.append((text,))
            self.size = size = self.size + len(text) * 4 + EVENT_OVERHEAD
        else:
            entries.append(event)
            self.size = size = self.size + kept_size(event)
            if isinstance(event, StreamEnd):
                self.ended_at = time.monotonic()
        self.last_seq = seq
        if size > max_bytes or len(entries) - self._first > max_events:
            self._drop_oldest(max_events, max_bytes)

    def _drop_oldest(self, max_events: int, max_bytes: int) -> None:
        """Drop the oldest events beyond the bounds (the newest one stays), and compact."""
        entries = self._entries
        while len(entries) - self._first > max_events or (
            self.size > max_bytes and len(entries) - self._first > 1
        ):
            self.size -= kept_size(entries[self._first])
            entries[self._first] = None
            self._first += 1
        if self._first > 32 and self._first * 2 > len(entries):
            del entries[: self._first]
            self._first = 0

    def after(self, stream_id: str, after_seq: int) -> list[Event]:
        """The kept events with seq > ``after_seq``.

        Raises:
            CursorAhead: ``after_seq`` is beyond the newest event.
            CursorExpired: events right after ``after_seq`` were dropped.
        """
        if after_seq > self.last_seq:
            raise CursorAhead(
                f"cursor {after_seq} is ahead of stream {stream_id} (last seq {self.last_seq})"
            )
        first_kept = self.last_seq - len(self) + 1
        if after_seq < first_kept - 1:
            raise CursorExpired(
                f"events after seq {after_seq} of stream {stream_id} are no longer kept"
            )
        return self._read(self._first + after_seq - first_kept + 1)

    def _read(self, start: int) -> list[Event]:
        """The events kept from slot ``start`` on, text deltas rebuilt."""
        entries = self._entries[start:]
        seq = self.last_seq - len(entries)
        events: list[Event] = []
        for entry in entries:
            seq += 1
            if isinstance(entry, str):
                events.append(TextDelta(self.stream_id, seq, entry))
            elif isinstance(entry, tuple):
                if len(entry) == 1:
                    events.append(ReasoningDelta(self.stream_id, seq, entry[0]))
                else:
                    events.append(ToolCallDelta(self.stream_id, seq, entry[0], entry[1]))
            elif entry is not None:  # never: slots from _first on are kept
                events.append(entry)
        return events


class LogReader(ABC):
    """One consumer's read of a stream that does not run in this process. Made by
    :meth:`StreamLog.open_reader`, which has checked the cursor and read the ``catch_up``: the
    kept events after the cursor. ``ended`` tells whether the stream's ``stream.end`` is among
    them or before them (nothing more will come); otherwise :meth:`live` yields the rest."""

    stream_id: str
    catch_up: list[Event]
    ended: bool

    @abstractmethod
    def live(self) -> AsyncIterator[list[Event]]:
        """The events after the catch-up, in seq order, in batches; ends after ``stream.end``.

        Raises :class:`StreamLogUnavailable` if the storage fails, or if the process that runs
        the stream is gone. Cancelling the iteration is safe."""

    async def aclose(self) -> None:  # noqa: B027  # optional hook
        """Release what the reader holds (tell the stream's owner that it has one reader less)."""


class StreamLog(ABC):
    """Where the events of every stream are kept for resume. One per server process.

    Args:
        max_events: events kept per stream (oldest dropped first).
        max_bytes: bytes kept per stream, counted by :func:`kept_size`.
        ttl: seconds an ended stream stays readable.
    """

    name: ClassVar[str]
    shared: ClassVar[bool] = False
    """Whether other processes can serve this log's streams (resume them elsewhere)."""

    def __init__(self, *, max_events: int, max_bytes: int, ttl: float) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._local: dict[str, StreamRecord] = {}  # streams that run in this process

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamLog:
        return cls(
            max_events=settings.stream_log_max_events,
            max_bytes=settings.stream_log_max_bytes,
            ttl=settings.stream_log_ttl,
        )

    async def start(self) -> None:  # noqa: B027  # optional hook
        """Connect to the storage. Raises :class:`StreamLogUnavailable` if it is unreachable."""

    async def aclose(self) -> None:  # noqa: B027  # optional hook
        """Write what is pending (bounded) and disconnect."""

    # -- this process's streams -------------------------------------------------------------

    def begin(self, stream_id: str) -> None:
        """Start keeping a new stream that runs in this process."""
        self._local[stream_id] = StreamRecord(stream_id)

    def claim(self, stream_id: str, owner: str | None) -> None:
        """Record the owner (an API key id; ``None``: anonymous) of a stream begun here, before
        its first event is appended; it is kept with the stream's events."""
        self._local[stream_id].owner = owner

    def append(self, stream_id: str, event: Event) -> None:
        """Keep ``event`` (numbered, in seq order) of a stream begun here. Never waits."""
        record = self._local[stream_id]
        record.add(event, self.max_events, self.max_bytes)
        if record.ended_at is not None:
            self._ended(stream_id, record)

    def snapshot(self, stream_id: str, after_seq: int) -> tuple[list[Event], bool] | None:
        """The kept events after ``after_seq`` of a stream that runs in this process, and
        whether it has ended; ``None`` if it is not held here.

        Raises :class:`CursorAhead`, :class:`CursorExpired`."""
        record = self._local.get(stream_id)
        if record is None:
            return None
        return record.after(stream_id, after_seq), record.ended

    @abstractmethod
    def _ended(self, stream_id: str, record: StreamRecord) -> None:
        """The local stream ``stream_id`` has just appended its ``stream.end``."""

    # -- any stream ---------------------------------------------------------------------------

    @abstractmethod
    async def open_reader(self, stream_id: str, after_seq: int) -> LogReader:
        """A reader of the events after ``after_seq`` of a stream that does not run here.

        Raises:
            UnknownStream: the log holds no such stream.
            CursorExpired: events right after the cursor are no longer kept.
            CursorAhead: the cursor is beyond the stream's newest event.
            StreamLogUnavailable: the storage cannot be reached.
        """

    @abstractmethod
    async def owner_of(self, stream_id: str) -> str | None:
        """The owner given to :meth:`claim` of any stream the log holds (live here, live
        elsewhere, or ended and kept).

        Raises:
            UnknownStream: the log holds no such stream.
            StreamLogUnavailable: the storage cannot be reached.
        """

    async def publish_cancel(self, stream_id: str) -> bool:
        """Ask the process that runs ``stream_id`` to cancel it. Returns whether the stream is
        known to run elsewhere (False in a single-process log)."""
        return False

    def on_control(self, handler: Callable[[str, str], None]) -> None:  # noqa: B027
        """Register ``handler(op, stream_id)`` for control messages from other processes
        (``cancel``, ``attach``, ``detach``). Single-process logs have none."""

    # -- documents ----------------------------------------------------------------------------
    # Small values that a protocol keeps beside its streams, shared as the log is (every
    # worker on one Redis sees the same), e.g. the OpenAI Responses API's response records.

    @abstractmethod
    async def put_document(self, key: str, value: str, *, ttl: float) -> None:
        """Keep ``value`` (text, a few KiB: it is not bounded by ``max_bytes``) under ``key``
        for ``ttl`` seconds, replacing any value kept there. Visible to every process that
        shares the log once this returns.

        Raises :class:`StreamLogUnavailable` if the storage cannot be reached."""

    @abstractmethod
    async def get_document(self, key: str) -> str | None:
        """The value kept under ``key``, or ``None`` (never put, or its ``ttl`` passed).

        Raises :class:`StreamLogUnavailable` if the storage cannot be reached."""


class _ReplayReader(LogReader):
    """A reader of an ended stream: everything is in the catch-up."""

    def __init__(self, stream_id: str, catch_up: list[Event]) -> None:
        self.stream_id = stream_id
        self.catch_up = catch_up
        self.ended = True

    async def live(self) -> AsyncIterator[list[Event]]:
        return
        yield


class MemoryStreamLog(StreamLog):
    """The log of a single-process server: live streams are in memory already; ended ones
    are kept for ``ttl`` seconds, at most ``max_streams`` of them (oldest forgotten first)."""

    name = "memory"

    def __init__(
        self, *, max_events: int, max_bytes: int, ttl: float, max_streams: int = 10_000
    ) -> None:
        super().__init__(max_events=max_events, max_bytes=max_bytes, ttl=ttl)
        self.max_streams = max_streams
        self._ended_streams: OrderedDict[str, StreamRecord] = OrderedDict()
        # key -> (time.monotonic() it expires at, value), oldest put first
        self._documents: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def _ended(self, stream_id: str, record: StreamRecord) -> None:
        del self._local[stream_id]
        self._ended_streams[stream_id] = record
        self._forget_expired()

    def _forget_expired(self) -> None:
        now = time.monotonic()
        while self._ended_streams:
            stream_id, record = next(iter(self._ended_streams.items()))
            expired = record.ended_at is not None and now - record.ended_at > self.ttl
            if not expired and len(self._ended_streams) <= self.max_streams:
                return
            del self._ended_streams[stream_id]

    async def owner_of(self, stream_id: str) -> str | None:
        self._forget_expired()
        record = self._local.get(stream_id) or self._ended_streams.get(stream_id)
        if record is None:
            raise UnknownStream(f"no stream {stream_id!r} (unknown, or forgotten after its TTL)")
        return record.owner

    async def open_reader(self, stream_id: str, after_seq: int) -> LogReader:
        self._forget_expired()
        record = self._ended_streams.get(stream_id)
        if record is None:
            raise UnknownStream(f"no stream {stream_id!r} (unknown, or forgotten after its TTL)")
        return _ReplayReader(stream_id, record.after(stream_id, after_seq))

    async def put_document(self, key: str, value: str, *, ttl: float) -> None:
        """See :meth:`StreamLog.put_document`; at most ``max_streams`` documents are kept
        (oldest put forgotten first)."""
        self._documents.pop(key, None)
        self._documents[key] = (time.monotonic() + ttl, value)
        while len(self._documents) > self.max_streams:
            self._documents.popitem(last=False)

    async def get_document(self, key: str) -> str | None:
        kept = self._documents.get(key)
        if kept is None:
            return None
        expires_at, value = kept
        if time.monotonic() > expires_at:
            del self._documents[key]
            return None
        return value


def create_stream_log(settings: Settings) -> StreamLog:
    """The backend that ``settings.stream_log`` names: ``memory`` or a ``redis://`` URL.

    Raises:
        ValueError: an unknown backend.
    """
    spec = settings.stream_log
    if spec == "memory":
        return MemoryStreamLog.from_settings(settings)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from tokenwire.streams.redis_log import RedisStreamLog

        return RedisStreamLog.from_settings(settings)
    raise ValueError(f"unknown stream log {spec!r}: use 'memory' or a redis:// URL")
