"""The load generator's control plane: the few plain HTTP requests that steer a stream from
outside it, and the bookkeeping of streams that the cancel and resume phases follow.

- :func:`http_request`: one request on a connection of its own (``Connection: close``),
  parsed by httptools: ``GET /active``, tokenwire's ``POST /v1/streams/{id}/cancel``, a detached
  ``POST /v1/streams``. Rare next to the token traffic, so simplicity beats a connection pool.
- :class:`StopWatch`: when did the server stop the generator of a stream? It polls ``GET
  /active?since=...`` (see :mod:`transport.servers`) while someone waits, and resolves each
  waiter with the server's own ``time.monotonic()`` of the stop, so the poll period costs no
  precision.
- :class:`Follow`: one stream followed across its connections (tokenwire's resume): stream id,
  last seq, tokens and text received, duplicates, how it ended; futures to wait for a token
  count or the end.

Times are ``time.monotonic()`` seconds (one clock for every process on Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httptools

from transport.source import Schedule


class _Response:
    """httptools callbacks collecting one response."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


async def http_request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    within: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """``method path`` to 127.0.0.1:``port`` with ``body`` as JSON (if not None); returns
    (status, headers with lower-case names, body). Raises OSError, TimeoutError (after
    ``within`` seconds), or ValueError for a response that does not parse."""
    payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(head + payload)
            response = _Response()
            parser = httptools.HttpResponseParser(response)
            while not response.complete:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                parser.feed_data(chunk)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    if not response.complete:
        raise ValueError(f"{method} {path}: incomplete response")
    return parser.get_status_code(), response.headers, bytes(response.body)


class StopWatch:
    """Waits for the server to report a stream's generator stopped (``GET /active``).

    :meth:`stopped` returns the server's ``time.monotonic()`` of the stop of the stream named
    by its schedule's ``t0``, or None if it is not reported within ``within`` seconds. One
    poller task per watch, every ``period`` seconds, only while someone waits; :meth:`close`
    ends it."""

    def __init__(self, port: int, period: float = 0.005) -> None:
        self.port = port
        self.period = period
        self.waiting: dict[float, tuple[float, asyncio.Future[float]]] = {}
        self.wake = asyncio.Event()
        self.polls = 0
        self.task = asyncio.ensure_future(self._poll())

    async def stopped(self, t0: float, since: float, within: float = 5.0) -> float | None:
        """The stop time of the stream whose schedule began at ``t0``, looked for from
        ``since`` on (a time before the stop, e.g. the cancel)."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[t0] = (since, future)
        self.wake.set()
        try:
            async with asyncio.timeout(within):
                return await future
        except TimeoutError:
            return None
        finally:
            self.waiting.pop(t0, None)

    async def _poll(self) -> None:
        while True:
            if not self.waiting:
                self.wake.clear()
                await self.wake.wait()
            since = min(since for since, _ in self.waiting.values())
            try:
                status, _, body = await http_request(self.port, "GET", f"/active?since={since!r}")
            except (OSError, TimeoutError, ValueError):
                status, body = 0, b""
            self.polls += 1
            if status == 200:
                for t0, at in json.loads(body)["stopped"]:
                    entry = self.waiting.get(t0)
                    if entry is not None and not entry[1].done():
                        entry[1].set_result(at)
            await asyncio.sleep(self.period)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class Follow:
    """One stream followed across the connections that carry it, in order.

    The connection in charge reports every token it parses (:meth:`delivered`) and the end
    (:meth:`finished`); a tokenwire connection also its events' seq (:meth:`seen`), so that a
    replayed event the client had already seen counts as duplicated and is not delivered again.
    ``received`` and ``text`` carry over to the next connection."""

    def __init__(self, schedule: Schedule) -> None:
        loop = asyncio.get_running_loop()
        self.schedule = schedule
        self.stream_id: str | None = None
        self.last_seq = 0
        self.received = 0  # tokens, each counted once
        self.text: list[str] = []
        self.duplicated = 0  # tokens in events whose seq had been seen before
        self.finish_reason: str | None = None
        self.ended: asyncio.Future[float] = loop.create_future()  # time of the end
        self.started: asyncio.Future[str] = loop.create_future()  # the stream id
        self._want = 0
        self._reached: asyncio.Future[float] | None = None

    def seen(self, seq: int | None, tokens: int) -> bool:
        """Whether an event with ``seq`` (None: unnumbered) carrying ``tokens`` tokens is new;
        an old one is counted as duplicated."""
        if seq is None:
            return True
        if seq <= self.last_seq:
            self.duplicated += tokens
            return False
        self.last_seq = seq
        return True

    def start(self, stream_id: str) -> None:
        self.stream_id = stream_id
        if not self.started.done():
            self.started.set_result(stream_id)

    def delivered(self, received: int, now: float) -> None:
        self.received = received
        if self._reached is not None and received >= self._want and not self._reached.done():
            self._reached.set_result(now)

    def broke(self, reason: str) -> None:
        """The connection in charge failed: whoever waits gets RuntimeError(reason)."""
        for future in (self.ended, self.started, self._reached):
            if future is not None and not future.done():
                future.set_exception(RuntimeError(reason))
                future.exception()  # retrieved: nobody may be waiting for this one

    def finished(self, now: float, finish_reason: str | None = None) -> None:
        self.finish_reason = finish_reason
        if not self.ended.done():
            self.ended.set_result(now)

    async def tokens(self, count: int, within: float = 10.0) -> float:
        """Until ``count`` tokens have been received in all; returns the time of the chunk
        that brought the last of them (``time.monotonic()`` now if there already were that
        many). Raises TimeoutError after ``within`` seconds."""
        if self.received >= count:
            return time.monotonic()
        self._want = count
        self._reached = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(within):
            return await self._reached
