"""The request head, bounded before any route runs: its size and the time it takes to arrive.

uvicorn (0.55) has neither bound for httptools, its default parser: llhttp buffers a header of
any size (``h11_max_incomplete_event_size`` exists for h11 only) and nothing times out a head
that trickles in (``timeout_keep_alive`` runs only between requests, and the first byte of a
request stops it). :class:`HeadLimitedProtocol` is uvicorn's httptools protocol with both:

- ``http_max_header_size`` (bytes, request line and headers together): a head that grows past
  it is answered ``431 Request Header Fields Too Large`` (RFC 6585 section 5) with the JSON
  body of :mod:`tokenwire.edge.responses` (code ``payload_too_large``); the server then closes
  its side at once and discards what still arrives for up to :data:`LINGER` seconds before it
  closes the connection (a lingering close, so that the client reads the 431 rather than a
  connection reset);
- ``http_header_timeout`` (seconds): a connection whose head is not complete that long after
  the connection opened, or after its previous response ended, is closed without an answer
  (slowloris).

``tokenwire serve`` passes it to uvicorn as ``http="tokenwire.edge.http:HeadLimitedProtocol"``
(a string, so that every worker process imports it); each worker reads both bounds from its
``TOKENWIRE_*`` environment.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tokenwire.edge.responses import raw_http_error
from tokenwire.errors import HeadersTooLarge
from tokenwire.settings import Settings

LINGER = 2.0
"""Seconds a connection answered 431 is still read (and discarded) before it is closed."""


@functools.cache
def _bounds() -> tuple[int, float | None]:
    settings = Settings()
    return settings.http_max_header_size, settings.http_header_timeout


class HeadLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the request head's size and time bounded (see the
    module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head, self.head_timeout = _bounds()
        self._head_bytes: int | None = 0  # None: no head is being read (a request is running)
        self._head_timer: asyncio.TimerHandle | None = None
        self._discarding = False  # answered 431: what still arrives is dropped

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn's own signature
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._head_bytes is not None:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head:
                self._refuse_head()
                return
        super().data_received(data)

    def _refuse_head(self) -> None:
        """Answer 431, close our side, drop what still comes, close after :data:`LINGER`."""
        self._stop_head_timer()
        self._discarding = True
        error = HeadersTooLarge(f"request head over {self.max_head} bytes")
        self.transport.write(raw_http_error(error))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._stop_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_head()  # the next request's head, on a kept-alive connection

    def _await_head(self) -> None:
        self._head_bytes = 0
        self._stop_head_timer()
        if self.head_timeout is not None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_bytes is not None and not self.transport.is_closing():
            self.transport.close()
