"""The client's exceptions. One root; what to do about each is in its docstring.

Hierarchy::

    ClientError                  root of everything the client raises on purpose
    ├── ServerError              the server refused: an HTTP error answer, or a stream-less
    │                            ``error`` frame over WebSocket (``code``, ``status``,
    │                            ``retryable``)
    ├── StreamFailed             the stream ended with an ``error`` event (raised by ``text()``;
    │                            a stream you iterate yields the event instead)
    ├── ProtocolError            the server sent something that is not wire protocol v1
    └── ConnectionLost           the connection dropped and could not be resumed
        └── StreamReset          the server cannot serve the cursor any more
                                 (``stream.reset``: ``unknown_stream`` or ``expired``)

Transport-level exceptions (``httpx.HTTPError``, ``httpx_ws`` ones) never escape: the client
translates them where they enter with ``raise ... from exc``, so ``__cause__`` keeps the detail.
"""

from __future__ import annotations


class ClientError(Exception):
    """Root of the client's exceptions."""


class ServerError(ClientError):
    """The server refused the request.

    Attributes:
        code: the protocol error code (``invalid_request``, ``not_found``, ...), or
            ``http_error`` when the answer had no JSON error body.
        status: the HTTP status, ``0`` over WebSocket.
        retryable: the server's hint that the same request may succeed later.
    """

    def __init__(self, message: str, *, code: str, status: int = 0, retryable: bool = False):
        super().__init__(f"{code}: {message}" + (f" (HTTP {status})" if status else ""))
        self.message = message
        self.code = code
        self.status = status
        self.retryable = retryable


class StreamFailed(ClientError):
    """A stream ended with an ``error`` event (finish_reason ``error``): the model or the
    server failed mid-way. Raised by ``text()``, which has no stream to inspect afterwards;
    iterating a stream yields the ``error`` event instead.

    Attributes:
        code: the protocol error code (``provider_error``, ``provider_timeout``, ...).
        message: the server's message.
        retryable: the server's hint that the same request may succeed later.
        stream_id: the stream's id.
        text: the text received before the failure.
    """

    def __init__(
        self, message: str, *, code: str, retryable: bool, stream_id: str | None, text: str
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.message = message
        self.code = code
        self.retryable = retryable
        self.stream_id = stream_id
        self.text = text


class ProtocolError(ClientError):
    """The server sent something that is not wire protocol v1 (not retried)."""


class ConnectionLost(ClientError):
    """The connection dropped and the stream could not be resumed: reconnection is disabled, or
    every attempt failed (``attempts`` of them), or the server refused the resume.

    Attributes:
        stream_id: the stream's id when the server had told it, else ``None``.
        last_seq: the seq of the last event received (``0``: none); a later
            ``GET /v1/streams/{stream_id}/events`` with this cursor may still pick it up.
        attempts: reconnection attempts made before giving up.
    """

    def __init__(
        self, message: str, *, stream_id: str | None = None, last_seq: int = 0, attempts: int = 0
    ) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.last_seq = last_seq
        self.attempts = attempts


class StreamReset(ConnectionLost):
    """The server answered a resume with ``stream.reset``: it no longer has the stream
    (``reason`` ``unknown_stream``, e.g. after a restart with an in-memory log) or the cursor is
    older than what it kept (``expired``). Terminal: the text so far is all there will be."""

    def __init__(self, message: str, *, reason: str, stream_id: str | None, last_seq: int) -> None:
        super().__init__(message, stream_id=stream_id, last_seq=last_seq)
        self.reason = reason
