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
from tokenwire.protocol.events import (
    ErrorEvent,
    Event,
    ReasoningDelta,
    StreamEnd,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenwire.protocol.requests import OPTIONAL_FIELDS, GenerateParams

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
    """``stream_options``: ``include_usage`` adds the usage chunk; ``include_obfuscation`` is
    accepted and has nothing to turn off (tokenwire adds no obfuscation padding)."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    include_obfuscation: bool | None = None


_PASSED_ON = ("temperature", "top_p", "stop", "seed", *OPTIONAL_FIELDS)
"""The request fields a chat completion hands on as they are: the core sampling ones and every
field a provider may or may not honour (:data:`~tokenwire.protocol.requests.OPTIONAL_FIELDS`)."""


class ChatCompletionRequest(GenerateParams):
    """The body of ``POST /v1/chat/completions`` (OpenAI API reference, "Create chat
    completion"): :class:`GenerateParams` plus the fields only this API has.

    Fields the reference lists that tokenwire's stream cannot carry back are refused by
    :meth:`refused` (HTTP 400 naming the field): ``n`` above 1, ``logprobs``, ``top_logprobs``,
    audio output (``modalities``, ``audio``), ``web_search_options`` (its annotations) and the
    deprecated ``functions`` / ``function_call`` (use ``tools``). Fields the reference does not
    list are kept in ``extra_body``: an ``openai`` provider passes them upstream (vLLM's
    ``top_k``, ``chat_template_kwargs``...), any other provider refuses them.
    """

    model_config = ConfigDict(extra="allow")

    model: str  # required here, optional in GenerateParams
    on_disconnect: None = None  # not an OpenAI field
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_completion_tokens: Annotated[int | None, Field(ge=1, strict=True)] = None
    n: Annotated[int | None, Field(ge=1)] = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int | None, Field(ge=0, le=20)] = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def refused(self) -> tuple[str, str] | None:
        """The first field that tokenwire cannot honour whatever the provider, and why."""
        if self.n is not None and self.n > 1:
            return "n", "only one choice per completion is supported (n=1)"
        if self.logprobs:
            return "logprobs", "tokenwire's stream carries no log probabilities"
        if self.top_logprobs:
            return "top_logprobs", "tokenwire's stream carries no log probabilities"
        if self.modalities is not None and any(m != "text" for m in self.modalities):
            return "modalities", "only text output is supported"
        if self.audio is not None:
            return "audio", "only text output is supported"
        if self.web_search_options is not None:
            return "web_search_options", "tokenwire's stream carries no annotations"
        if self.functions is not None:
            return "functions", "deprecated by OpenAI: use tools"
        if self.function_call is not None:
            return "function_call", "deprecated by OpenAI: use tool_choice"
        return None

    def to_generate_params(self) -> GenerateParams:
        """The provider-neutral request (unknown fields in ``extra_body``)."""
        fields: dict[str, Any] = {key: getattr(self, key) for key in _PASSED_ON}
        extra = dict(self.model_extra or {})
        if self.extra_body:
            extra.update(self.extra_body)
        return GenerateParams.model_construct(
            messages=self.messages,
            model=self.model,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            extra_body=extra or None,
            **fields,
        )


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def error_object(
    code: ErrorCode | str, message: str, *, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object: ``{"message", "type", "param", "code"}``; a ``code`` of OpenAI's
    own (a string, e.g. ``response_already_in_flight``) is an ``invalid_request_error``."""
    kind = (
        _ERROR_TYPES.get(code, "server_error")
        if isinstance(code, ErrorCode)
        else "invalid_request_error"
    )
    return {"message": message, "type": kind, "param": param, "code": str(code)}


def error_body(code: ErrorCode, message: str, *, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": error_object(code, message, param=param)}


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

        ``stream.start`` -> the role chunk; ``text.delta`` -> ``delta.content``;
        ``reasoning.delta`` -> ``delta.reasoning_content`` and ``delta.reasoning`` (both: the
        DeepSeek / llama.cpp and the vLLM / OpenRouter spellings, clients read one or the other);
        ``tool_call.start`` -> ``delta.tool_calls[{index, id, type, function: {name,
        arguments: ""}}]``; ``tool_call.delta`` -> ``delta.tool_calls[{index, function:
        {arguments}}]``; ``tool_call.end`` -> nothing (OpenAI has no such chunk); ``error`` ->
        an error frame; ``stream.end`` -> the finish chunk (unless an error came first), the
        usage chunk when asked for, and ``[DONE]``.
        """
        if isinstance(event, TextDelta):
            return self.delta(event.delta)
        if isinstance(event, ReasoningDelta):
            return self._choice({"reasoning_content": event.delta, "reasoning": event.delta}, None)
        if isinstance(event, ToolCallDelta):
            call = {"index": event.index, "function": {"arguments": event.delta}}
            return self._choice({"tool_calls": [call]}, None)
        if isinstance(event, ToolCallStart):
            call = {
                "index": event.index,
                "id": event.call_id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return self._choice({"tool_calls": [call]}, None)
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
        return b""  # tool_call.end

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
            chunk["usage"] = usage_body(usage) if usage is not None else None
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


def usage_body(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage object: token counts, and ``completion_tokens_details.reasoning_tokens``
    when the reasoning tokens are known."""
    body: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.reasoning_tokens is not None:
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return body


def completion_body(
    completion_id: str,
    model: str,
    created: int,
    text: str,
    finish_reason: str,
    usage: Usage | None,
    *,
    reasoning: str | None = None,
    tool_calls: list[ToolCallEnd] | None = None,
) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` object. With tool calls, ``message.tool_calls`` lists
    them (``{id, type, function: {name, arguments}}``, in index order) and ``content`` is null
    when there is no text, as OpenAI answers; ``reasoning`` goes in ``message.reasoning_content``
    and ``message.reasoning`` (DeepSeek's and vLLM's names), left out when there is none."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if reasoning:
        message["reasoning_content"] = reasoning
        message["reasoning"] = reasoning
    if tool_calls:
        if not text:
            message["content"] = None
        message["tool_calls"] = [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in sorted(tool_calls, key=lambda call: call.index)
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_body(usage) if usage is not None else None,
    }


def models_body(
    model_ids: list[str], created: int, owned_by: str, *, context_window: int | None = None
) -> dict[str, Any]:
    """The ``GET /v1/models`` list object. ``context_window`` (tokens), when known, is added to
    each entry (a tokenwire extension; OpenAI's SDK keeps unknown fields)."""
    extra = {} if context_window is None else {"context_window": context_window}
    return {
        "object": "list",
        "data": [
            {"id": model_id, "object": "model", "created": created, "owned_by": owned_by, **extra}
            for model_id in model_ids
        ],
    }
