"""The Redis stream log: every worker and host of a deployment shares one Redis (Streams).

Layout (``{id}`` is the stream id)::

    tokenwire:{id}:events   a Redis Stream; each entry holds the events one flush wrote for the
                            stream (field ``e``: a JSON array), its entry id is
                            ``<seq of its last event>-0``, so that "the entries after a cursor"
                            is an XRANGE / XREAD after ``<cursor>-0``. Trimmed to about
                            ``max_events`` entries (MAXLEN ~); expires ``ttl`` seconds after the
                            stream's end. Field ``o`` of every entry: the stream's owner (an
                            API key id, empty when anonymous), so that it lives and expires
                            with the events whatever the trimming.
    tokenwire:{id}:owner    present while the process that runs the stream is alive (a lease,
                            renewed every ``lease / 3`` seconds, ``lease`` seconds long).
    tokenwire:doc:{key}     a document (:meth:`StreamLog.put_document`): a string with a TTL.
    tokenwire:control       pub/sub channel: ``cancel <id>``, ``attach <id>``, ``detach <id>``.

Writes never wait: :meth:`RedisStreamLog.append` keeps the event in memory (so that local
readers resume from memory) and wakes one writer task, which sends everything pending, for all
streams, in one pipeline: one XADD per stream per flush, so fewer than one command per event
under load. A stream's local copy is dropped once its ``stream.end`` is in Redis.

Connections: the writer (flushes, lease renewals, the control channel) has a client and a
connection pool of its own, which no reader can take; readers (catch-up reads, ``XREAD
BLOCK``, control messages) share a second pool of at most ``max_readers`` connections
(redis-py's ``BlockingConnectionPool``). A reader that finds that pool taken waits up to
:data:`READER_WAIT` seconds for a connection, then gets :class:`StreamLogUnavailable` (a 503
or a retryable ``error``): a burst of readers is refused, and never starves the writer.

Faults: redis-py retries each command with exponential backoff (``retries``); if a flush still
fails, every stream with pending events is failed (``error`` unavailable, retryable, then
``stream.end``), new streams are refused with 503 until a flush succeeds again, and the writer
keeps retrying (the library's backoff) so that the log is complete once Redis returns. A reader
of a stream that runs elsewhere gets :class:`StreamLogUnavailable` when Redis fails or when the
owner's lease lapses (the process died) before the stream's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis
from pydantic import TypeAdapter
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from tokenwire.protocol.events import Event, StreamEnd, event_json, seq_of
from tokenwire.settings import Settings
from tokenwire.streams.log import (
    CursorAhead,
    CursorExpired,
    LogReader,
    StreamLog,
    StreamLogUnavailable,
    StreamLost,
    StreamRecord,
    UnknownStream,
)

log = logging.getLogger("tokenwire.streams.redis")

CONTROL_CHANNEL = "tokenwire:control"
READER_WAIT = 1.0
"""Seconds a reader waits for one of the ``max_readers`` connections before it is refused."""
WRITER_CONNECTIONS = 4
"""The writer's own pool: the flush, the lease renewal and the control channel (one each)."""
_EVENTS = TypeAdapter(list[Event])


def _events_key(stream_id: str) -> str:
    return f"tokenwire:{stream_id}:events"


def _owner_key(stream_id: str) -> str:
    return f"tokenwire:{stream_id}:owner"


def _document_key(key: str) -> str:
    return f"tokenwire:doc:{key}"


_XReadReply = list[tuple[Any, list[tuple[Any, dict[Any, Any]]]]]
"""XREAD's reply in RESP2: [(key, [(entry id, fields), ...]), ...]."""


def _entry_events(fields: dict[Any, Any]) -> list[Event]:
    """The events of one log entry (a Redis stream entry's ``e`` field, a JSON array)."""
    raw = fields.get(b"e") or fields.get("e") or b"[]"
    return _EVENTS.validate_json(raw)


def _entry_owner(fields: dict[Any, Any]) -> str | None:
    """The owner recorded in a log entry (field ``o``; empty or absent: anonymous)."""
    raw = fields.get(b"o") or fields.get("o") or b""
    owner = raw.decode() if isinstance(raw, bytes) else str(raw)
    return owner or None


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _reraise_cancellation(exc: BaseException) -> None:
    """redis-py may turn the cancellation of a command into a ConnectionError: a task that is
    being cancelled must not take that for a Redis fault and carry on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


class RedisStreamLog(StreamLog):
    """A :class:`StreamLog` on Redis Streams, shared by processes and hosts.

    Args:
        url: a ``redis://``, ``rediss://`` or ``unix://`` URL.
        lease: seconds after which a stream whose process went silent counts as lost.
        retries: redis-py retries per command (exponential backoff, capped at 1 s).
        catch_up_wait: seconds a reader waits for Redis to reach its cursor (see
            :meth:`open_reader`).
        max_readers: connections that readers may hold at once (each remote reader holds
            one while it waits for events); more readers wait up to :data:`READER_WAIT`
            seconds, then get :class:`StreamLogUnavailable`.
    """

    name = "redis"
    shared = True

    def __init__(
        self,
        url: str,
        *,
        max_events: int,
        max_bytes: int,
        ttl: float,
        lease: float = 10.0,
        retries: int = 3,
        catch_up_wait: float = 2.0,
        max_readers: int = 64,
    ) -> None:
        super().__init__(max_events=max_events, max_bytes=max_bytes, ttl=ttl)
        self.url = url
        self.lease = lease
        self.catch_up_wait = catch_up_wait
        self.backoff = ExponentialBackoff(cap=1.0, base=0.05)
        options: dict[str, Any] = {
            "retry": Retry(self.backoff, retries),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            "socket_connect_timeout": 5,
            "socket_timeout": lease + 5,  # above the longest XREAD BLOCK (lease / 2)
        }
        # the writer's own client: readers can never take its connections
        self.writer = redis.from_url(url, max_connections=WRITER_CONNECTIONS, **options)
        readers = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_readers, timeout=READER_WAIT, **options
        )
        self.redis = redis.Redis.from_pool(readers)  # readers and control messages
        self.healthy = True
        self.commands = 0  # Redis commands sent by the writer and the readers (for benchmarks)
        self._pending: dict[str, list[Event]] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._control: list[Callable[[str, str], None]] = []
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisStreamLog:
        return cls(
            settings.stream_log,
            max_events=settings.stream_log_max_events,
            max_bytes=settings.stream_log_max_bytes,
            ttl=settings.stream_log_ttl,
            lease=settings.stream_log_lease,
            max_readers=settings.stream_log_max_readers,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.writer.ping()
        except RedisError as exc:
            await self.writer.aclose()
            await self.redis.aclose()
            raise StreamLogUnavailable(
                f"cannot reach the stream log at {redacted(self.url)}: {exc}"
            ) from exc
        self._wake = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._write_forever(), name="stream-log-writer"),
            asyncio.create_task(self._renew_leases_forever(), name="stream-log-leases"),
            asyncio.create_task(self._listen_forever(), name="stream-log-control"),
        ]

    async def aclose(self) -> None:
        """Let the writer write what is pending (for up to 5 s), stop the background tasks,
        disconnect. Never hangs: redis-py can swallow the cancellation of a command, so every
        wait here is bounded."""
        self._closing = True
        self._wake.set()
        for task in self._tasks[1:]:  # all but the writer
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1)
        self._tasks = []
        await self.writer.aclose()
        await self.redis.aclose()

    # -- writing ------------------------------------------------------------------------------

    def begin(self, stream_id: str) -> None:
        if not self.healthy:
            raise StreamLogUnavailable("the stream log (Redis) is unavailable; retry later")
        super().begin(stream_id)

    def append(self, stream_id: str, event: Event) -> None:
        self._local[stream_id].add(event, self.max_events, self.max_bytes)
        self._pending.setdefault(stream_id, []).append(event)
        self._wake.set()

    def _ended(self, stream_id: str, record: StreamRecord) -> None:
        pass  # the writer drops the local copy once the end is in Redis

    async def _write_forever(self) -> None:
        failures = 0
        while not (self._closing and not self._pending):
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except RedisError as exc:
                _reraise_cancellation(exc)
                if self._closing:
                    log.error(
                        "stream log: %d streams not written at shutdown: %s",
                        len(self._pending),
                        exc,
                    )
                    return
                failures += 1
                if self.healthy:
                    self.healthy = False
                    log.error("stream log write failed, streams affected: %s", exc)
                    self._fail_pending()
                self._wake.set()
                await asyncio.sleep(self.backoff.compute(failures))
                continue
            if not self.healthy:
                log.warning("stream log writes recovered")
            self.healthy = True
            failures = 0

    async def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            async with self.writer.pipeline(transaction=False) as pipe:
                ended: list[str] = []
                for stream_id, events in pending.items():
                    key = _events_key(stream_id)
                    body = "[" + ",".join(event_json(event) for event in events) + "]"
                    entry_id = f"{seq_of(events[-1])}-0"
                    record = self._local.get(stream_id)
                    owner = (record.owner if record is not None else None) or ""
                    fields: dict[FieldT, EncodableT] = {"e": body, "o": owner}
                    pipe.xadd(key, fields, id=entry_id, maxlen=self.max_events)
                    if isinstance(events[-1], StreamEnd):
                        pipe.expire(key, int(self.ttl) + 1)
                        pipe.delete(_owner_key(stream_id))
                        ended.append(stream_id)
                    elif seq_of(events[0]) == 1:  # a new stream
                        pipe.set(_owner_key(stream_id), b"1", ex=self._lease_seconds())
                self.commands += len(pipe)
                results = await pipe.execute(raise_on_error=False)
            for result in results:
                # an entry written before a retry of the pipeline is not an error
                if isinstance(result, Exception) and "equal or smaller" not in str(result):
                    raise result
        except BaseException:
            for stream_id, events in pending.items():  # put back, before anything newer
                self._pending[stream_id] = events + self._pending.get(stream_id, [])
            raise
        for stream_id in ended:
            self._local.pop(stream_id, None)

    def _fail_pending(self) -> None:
        for stream_id in list(self._pending):
            record = self._local.get(stream_id)
            if record is not None and not record.ended:
                for handler in self._control:
                    handler("lost", stream_id)

    def _lease_seconds(self) -> int:
        return max(1, round(self.lease))

    async def _renew_leases_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            live = [stream_id for stream_id, record in self._local.items() if not record.ended]
            if not live:
                continue
            try:
                async with self.writer.pipeline(transaction=False) as pipe:
                    for stream_id in live:
                        pipe.set(_owner_key(stream_id), b"1", ex=self._lease_seconds())
                    self.commands += len(pipe)
                    await pipe.execute()
            except RedisError as exc:
                _reraise_cancellation(exc)

    # -- control ------------------------------------------------------------------------------

    def on_control(self, handler: Callable[[str, str], None]) -> None:
        self._control.append(handler)

    async def publish_cancel(self, stream_id: str) -> bool:
        try:
            self.commands += 1
            if not await self.redis.exists(_owner_key(stream_id)):
                return False
            await self.redis.publish(CONTROL_CHANNEL, f"cancel {stream_id}")
        except RedisError as exc:
            raise StreamLogUnavailable(f"the stream log (Redis) is unavailable: {exc}") from exc
        return True

    async def _publish(self, op: str, stream_id: str) -> None:
        with contextlib.suppress(RedisError):
            self.commands += 1
            await self.redis.publish(CONTROL_CHANNEL, f"{op} {stream_id}")

    async def _listen_forever(self) -> None:
        failures = 0
        while True:
            try:
                async with self.writer.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CONTROL_CHANNEL)
                    failures = 0
                    async for message in pubsub.listen():
                        self._dispatch(message.get("data"))
            except RedisError as exc:
                _reraise_cancellation(exc)
                failures += 1
                log.debug("stream log control channel lost: %s", exc)
                await asyncio.sleep(self.backoff.compute(failures))

    def _dispatch(self, data: Any) -> None:
        if isinstance(data, bytes):
            data = data.decode(errors="replace")
        if not isinstance(data, str):
            return
        op, _, stream_id = data.partition(" ")
        if op in ("cancel", "attach", "detach") and stream_id in self._local:
            for handler in self._control:
                handler(op, stream_id)

    # -- documents ----------------------------------------------------------------------------

    async def put_document(self, key: str, value: str, *, ttl: float) -> None:
        try:
            self.commands += 1
            await self.redis.set(_document_key(key), value.encode(), ex=max(1, round(ttl)))
        except RedisError as exc:
            raise StreamLogUnavailable(f"the stream log (Redis) is unavailable: {exc}") from exc

    async def get_document(self, key: str) -> str | None:
        try:
            self.commands += 1
            value = await self.redis.get(_document_key(key))
        except RedisError as exc:
            raise StreamLogUnavailable(f"the stream log (Redis) is unavailable: {exc}") from exc
        if isinstance(value, bytes):
            return value.decode()
        return None if value is None else str(value)

    # -- reading ------------------------------------------------------------------------------

    async def owner_of(self, stream_id: str) -> str | None:
        """See :meth:`StreamLog.owner_of`. A stream that Redis does not know yet is waited for,
        up to ``catch_up_wait`` seconds (its process may not have flushed its first event)."""
        record = self._local.get(stream_id)
        if record is not None:
            return record.owner
        key = _events_key(stream_id)
        deadline = time.monotonic() + self.catch_up_wait
        try:
            while True:
                self.commands += 1
                last = await self.redis.xrevrange(key, count=1)
                if last:
                    return _entry_owner(last[0][1] or {})
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise UnknownStream(
                        f"no stream {stream_id!r} (unknown, or forgotten after its TTL)"
                    )
                self.commands += 1
                await self.redis.xread({key: "0-0"}, block=max(1, round(remaining * 1000)))
        except RedisError as exc:
            raise StreamLogUnavailable(f"the stream log (Redis) is unavailable: {exc}") from exc

    async def open_reader(self, stream_id: str, after_seq: int) -> LogReader:
        """See :meth:`StreamLog.open_reader`. The process that runs a stream delivers to its own
        readers before its writer has flushed, so a stream or cursor that Redis does not know
        yet is waited for, up to ``catch_up_wait`` seconds, before it counts as unknown or
        ahead; a cursor still ahead of a stream with no end is :class:`StreamLost` (its
        process died after delivering events it had not written)."""
        key = _events_key(stream_id)
        deadline = time.monotonic() + self.catch_up_wait
        try:
            while True:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.xrange(key, count=1)
                    pipe.xrevrange(key, count=1)
                    pipe.xrange(key, min=f"({after_seq}-0")
                    self.commands += 3
                    first, last, entries = await pipe.execute()
                if last and seq_of(_entry_events(last[0][1])[-1]) >= after_seq:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.commands += 1
                newest = last[0][0] if last else "0-0"
                await self.redis.xread({key: newest}, block=max(1, round(remaining * 1000)))
        except RedisError as exc:
            raise StreamLogUnavailable(f"the stream log (Redis) is unavailable: {exc}") from exc
        if not last:
            raise UnknownStream(f"no stream {stream_id!r} (unknown, or forgotten after its TTL)")
        first_kept = seq_of(_entry_events(first[0][1])[0])
        last_events = _entry_events(last[0][1])
        last_seq = seq_of(last_events[-1])
        ended = isinstance(last_events[-1], StreamEnd)
        if after_seq > last_seq and not ended:  # a live owner would have written it by now
            raise StreamLost(
                f"stream {stream_id} was lost after seq {last_seq}: its worker stopped before "
                "writing the events after it; start a new stream"
            )
        if after_seq > last_seq:
            raise CursorAhead(
                f"cursor {after_seq} is ahead of stream {stream_id} (last seq {last_seq})"
            )
        if after_seq < first_kept - 1:
            raise CursorExpired(
                f"events after seq {after_seq} of stream {stream_id} are no longer kept"
            )
        catch_up: list[Event] = []
        seen = after_seq
        for _, fields in entries:
            for event in _entry_events(fields):
                if seq_of(event) > seen:  # skips re-written entries
                    catch_up.append(event)
                    seen = seq_of(event)
        reader = _RedisReader(self, stream_id, catch_up, ended, last_seq)
        if not ended:
            await self._publish("attach", stream_id)
        return reader


class _RedisReader(LogReader):
    def __init__(
        self, log: RedisStreamLog, stream_id: str, catch_up: list[Event], ended: bool, seq: int
    ) -> None:
        self.stream_id = stream_id
        self.catch_up = catch_up
        self.ended = ended
        self._log = log
        self._last_id = f"{seq}-0"
        self._seq = seq  # the last seq handed out
        self._attached = not ended

    async def live(self) -> AsyncIterator[list[Event]]:
        key = _events_key(self.stream_id)
        redis_client = self._log.redis
        block_ms = max(1, round(self._log.lease * 500))
        silent_since = time.monotonic()
        while True:
            try:
                self._log.commands += 1
                reply = await redis_client.xread({key: self._last_id}, block=block_ms)
                if not reply:
                    if time.monotonic() - silent_since < self._log.lease / 2:
                        continue
                    self._log.commands += 2
                    if not await redis_client.exists(_owner_key(self.stream_id)):
                        # the end may have landed just before the owner key went away
                        reply = await redis_client.xread({key: self._last_id})
                        if not reply:
                            raise StreamLogUnavailable(
                                f"the worker running stream {self.stream_id} stopped before "
                                "its end; start a new stream"
                            )
            except RedisError as exc:
                _reraise_cancellation(exc)
                raise StreamLogUnavailable(f"the stream log (Redis) is unavailable: {exc}") from exc
            if not reply:
                continue
            silent_since = time.monotonic()
            for _, entries in cast(_XReadReply, reply):
                for entry_id, fields in entries:
                    self._last_id = entry_id
                    events = [e for e in _entry_events(fields) if seq_of(e) > self._seq]
                    if not events:
                        continue  # written again by a retried flush
                    self._seq = seq_of(events[-1])
                    yield events
                    if isinstance(events[-1], StreamEnd):
                        return

    async def aclose(self) -> None:
        if self._attached:
            self._attached = False
            await self._log._publish("detach", self.stream_id)
