"""Event models of wire protocol v1: the same events travel over SSE and WebSocket.

Every event of a stream except ``stream.resumed`` carries ``seq``, an integer that starts at 1
and only grows; values may skip (coalescing), so clients resume "after the last seq seen" and
never assume contiguity. A stream always ends with exactly one ``stream.end``; an ``error`` is
always followed by it.

``stream.queued`` (``position``) tells that the generation waits for the provider's capacity
(the local engine's slots are all busy): ``position`` >= 1 is its place in the queue (1 = next),
sent on joining and whenever it changes; ``position`` 0 says the wait is over and generation
begins. It carries ``seq`` like any stream event (it is logged and replayed on resume), comes
after ``stream.start`` and before the first ``text.delta``, and only from providers that queue.

An ``error`` that answers a bad WebSocket client message belongs to no stream: it has neither
``stream_id`` nor ``seq``, and those keys are left out of its JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_serializer
from pydantic.functional_serializers import SerializerFunctionWrapHandler
from pydantic_core import to_json

from tokenwire.errors import ErrorCode


class FinishReason(StrEnum):
    """Why a stream ended (``stream.end.finish_reason``)."""

    STOP = "stop"  # the model finished on its own or hit a stop sequence
    LENGTH = "length"  # max_tokens reached
    CANCELLED = "cancelled"  # explicit cancel, or a disconnect under the `cancel` policy
    ERROR = "error"  # preceded by an `error` event
    TIMEOUT = "timeout"  # a server-side deadline (stream duration) passed


class Usage(BaseModel):
    """Token counts of one generation (tokens, as counted by the provider's tokenizer)."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StreamStart(_Event):
    """First event of every stream. ``created`` is in unix seconds."""

    type: Literal["stream.start"] = "stream.start"
    stream_id: str
    seq: int
    model: str
    created: int
    request_id: str | None = None


class StreamQueued(_Event):
    """The stream waits for a free slot: ``position`` >= 1 is its place in the queue
    (1 = next), 0 means admitted (generation begins). See the module docstring."""

    type: Literal["stream.queued"] = "stream.queued"
    stream_id: str
    seq: int
    position: int = Field(ge=0)


TEXT_DELTA_JSON = b'{"type":"text.delta","stream_id":%b,"seq":%d,"delta":%b}'
"""The compact JSON of a text delta, as a ``%`` format of (stream_id JSON, seq, delta JSON):
the one event encoded per token, so encoded without a serializer."""


@dataclass(slots=True, kw_only=True)
class TextDelta:
    """A piece of generated text (one or more tokens; several when coalesced).

    The one event made per token, so not a pydantic model: building it costs an attribute
    store per field, not a validation (the server makes it from values it produced itself).
    Parsing one from JSON (:func:`parse_event`) still validates every field and refuses
    unknown ones. Treat it as immutable: the same object is shared by every consumer and
    the stream log.
    """

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    type: Literal["text.delta"] = "text.delta"
    stream_id: str
    seq: int
    delta: str

    def json_bytes(self) -> bytes:
        """Compact JSON (UTF-8), as :func:`event_json` gives it, without a serializer."""
        return TEXT_DELTA_JSON % (to_json(self.stream_id), self.seq, to_json(self.delta))


class ErrorEvent(_Event):
    """A failure. Inside a stream it is always followed by ``stream.end``."""

    type: Literal["error"] = "error"
    stream_id: str | None = None
    seq: int | None = None
    code: ErrorCode
    message: str
    retryable: bool = False

    @model_serializer(mode="wrap")
    def _omit_stream_keys_when_streamless(
        self, handler: SerializerFunctionWrapHandler
    ) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.stream_id is None:
            data.pop("stream_id", None)
        if self.seq is None:
            data.pop("seq", None)
        return data


class StreamEnd(_Event):
    """Last event of every stream; ``usage`` is null only when nothing could be counted."""

    type: Literal["stream.end"] = "stream.end"
    stream_id: str
    seq: int
    finish_reason: FinishReason
    usage: Usage | None


class StreamResumed(_Event):
    """Replay of the events after ``after_seq`` begins (no seq of its own)."""

    type: Literal["stream.resumed"] = "stream.resumed"
    stream_id: str
    after_seq: int


class StreamReset(_Event):
    """The cursor cannot be served (terminal): ``reason`` is unknown_stream or expired."""

    type: Literal["stream.reset"] = "stream.reset"
    stream_id: str
    reason: Literal["unknown_stream", "expired"]


Event = Annotated[
    StreamStart | StreamQueued | TextDelta | ErrorEvent | StreamEnd | StreamResumed | StreamReset,
    Field(discriminator="type"),
]
"""Any server -> client event of wire protocol v1."""

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: str | bytes) -> Event:
    """Parse one event from its JSON text. Raises ``pydantic.ValidationError`` if malformed."""
    return EVENT_ADAPTER.validate_json(data)


def event_json(event: Event) -> str:
    """Compact JSON of an event: keys in field order, no spaces, UTF-8 text unescaped."""
    if event.__class__ is TextDelta:
        return event.json_bytes().decode()  # type: ignore[union-attr]
    return event.model_dump_json()  # type: ignore[union-attr]


def event_json_bytes(event: Event) -> bytes:
    """:func:`event_json`, UTF-8 encoded."""
    if event.__class__ is TextDelta:
        return event.json_bytes()  # type: ignore[union-attr]
    return event.model_dump_json().encode()  # type: ignore[union-attr]
