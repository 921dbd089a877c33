"""The AI SDK's ``WebSocketChatTransport`` wire protocol (``ai`` 7.0.173,
``packages/ai/src/ui/websocket-chat-transport.ts``; the reference page
``docs/07-reference/02-ai-sdk-ui/51-websocket-chat-transport.mdx``). Pure: no I/O.

Every frame is one JSON text frame with a ``type`` and the ``requestId`` that the client made
for the request it belongs to; many requests share one socket.

Client -> server (:func:`decode_frame`; the checks of the SDK's own
``safeValidateWebSocketChatTransportRequest``, extra keys allowed as there):

================  ==========================================================================
``send``          ``requestId``, ``id`` (the chat), ``trigger`` (``submit-message`` or
                  ``regenerate-message``), ``messageId`` (string, or absent), ``messages``
                  (UIMessage[]), ``headers`` (string -> string), ``body`` (object),
                  ``metadata`` (anything)
``resume``        ``requestId``, ``id``, ``lastSequence`` (an integer >= 0, or absent: the
                  SDK always omits it and asks for the whole replay), ``headers``, ``body``,
                  ``metadata``
``abort``         ``requestId``
================  ==========================================================================

Server -> client (:func:`start_frame`, :func:`chunk_frame`, :func:`end_frame`,
:func:`error_frame`, :func:`no_active_frame`):

================  ==========================================================================
``start``         ``{type, requestId}``: a resume found an active stream (sent before its
                  replay)
``chunk``         ``{type, requestId, sequence, chunk}``: one UI message chunk; ``sequence``
                  is 0, 1, 2... within the request (the SDK errors the request on a gap and
                  ignores a number it has seen)
``end``           ``{type, requestId}``: the request's stream is complete
``error``         ``{type, requestId, errorText}``: the request failed (the SDK errors its
                  stream with ``errorText``)
``no-active``     ``{type, requestId}``: a resume found no active stream (the SDK resolves
                  ``reconnectToStream`` to ``null``)
================  ==========================================================================

The SDK drops frames of a ``requestId`` it does not know, and closes the connection on a frame
without a string ``requestId``: an error about a client frame that had none (not JSON, no
``requestId``) carries ``"requestId": ""``.

Numbering (:class:`ChunkNumbering`): the chunks of a stream are numbered in the order that
its log produces them, event by event, so that a number names the same point of the stream on
any worker and in any replay: ``lastSequence: N`` is "replay the stream from its start through
a fresh encoder, send what is numbered above N". The route's deliveries therefore ask the pump
not to merge deltas (:attr:`~tokenwire.transports.base.Transport.merges_deltas`). Where
deltas still arrive merged (``overflow=coalesce``: seqs ``p+1..s`` in one event of seq ``s``),
the merged text goes in its one delta chunk, followed by ``s - p - 1`` delta chunks with empty
text for the same part, so the numbers stay contiguous and the number of the last of them
names the same text as in the replay; a client that lost the connection in the middle of
such a run and resumes after a number inside it gets that run's text twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, TypeAdapter, ValidationError

from tokenwire.errors import InvalidRequest
from tokenwire.protocol.events import Event
from tokenwire.protocol.requests import describe_validation_error

MAX_REQUEST_ID_LENGTH = 256
DELTA_KEYS = {
    "text-delta": "delta",
    "reasoning-delta": "delta",
    "tool-input-delta": "inputTextDelta",
}
"""The UI message chunks that carry a piece of a part's text, and the key of that piece."""

RequestId = Annotated[StrictStr, Field(max_length=MAX_REQUEST_ID_LENGTH)]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class SendFrame(_Frame):
    """``send``: a new turn of chat ``id`` (see the module docstring)."""

    type: Literal["send"]
    requestId: RequestId  # noqa: N815 -- the SDK's key
    id: StrictStr
    trigger: Literal["submit-message", "regenerate-message"]
    messageId: StrictStr | None = None  # noqa: N815
    messages: list[Any]
    headers: dict[str, StrictStr]
    body: dict[str, Any]
    metadata: Any = None

    def chat_request(self) -> dict[str, Any]:
        """The body that ``DefaultChatTransport`` would POST for this turn: the ``body``
        fields, then ``id``, ``messages``, ``trigger`` and ``messageId`` (absent when unset),
        as ``http-chat-transport.ts`` builds it."""
        request: dict[str, Any] = {
            **self.body,
            "id": self.id,
            "messages": self.messages,
            "trigger": self.trigger,
        }
        if self.messageId is not None:
            request["messageId"] = self.messageId
        return request


class ResumeFrame(_Frame):
    """``resume``: the active stream of chat ``id``, after chunk ``lastSequence``."""

    type: Literal["resume"]
    requestId: RequestId  # noqa: N815
    id: StrictStr
    lastSequence: Annotated[int, Field(ge=0, strict=True)] | None = None  # noqa: N815
    headers: dict[str, StrictStr]
    body: dict[str, Any]
    metadata: Any = None


class AbortFrame(_Frame):
    """``abort``: stop request ``requestId`` (a send's generation is cancelled; a resume's
    replay ends, the generation runs on)."""

    type: Literal["abort"]
    requestId: RequestId  # noqa: N815


ClientFrame = Annotated[SendFrame | ResumeFrame | AbortFrame, Field(discriminator="type")]
_CLIENT_FRAME: TypeAdapter[SendFrame | ResumeFrame | AbortFrame] = TypeAdapter(ClientFrame)


class FrameError(InvalidRequest):
    """A client frame that is not one of the protocol's; ``request_id`` is the frame's own
    ``requestId`` when it had a string one, else ``""``."""

    def __init__(self, message: str, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


def decode_frame(data: str | bytes) -> SendFrame | ResumeFrame | AbortFrame:
    """Parse one client frame. Raises :class:`FrameError` naming the problem: not JSON (or
    nested deeper than about 1,000 levels), not an object, an unknown ``type``, a missing or
    invalid field (``requestId: Field required``...)."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FrameError(f"frame is not valid JSON: {exc}", "") from exc
    except RecursionError:
        raise FrameError("frame is nested too deeply", "") from None
    if not isinstance(value, dict):
        raise FrameError("a frame must be a JSON object with a 'type' and a 'requestId'", "")
    raw_id = value.get("requestId")
    request_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= MAX_REQUEST_ID_LENGTH else ""
    kind = value.get("type")
    if kind not in ("send", "resume", "abort"):
        raise FrameError(
            f"type: unknown frame type {str(kind)[:40]!r} (expected send, resume or abort)",
            request_id,
        )
    try:
        return _CLIENT_FRAME.validate_python(value)
    except ValidationError as exc:
        raise FrameError(f"{kind} frame: {describe_validation_error(exc)}", request_id) from exc


def request_id_of(data: str | bytes) -> str:
    """The ``requestId`` of a client frame that is not decoded (e.g. one dropped by a rate
    limit): the string one of a JSON object, else ``""``. Never raises."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ""
    raw = value.get("requestId") if isinstance(value, dict) else None
    return raw if isinstance(raw, str) and len(raw) <= MAX_REQUEST_ID_LENGTH else ""


def _dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def start_frame(request_id: str) -> str:
    return _dumps({"type": "start", "requestId": request_id})


def chunk_frame(request_id: str, sequence: int, chunk: dict[str, Any]) -> str:
    return _dumps({"type": "chunk", "requestId": request_id, "sequence": sequence, "chunk": chunk})


def end_frame(request_id: str) -> str:
    return _dumps({"type": "end", "requestId": request_id})


def error_frame(request_id: str, error_text: str) -> str:
    return _dumps({"type": "error", "requestId": request_id, "errorText": error_text})


def no_active_frame(request_id: str) -> str:
    return _dumps({"type": "no-active", "requestId": request_id})


Chunks = Callable[[Event], list[dict[str, Any]]]
"""A stream's UI message encoder: the chunks (dicts) that stand for one event."""


class ChunkNumbering:
    """Numbers one stream's UI message chunks for one request (see the module docstring):
    ``frames(event)`` encodes ``event`` with ``chunks`` (a fresh encoder per request, fed from
    the stream's start) and returns the ``chunk`` frames numbered above ``after`` (the
    resume's ``lastSequence``; -1: all)."""

    def __init__(self, request_id: str, chunks: Chunks, *, after: int = -1) -> None:
        self.request_id = request_id
        self.chunks = chunks
        self.after = after
        self.next_sequence = 0
        self.last_seq = 0  # the seq of the last numbered event

    def number(self, event: Event) -> list[tuple[int, dict[str, Any]]]:
        """The chunks of ``event`` with their numbers, those up to ``after`` included."""
        seq: int | None = getattr(event, "seq", None)
        span = 1
        if seq is not None:
            span = seq - self.last_seq if seq > self.last_seq else 1  # merged deltas: > 1
            self.last_seq = max(self.last_seq, seq)
        chunks = self.chunks(event)
        if span > 1:
            chunks = _padded(chunks, span - 1)
        numbered = []
        for chunk in chunks:
            numbered.append((self.next_sequence, chunk))
            self.next_sequence += 1
        return numbered

    def frames(self, event: Event) -> list[str]:
        return [
            chunk_frame(self.request_id, number, chunk)
            for number, chunk in self.number(event)
            if number > self.after
        ]


def _padded(chunks: list[dict[str, Any]], missing: int) -> list[dict[str, Any]]:
    """``chunks`` with ``missing`` empty copies of its last delta chunk right after it (the
    deltas that a merge folded into it; see the module docstring). Unchanged when it has none
    (nothing of the merged event was a delta)."""
    for index in range(len(chunks) - 1, -1, -1):
        key = DELTA_KEYS.get(str(chunks[index].get("type")))
        if key is not None:
            empty = {**chunks[index], key: ""}
            return chunks[: index + 1] + [empty] * missing + chunks[index + 1 :]
    return chunks
