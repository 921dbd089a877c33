"""Your own model code as a provider: an async generator function, wrapped.

The function takes the request's :class:`~tokenwire.protocol.requests.GenerateParams` and
yields, in order::

    async def generate(params: GenerateParams) -> AsyncIterator[str | ProviderEvent]:
        async for chunk in my_sdk.stream(params.messages[-1].content):
            yield chunk  # str: answer text, one token

A ``str`` is answer text worth one completion token (``count_tokens`` changes that); the
provider events of :mod:`tokenwire.providers.base` may be yielded as they are
(:class:`Delta`, :class:`Reasoning`, :class:`ToolCall`, :class:`ToolArguments`, a
:class:`Prompt` with the prompt's size, and a final :class:`Finish` with the upstream's usage).

What :class:`FunctionProvider` adds to the bare function:

- **Close.** Closing the provider's iterator (a client cancels or leaves) closes the function's
  generator at the ``yield`` or ``await`` it is suspended in: its ``finally`` blocks and
  ``async with`` exits run, so an upstream call it made (an HTTP response, an SDK stream) is
  closed there.
- **Errors.** An exception from the function other than
  :class:`~tokenwire.errors.ProviderError` becomes a non-retryable ``ProviderError`` (code
  ``provider_error``) naming the function and the exception's type (its message and traceback
  go to the ``tokenwire.providers`` log, not to the client). Raise ``ProviderError`` yourself
  to choose the message and ``retryable``. Yielding anything else than the types above is a
  ``ProviderError`` too.
- **Limits and usage.** Once ``params.max_tokens`` completion tokens have been yielded, the
  function is closed and the stream finishes with ``length``. Unless the function yields a
  :class:`Finish` with usage, the usage is counted: completion tokens from what it yielded,
  prompt tokens from a yielded :class:`Prompt`, else from the messages (``count_tokens`` of
  each message's content; by default its whitespace-separated words, an estimate).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import Self, TypeAlias

from tokenwire.errors import ProviderError
from tokenwire.protocol.events import FinishReason, Usage
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import (
    Delta,
    Finish,
    Prompt,
    Provider,
    ProviderEvent,
    Reasoning,
    ToolArguments,
    ToolCall,
)
from tokenwire.settings import Settings

log = logging.getLogger("tokenwire.providers")

FunctionItem: TypeAlias = str | ProviderEvent
"""What a provider function may yield."""

ProviderFunction: TypeAlias = Callable[[GenerateParams], AsyncIterator[FunctionItem]]
"""An async generator function ``(params) -> AsyncIterator[str | ProviderEvent]``."""


def words(text: str) -> int:
    """The default token count: whitespace-separated words (an estimate, never below 1 for
    non-blank text)."""
    return len(text.split())


def is_provider_function(obj: object) -> bool:
    """Whether ``obj`` is an async generator function (or an object whose ``__call__`` is)."""
    if inspect.isasyncgenfunction(obj):
        return True
    call = getattr(type(obj), "__call__", None)  # noqa: B004 - the method, not callable()
    return call is not None and inspect.isasyncgenfunction(call)


class FunctionProvider(Provider):
    """A :class:`Provider` around an async generator function (see the module docstring).

    Args:
        function: ``(params) -> AsyncIterator[str | ProviderEvent]``.
        models: the model ids it serves, the first the default (default: the function's
            ``__name__``). A request for another model is answered 404 ``not_found``.
        count_tokens: ``(text) -> int``, the tokens of a yielded ``str`` and of the prompt's
            messages; default: each ``str`` is one token and the prompt is counted in words.

    Raises:
        TypeError: ``function`` is not an async generator function.
    """

    name = "function"

    def __init__(
        self,
        function: ProviderFunction,
        *,
        models: Sequence[str] | None = None,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        if not is_provider_function(function):
            raise TypeError(
                f"{function!r} is not an async generator function (an `async def` that yields text)"
            )
        self.function = function
        label = getattr(function, "__qualname__", None) or type(function).__qualname__
        self.label = f"{getattr(function, '__module__', '?')}:{label}"
        self._models = list(models) if models else [getattr(function, "__name__", "function")]
        self.count_tokens = count_tokens

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Not possible: a function provider is made from its function
        (:func:`tokenwire.providers.as_provider`). Raises :class:`TypeError`."""
        raise TypeError("FunctionProvider is built from a function: FunctionProvider(fn)")

    @property
    def models(self) -> list[str]:
        return self._models

    def stream(self, params: GenerateParams, model: str) -> AsyncGenerator[ProviderEvent, None]:
        return self._run(params)

    def _prompt_tokens(self, params: GenerateParams) -> int:
        count = self.count_tokens or words
        return sum(count(message.content) for message in params.messages)

    async def _run(self, params: GenerateParams) -> AsyncGenerator[ProviderEvent, None]:
        limit = params.max_tokens
        prompt: int | None = None
        completion = 0
        finish: Finish | None = None
        try:
            async with aclosing(self.function(params)) as items:  # type: ignore[type-var]  # an async generator (checked in __init__), typed as its iterator
                async for item in items:
                    if finish is not None:
                        raise ProviderError(
                            f"{self.label} yielded a {type(item).__name__} after its Finish"
                        )
                    if isinstance(item, str):
                        if not item:
                            continue
                        tokens = self.count_tokens(item) if self.count_tokens else 1
                        event: ProviderEvent = Delta(item, tokens)
                    elif isinstance(item, Delta | Reasoning | ToolCall | ToolArguments):
                        event = item
                    elif isinstance(item, Prompt):
                        prompt = item.tokens
                        event = item
                    elif isinstance(item, Finish):
                        finish = item
                        continue
                    else:
                        raise ProviderError(
                            f"{self.label} yielded a {type(item).__name__}; expected str, "
                            "Delta, Reasoning, ToolCall, ToolArguments, Prompt or Finish"
                        )
                    if isinstance(event, Delta | Reasoning | ToolArguments):
                        completion += event.tokens
                    yield event
                    if limit is not None and completion >= limit:
                        finish = Finish(FinishReason.LENGTH)
                        break  # closes the function's generator (aclosing)
        except ProviderError:
            raise
        except Exception as exc:
            log.error("provider function %s failed", self.label, exc_info=exc)
            raise ProviderError(
                f"provider function {self.label} raised {type(exc).__name__}", retryable=False
            ) from exc
        if finish is None:
            finish = Finish(FinishReason.STOP)
        if finish.usage is None:
            prompt_tokens = self._prompt_tokens(params) if prompt is None else prompt
            finish = Finish(finish.reason, Usage.of(prompt_tokens, completion))
        yield finish
