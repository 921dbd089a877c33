"""Request models: what a client may ask for, over HTTP and WebSocket alike.

Validation errors name the offending field (``messages.0.role: ...``) through
:func:`describe_validation_error`, which both transports use for their ``invalid_request`` answers.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

MAX_ID_LENGTH = 128


class TextPart(BaseModel):
    """One part of an OpenAI-style multi-part message content; only text is understood."""

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One conversation turn. OpenAI's list-of-parts content is joined into plain text."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def _join_text_parts(cls, value: object) -> object:
        if isinstance(value, list):
            parts = [TextPart.model_validate(part) for part in value]
            return "".join(part.text for part in parts)
        return value


class GenerateParams(BaseModel):
    """What to generate: the fields shared by ``POST /v1/streams`` and WebSocket ``generate``.

    ``max_tokens`` is in tokens; ``temperature`` in [0, 2]; ``top_p`` in (0, 1].
    ``model`` defaults to the provider's default model. ``on_disconnect`` chooses what happens
    to the generation if the client goes away: ``cancel`` stops it, ``detach`` lets it run on
    for the server's grace period.
    """

    model_config = ConfigDict(extra="forbid")

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    model: str | None = None
    max_tokens: Annotated[int | None, Field(ge=1, strict=True)] = None  # "5", true: refused
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    top_p: Annotated[float | None, Field(gt=0, le=1)] = None
    stop: str | list[str] | None = None
    seed: int | None = None
    on_disconnect: Literal["cancel", "detach"] | None = None  # default: the server's setting

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class GenerateMessage(GenerateParams):
    """WebSocket client message: start a stream. ``request_id`` is echoed in ``stream.start``."""

    type: Literal["generate"]
    request_id: Annotated[str | None, Field(max_length=MAX_ID_LENGTH)] = None


class CancelMessage(BaseModel):
    """WebSocket client message: stop a stream (``stream.end`` with finish_reason cancelled)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["cancel"]
    stream_id: Annotated[str, Field(max_length=MAX_ID_LENGTH)]


class ResumeMessage(BaseModel):
    """WebSocket client message: replay a stream's events after ``after_seq``, then go live."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["resume"]
    stream_id: Annotated[str, Field(max_length=MAX_ID_LENGTH)]
    after_seq: Annotated[int, Field(ge=0)] = 0


class PingMessage(BaseModel):
    """WebSocket client message: an application-level ping, answered by a ``pong`` with its id."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["ping"]
    id: Annotated[str, Field(max_length=MAX_ID_LENGTH)] | int | None = None


ClientMessage = Annotated[
    GenerateMessage | CancelMessage | ResumeMessage | PingMessage,
    Field(discriminator="type"),
]
CLIENT_MESSAGE_ADAPTER: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


def describe_validation_error(exc: ValidationError, *, limit: int = 3) -> str:
    """One line naming each failing field, e.g. ``messages.0.role: Input should be 'user'``."""
    parts = []
    for error in exc.errors(include_url=False)[:limit]:
        location = ".".join(str(part) for part in error["loc"]) or "body"
        parts.append(f"{location}: {error['msg']}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
