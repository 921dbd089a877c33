"""The ``openai`` provider: any OpenAI-compatible upstream through the official ``openai`` SDK.

Settings: ``TOKENWIRE_OPENAI_BASE_URL`` (OpenAI, vLLM, llama.cpp server, Ollama...),
``TOKENWIRE_OPENAI_API_KEY``, ``TOKENWIRE_MODEL`` (the default model id; requests may name any
other, which the upstream judges). Streams ask for ``stream_options.include_usage``; upstreams
that send no usage chunk are tolerated (usage is then counted from the deltas, prompt unknown).

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
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import Delta, Finish, Provider, ProviderEvent
from tokenwire.settings import Settings

_FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.STOP,
    "tool_calls": FinishReason.STOP,
    "function_call": FinishReason.STOP,
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


def translate_error(exc: openai.OpenAIError) -> ProviderError:
    """Map an SDK exception to tokenwire's hierarchy, keeping the upstream's message (without
    any traceback it carries)."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout(f"upstream timed out: {_relayable(str(exc))}")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"upstream unreachable: {_relayable(str(exc))}", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = status in _RETRYABLE_STATUS or status >= 500
        message = f"upstream answered {status}: {_relayable(exc.message)}"
        return ProviderError(message, retryable=retryable)
    return ProviderError(f"upstream error: {_relayable(str(exc))}", retryable=False)


class OpenAIProvider(Provider):
    """Streams from an OpenAI-compatible ``/v1/chat/completions`` with ``AsyncOpenAI``."""

    name = "openai"

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
        request: dict[str, Any] = {
            "model": model,
            "messages": [m.model_dump(include={"role", "content"}) for m in params.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for key in ("max_tokens", "temperature", "top_p", "stop", "seed"):
            value = getattr(params, key)
            if value is not None:
                request[key] = value
        try:
            upstream = await client.chat.completions.create(**request)
        except openai.OpenAIError as exc:
            raise translate_error(exc) from exc
        finish: FinishReason | None = None
        usage: Usage | None = None
        try:
            async for chunk in upstream:
                if chunk.usage is not None:
                    usage = Usage.of(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    text = choice.delta.content if choice.delta else None
                    if text:
                        yield Delta(text)
                    if choice.finish_reason:
                        finish = _FINISH_REASONS.get(choice.finish_reason, FinishReason.STOP)
        except openai.APIConnectionError as exc:
            raise ProviderError("upstream connection broke mid-stream", retryable=True) from exc
        except openai.OpenAIError as exc:
            raise translate_error(exc) from exc
        finally:
            await upstream.close()
        if finish is None:  # e.g. llama.cpp server interrupts a stream with a bare [DONE]
            raise ProviderError("upstream ended the stream without a finish reason", retryable=True)
        yield Finish(finish, usage)
