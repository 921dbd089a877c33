"""OpenAI Chat Completions wire format (OpenAI API reference, "Create chat completion" and
"The chat completion chunk object"). Pure: no I/O.

A streamed completion is a series of ``data: <chat.completion.chunk JSON>`` frames ended by
``data: [DONE]``. The first chunk carries ``delta.role``; the last content-bearing chunk carries
``finish_reason``; with ``stream_options.include_usage`` every chunk has ``"usage": null`` and one
more chunk with empty ``choices`` and the usage comes before ``[DONE]``. A failure after the
headers are sent is a frame ``data: {"error": {...}}`` (which the official SDK raises as
``APIError``), then ``[DONE]``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tokenwire.errors import ErrorCode
from tokenwire.protocol.events import ErrorEvent, Event, StreamEnd, StreamStart, TextDelta, Usage
from tokenwire.protocol.requests import ChatMessage, GenerateParams

DONE = b"data: [DONE]\n\n"

# OpenAI's error "type" for each of our codes (the SDK maps HTTP status, not type, to classes).
_ERROR_TYPES = {
    ErrorCode.INVALID_REQUEST: "invalid_request_error",
    ErrorCode.NOT_FOUND: "invalid_request_error",
    ErrorCode.UNAUTHORIZED: "authentication_error",
    ErrorCode.FORBIDDEN: "permission_error",
    ErrorCode.PAYLOAD_TOO_LARGE: "invalid_request_error",
    ErrorCode.RATE_LIMITED: "rate_limit_error",
}


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``. Unknown fields are ignored, as upstreams do."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int | None, Field(ge=1, strict=True)] = None  # "5", true: refused
    max_completion_tokens: Annotated[int | None, Field(ge=1, strict=True)] = None
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    top_p: Annotated[float | None, Field(gt=0, le=1)] = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Annotated[int, Field(ge=1, le=1)] = 1

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def to_generate_params(self) -> GenerateParams:
        return GenerateParams(
            messages=self.messages,
            model=self.model,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self.stop,
            seed=self.seed,
        )


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def error_body(code: ErrorCode, message: str, *, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(code, "server_error"),
            "param": param,
            "code": str(code),
        }
    }


class ChunkEncoder:
    """Frames one completion's ``chat.completion.chunk`` objects as SSE ``data:`` lines.

    ``completion_id`` and ``created`` (unix seconds) are the same on every chunk, as upstream.
    """

    def __init__(self, completion_id: str, model: str, created: int, *, include_usage: bool):
        self.completion_id = completion_id
        self.model = model
        self.created = created
        self.include_usage = include_usage
        self._failed = False

    def encode_event(self, event: Event) -> bytes:
        """The frames that stand for one wire-protocol event (``b""`` for events with none).

        ``stream.start`` -> the role chunk; ``text.delta`` -> a content chunk; ``error`` -> an
        error frame; ``stream.end`` -> the finish chunk (unless an error came first), the usage
        chunk when asked for, and ``[DONE]``.
        """
        if isinstance(event, TextDelta):
            return self.delta(event.delta)
        if isinstance(event, StreamStart):
            return self.role()
        if isinstance(event, ErrorEvent):
            self._failed = True
            return self.error(event.code, event.message)
        if isinstance(event, StreamEnd):
            frames = b"" if self._failed else self.finish(event.finish_reason.value)
            if self.include_usage and event.usage is not None:
                frames += self.usage(event.usage)
            return frames + DONE
        return b""

    def _frame(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = usage.model_dump() if usage is not None else None
        return f"data: {_dumps(chunk)}\n\n".encode()

    def role(self) -> bytes:
        """First chunk: the assistant role and empty content."""
        return self._choice({"role": "assistant", "content": ""}, None)

    def delta(self, text: str) -> bytes:
        return self._choice({"content": text}, None)

    def finish(self, finish_reason: str) -> bytes:
        return self._choice({}, finish_reason)

    def usage(self, usage: Usage) -> bytes:
        """The extra chunk sent when ``include_usage`` is set: empty ``choices``, the usage."""
        return self._frame([], usage)

    def error(self, code: ErrorCode, message: str) -> bytes:
        return f"data: {_dumps(error_body(code, message))}\n\n".encode()

    def _choice(self, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._frame([choice])


def completion_body(
    completion_id: str,
    model: str,
    created: int,
    text: str,
    finish_reason: str,
    usage: Usage | None,
) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage.model_dump() if usage is not None else None,
    }


def models_body(model_ids: list[str], created: int, owned_by: str) -> dict[str, Any]:
    """The ``GET /v1/models`` list object."""
    return {
        "object": "list",
        "data": [
            {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}
            for model_id in model_ids
        ],
    }
