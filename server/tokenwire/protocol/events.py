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

Between ``stream.start`` and ``stream.end`` a stream carries what the model sends, in the
model's order: ``text.delta`` (the answer), ``reasoning.delta`` (its reasoning), and tool
calls as ``tool_call.start`` (index, call_id, name) -> ``tool_call.delta`` (pieces of the
arguments' JSON text) -> ``tool_call.end`` (the whole arguments string). A stream whose model
called tools ends with finish_reason ``tool_calls``. Coalescing merges only adjacent deltas of
the same kind (and, for tool calls, the same index), so nothing reorders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    model_serializer,
)
from pydantic_core import to_json

from tokenwire.errors import ErrorCode


class FinishReason(StrEnum):
    """Why a stream ended (``stream.end.finish_reason``)."""

    STOP = "stop"  # the model finished on its own or hit a stop sequence
    LENGTH = "length"  # max_tokens reached
    CANCELLED = "cancelled"  # explicit cancel, or a disconnect under the `cancel` policy
    ERROR = "error"  # preceded by an `error` event
    TIMEOUT = "timeout"  # a server-side deadline (stream duration) passed
    TOOL_CALLS = "tool_calls"  # the model called tools (tool_call.* events) and waits for results
    CONTENT_FILTER = "content_filter"  # the upstream withheld content (its own filter)


class Usage(BaseModel):
    """Token counts of one generation (tokens, as counted by the provider's tokenizer).
    ``reasoning_tokens`` (part of ``completion_tokens``) only when the upstream reports them;
    the key is left out of the JSON otherwise."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int | None = Field(default=None, exclude_if=lambda value: value is None)

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


ResetReason = Literal["unknown_stream", "expired", "lost"]
"""Why a cursor cannot be served (``stream.reset.reason``); ``lost``: the stream's worker died
before the events after the cursor reached the log."""


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


@dataclass(slots=True)
class TextDelta:
    """A piece of generated text (one or more tokens; several when coalesced).

    The one event made per token, so not a pydantic model: building it costs an attribute
    store per field, not a validation (the server makes it from values it produced itself).
    Parsing one from JSON (:func:`parse_event`) still validates every field and refuses
    unknown ones. Treat it as immutable: the same object is shared by every consumer and
    the stream log.

    The per-token path builds it positionally, ``TextDelta(stream_id, seq, delta)``: keyword
    arguments cost CPython more than twice as much (~0.2 µs per token), so ``type`` (fixed)
    comes last. The same holds for the other deltas.
    """

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    stream_id: str
    seq: int
    delta: str
    type: Literal["text.delta"] = "text.delta"

    def json_bytes(self) -> bytes:
        """Compact JSON (UTF-8), as :func:`event_json` gives it, without a serializer."""
        return TEXT_DELTA_JSON % (to_json(self.stream_id), self.seq, to_json(self.delta))


REASONING_DELTA_JSON = b'{"type":"reasoning.delta","stream_id":%b,"seq":%d,"delta":%b}'
"""The compact JSON of a reasoning delta (see :data:`TEXT_DELTA_JSON`)."""


@dataclass(slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning ("thinking"), kept apart from the answer's text.
    Made per token, like :class:`TextDelta` and for the same reasons a plain dataclass."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    stream_id: str
    seq: int
    delta: str
    type: Literal["reasoning.delta"] = "reasoning.delta"

    def json_bytes(self) -> bytes:
        return REASONING_DELTA_JSON % (to_json(self.stream_id), self.seq, to_json(self.delta))


class ToolCallStart(_Event):
    """The model begins a call of tool ``name``. ``index`` is the call's place among this
    turn's calls (0, 1, ... for parallel calls); ``call_id`` is the upstream's id of the call
    (``tool_calls[].id``), which the tool's result must name."""

    type: Literal["tool_call.start"] = "tool_call.start"
    stream_id: str
    seq: int
    index: int
    call_id: str
    name: str


TOOL_CALL_DELTA_JSON = b'{"type":"tool_call.delta","stream_id":%b,"seq":%d,"index":%d,"delta":%b}'
"""The compact JSON of a tool call's arguments delta (stream_id JSON, seq, index, delta
JSON; see :data:`TEXT_DELTA_JSON`)."""


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of the arguments (JSON text, as the model writes it) of the call at ``index``.
    Made per token: a plain dataclass like :class:`TextDelta`."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    stream_id: str
    seq: int
    index: int
    delta: str
    type: Literal["tool_call.delta"] = "tool_call.delta"

    def json_bytes(self) -> bytes:
        return TOOL_CALL_DELTA_JSON % (
            to_json(self.stream_id),
            self.seq,
            self.index,
            to_json(self.delta),
        )


class ToolCallEnd(_Event):
    """The call at ``index`` is complete: ``arguments`` is the whole arguments string (the
    deltas joined), so a client that only wants whole calls can ignore the deltas."""

    type: Literal["tool_call.end"] = "tool_call.end"
    stream_id: str
    seq: int
    index: int
    call_id: str
    name: str
    arguments: str


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
    reason: ResetReason


Event = Annotated[
    StreamStart
    | StreamQueued
    | TextDelta
    | ReasoningDelta
    | ToolCallStart
    | ToolCallDelta
    | ToolCallEnd
    | ErrorEvent
    | StreamEnd
    | StreamResumed
    | StreamReset,
    Field(discriminator="type"),
]
"""Any server -> client event of wire protocol v1."""

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

AnyDelta = TextDelta | ReasoningDelta | ToolCallDelta
"""The per-token events: the ones that coalescing and write merging join."""

DELTA_TYPES = (TextDelta, ReasoningDelta, ToolCallDelta)


def same_run(first: AnyDelta, then: AnyDelta) -> bool:
    """Whether ``then`` may join ``first``'s run of deltas: the same kind and, for tool-call
    arguments, the same call (``index``). Joining only such runs reorders nothing."""
    if type(first) is not type(then):
        return False
    if isinstance(first, ToolCallDelta) and isinstance(then, ToolCallDelta):
        return first.index == then.index
    return True


def join_run(run: Sequence[AnyDelta]) -> AnyDelta:
    """One delta standing for a run of :func:`same_run` deltas: the texts joined, the last
    one's seq (seqs may skip, wire protocol v1). A run of one is returned as it is."""
    last = run[-1]
    if len(run) == 1:
        return last
    text = "".join([event.delta for event in run])
    if isinstance(last, ToolCallDelta):  # built directly: dataclasses.replace costs ~20x more
        return ToolCallDelta(last.stream_id, last.seq, last.index, text)
    if isinstance(last, ReasoningDelta):
        return ReasoningDelta(last.stream_id, last.seq, text)
    return TextDelta(last.stream_id, last.seq, text)


def seq_of(event: Event) -> int:
    """The seq of a numbered event (every event a stream log keeps is one). Raises
    ``ValueError`` for ``stream.resumed``, ``stream.reset`` and an error of no stream."""
    seq: int | None = getattr(event, "seq", None)
    if seq is None:
        raise ValueError(f"a {event.type} event has no seq")
    return seq


def parse_event(data: str | bytes) -> Event:
    """Parse one event from its JSON text. Raises ``pydantic.ValidationError`` if malformed."""
    return EVENT_ADAPTER.validate_json(data)


def event_json(event: Event) -> str:
    """Compact JSON of an event: keys in field order, no spaces, UTF-8 text unescaped."""
    if isinstance(event, TextDelta | ReasoningDelta | ToolCallDelta):
        return event.json_bytes().decode()
    return event.model_dump_json()


def event_json_bytes(event: Event) -> bytes:
    """:func:`event_json`, UTF-8 encoded."""
    if isinstance(event, TextDelta | ReasoningDelta | ToolCallDelta):
        return event.json_bytes()
    return event.model_dump_json().encode()
