"""The ``openai`` provider: any OpenAI-compatible upstream through the official ``openai`` SDK.

Settings: ``TOKENWIRE_OPENAI_BASE_URL`` (OpenAI, vLLM, llama.cpp server, Ollama...),
``TOKENWIRE_OPENAI_API_KEY``, ``TOKENWIRE_MODEL`` (the default model id; requests may name any
other, which the upstream judges). Streams ask for ``stream_options.include_usage``; upstreams
that send no usage chunk are tolerated (usage is then counted from the deltas, prompt unknown).

Requests: every field of :class:`GenerateParams` is sent upstream as OpenAI names it (messages
with their tool calls, tool results and image parts; ``tools``, ``tool_choice``,
``response_format``, ``reasoning_effort``...), ``extra_body`` as it is.

Streams: ``delta.content`` -> :class:`Delta`; ``delta.reasoning_content`` (DeepSeek, llama.cpp
``--reasoning-format deepseek``) or ``delta.reasoning`` (vLLM since PR #27752, OpenRouter) ->
:class:`Reasoning`, the first one present (an upstream that sends both, as tokenwire does,
is not doubled); ``delta.tool_calls[]`` fragments -> :class:`ToolCall` on a call's first
fragment, which must carry its ``id`` and ``function.name`` (OpenAI, vLLM and llama.cpp all do),
and :class:`ToolArguments` for each ``function.arguments`` piece. A fragment without
``index``, a call's first fragment without ``id`` or name, a later one with another id or
name, or arguments that are not text are malformed: :class:`ProviderError` (not retryable),
which ends the stream with ``error`` after everything that came before it. ``finish_reason``
stop, length, tool_calls and content_filter map to their own; any other (``function_call``,
which tokenwire never asks for, or a vendor's own) is a :class:`ProviderError` naming it rather
than a silent ``stop``. Usage: the usage chunk's counts and
``completion_tokens_details.reasoning_tokens``.

Closing the iterator closes the upstream HTTP response, which stops generation on servers that
cancel on disconnect (OpenAI, vLLM, llama.cpp server). SDK exceptions become
:class:`ProviderError` / :class:`ProviderTimeout` here: 408, 409, 429 and 5xx, connection
failures and timeouts are retryable; other 4xx are not.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Self

import openai

from tokenwire.errors import ProviderError, ProviderTimeout
from tokenwire.protocol.events import FinishReason, Usage
from tokenwire.protocol.requests import CAPABILITIES, OPTIONAL_FIELDS, GenerateParams
from tokenwire.providers.base import (
    Delta,
    Finish,
    Provider,
    ProviderEvent,
    Reasoning,
    ToolArguments,
    ToolCall,
)
from tokenwire.settings import Settings

_FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "tool_calls": FinishReason.TOOL_CALLS,
}
_RETRYABLE_STATUS = {408, 409, 429}


def _relayable(text: str, limit: int = 300) -> str:
    """An upstream's message as safe to relay to a client: the lines before any traceback
    (some upstreams put theirs in the message), on one line, at most ``limit`` characters."""
    kept = []
    for line in text.splitlines():
        if line.lstrip().startswith(("Traceback", 'File "')):
            break
        kept.append(line.strip())
    message = " ".join(part for part in kept if part)
    return message if len(message) <= limit else message[: limit - 1] + "…"


def translate_error(exc: openai.OpenAIError, upstream: str = "upstream") -> ProviderError:
    """Map an SDK exception to tokenwire's hierarchy, keeping the upstream's message (without
    any traceback it carries). ``upstream`` names it in timeouts and connection failures, e.g.
    ``"upstream http://127.0.0.1:8080/v1"``, so that a misconfigured base URL shows."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout(f"{upstream} timed out: {_relayable(str(exc))}")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"{upstream} unreachable: {_relayable(str(exc))}", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = status in _RETRYABLE_STATUS or status >= 500
        message = f"upstream answered {status}: {_relayable(exc.message)}"
        return ProviderError(message, retryable=retryable)
    return ProviderError(f"upstream error: {_relayable(str(exc))}", retryable=False)


class OpenAIProvider(Provider):
    """Streams from an OpenAI-compatible ``/v1/chat/completions`` with ``AsyncOpenAI``."""

    name = "openai"
    honours = CAPABILITIES  # passed upstream as they are; the upstream judges them

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        model: str,
        timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.default_model = model
        self.timeout = timeout
        self._client: openai.AsyncOpenAI | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            model=settings.model or "gpt-4o-mini",
            timeout=settings.openai_timeout,
        )

    @property
    def models(self) -> list[str]:
        return [self.default_model]

    def resolve_model(self, requested: str | None) -> str:
        # The upstream knows its models; unknown ones come back as a non-retryable 404.
        return requested or self.default_model

    async def start(self) -> None:
        # An upstream without auth (a local llama.cpp server) still needs a non-empty key.
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.api_key or "unused",
            timeout=self.timeout,
            max_retries=0,  # a retry mid-stream would duplicate text; clients resume instead
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def stream(self, params: GenerateParams, model: str) -> AsyncGenerator[ProviderEvent, None]:
        if self._client is None:
            raise RuntimeError("OpenAIProvider.stream() called before start()")
        return self._run(self._client, params, model)

    async def _run(
        self, client: openai.AsyncOpenAI, params: GenerateParams, model: str
    ) -> AsyncGenerator[ProviderEvent, None]:
        request = upstream_request(params, model)
        try:
            upstream = await client.chat.completions.create(**request)
        except openai.OpenAIError as exc:
            raise translate_error(exc, f"upstream {client.base_url}") from exc
        finish: str | None = None
        usage: Usage | None = None
        calls = _ToolCalls()
        try:
            async for chunk in upstream:
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices or ():  # vLLM's usage chunk: "choices": null
                    delta = choice.delta
                    if delta is not None:
                        reasoning = _reasoning_of(delta)
                        if reasoning:
                            yield Reasoning(reasoning)
                        if delta.content:
                            yield Delta(delta.content)
                        for fragment in delta.tool_calls or ():
                            for item in calls.fragment(fragment):
                                yield item
                    if choice.finish_reason:
                        finish = choice.finish_reason
        except openai.APIConnectionError as exc:
            raise ProviderError("upstream connection broke mid-stream", retryable=True) from exc
        except openai.OpenAIError as exc:
            raise translate_error(exc) from exc
        finally:
            await upstream.close()
        if finish is None:  # e.g. llama.cpp server interrupts a stream with a bare [DONE]
            raise ProviderError("upstream ended the stream without a finish reason", retryable=True)
        reason = _FINISH_REASONS.get(finish)
        if reason is None:
            raise ProviderError(f"upstream finished with unknown finish_reason {finish!r}")
        yield Finish(reason, usage)


def upstream_request(params: GenerateParams, model: str) -> dict[str, Any]:
    """The keyword arguments of ``chat.completions.create`` for ``params``: every field set,
    as OpenAI names it; ``extra_body`` as the SDK's ``extra_body``."""
    request: dict[str, Any] = {
        "model": model,
        "messages": [message.to_openai() for message in params.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    for key in ("max_tokens", "temperature", "top_p", "stop", "seed", *OPTIONAL_FIELDS):
        value = getattr(params, key)
        if value is None:
            continue
        if key == "tools":
            value = [tool.model_dump(exclude_none=True) for tool in params.tools or ()]
        elif key == "response_format" and params.response_format is not None:
            value = params.response_format.to_openai()
        elif key == "tool_choice" and not isinstance(value, str):
            value = value.model_dump()
        request[key] = value
    if params.extra_body:
        request["extra_body"] = params.extra_body
    return request


def _usage(usage: Any) -> Usage:
    details = getattr(usage, "completion_tokens_details", None)
    reasoning = getattr(details, "reasoning_tokens", None) if details is not None else None
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        reasoning_tokens=reasoning if isinstance(reasoning, int) else None,
    )


def _reasoning_of(delta: Any) -> str | None:
    """The reasoning text of a chunk's delta: ``reasoning_content``, else ``reasoning`` (neither
    is in the SDK's model: both arrive as extra fields)."""
    extra = delta.model_extra or {}
    for key in ("reasoning_content", "reasoning"):
        value = extra.get(key)
        if isinstance(value, str) and value:
            return value
    return None


class _ToolCalls:
    """The tool calls of one upstream stream: checks each ``delta.tool_calls[]`` fragment and
    turns it into provider events (see the module docstring for what is malformed)."""

    def __init__(self) -> None:
        self.calls: dict[int, tuple[str, str]] = {}  # index -> (id, name)

    def fragment(self, fragment: Any) -> list[ProviderEvent]:
        index = getattr(fragment, "index", None)
        if not isinstance(index, int) or index < 0:
            raise _malformed(f"a tool-call fragment without a valid index ({index!r})")
        function = getattr(fragment, "function", None)
        call_id = getattr(fragment, "id", None)
        name = getattr(function, "name", None) if function is not None else None
        arguments = getattr(function, "arguments", None) if function is not None else None
        events: list[ProviderEvent] = []
        known = self.calls.get(index)
        if known is None:
            if not isinstance(call_id, str) or not call_id:
                raise _malformed(f"tool call {index} began without an id")
            if not isinstance(name, str) or not name:
                raise _malformed(f"tool call {index} began without a function name")
            self.calls[index] = (call_id, name)
            events.append(ToolCall(index, call_id, name))
        else:
            if call_id and call_id != known[0]:
                raise _malformed(f"tool call {index} changed its id to {call_id!r}")
            if name and name != known[1]:
                raise _malformed(f"tool call {index} changed its name to {name!r}")
        if arguments is not None and not isinstance(arguments, str):
            raise _malformed(f"tool call {index} sent arguments that are not text")
        if arguments:
            events.append(ToolArguments(index, arguments))
        return events


def _malformed(what: str) -> ProviderError:
    return ProviderError(f"upstream sent a malformed tool call: {what}", retryable=False)
