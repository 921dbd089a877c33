"""The Provider interface: one method that streams a generation, and its event types.

``Provider.stream(params, model)`` returns an async iterator of :data:`ProviderEvent`:
an optional :class:`Prompt` (the prompt's size, once known), any number of :class:`Queued`
before the first delta (a provider that makes requests wait their turn), any number of
:class:`Delta`
(answer text), :class:`Reasoning` (reasoning text), :class:`ToolCall` (a call begins) and
:class:`ToolArguments` (a piece of a begun call's arguments), in the model's order, and at most
one :class:`Finish` as the last item. A call's arguments may interleave with other calls'
(parallel calls), never precede its :class:`ToolCall`. Closing the iterator early (``aclose()``, or
cancelling the task that iterates it) must stop the upstream work within one token: the HTTP
response closed, the llama.cpp loop stopped. Failures are raised as
:class:`tokenwire.errors.ProviderError` (or a subclass), never as an SDK's own exception.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Self

from tokenwire.errors import InvalidRequest
from tokenwire.protocol.events import FinishReason, Usage
from tokenwire.protocol.requests import GenerateParams
from tokenwire.settings import Settings


@dataclass(frozen=True, slots=True)
class Prompt:
    """The prompt's size in tokens, sent once before the first delta when the provider knows it."""

    tokens: int


@dataclass(frozen=True, slots=True)
class Queued:
    """The request waits for the provider's capacity (the local engine's slots are all busy).

    ``position`` >= 1: its place in the provider's queue (1 = next to be admitted), sent when
    the request joins the queue and whenever the place changes. ``position`` 0: admitted, the
    wait is over (sent once, only after a position >= 1); the first-token deadline counts from
    here."""

    position: int


@dataclass(slots=True)
class Delta:
    """Generated text; ``tokens`` is how many completion tokens it holds (usually 1).

    Made once per token, so not frozen (a frozen dataclass costs ~3x as much to build): treat
    it as immutable."""

    text: str
    tokens: int = 1


@dataclass(slots=True)
class Reasoning:
    """Reasoning ("thinking") text, kept apart from the answer; ``tokens`` as in
    :class:`Delta`."""

    text: str
    tokens: int = 1


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model begins calling tool ``name``: ``index`` is the call's place among this turn's
    calls (from 0), ``call_id`` the upstream's id for it."""

    index: int
    call_id: str
    name: str


@dataclass(slots=True)
class ToolArguments:
    """A piece of the arguments (JSON text) of the call at ``index``; ``tokens`` as in
    :class:`Delta`."""

    index: int
    text: str
    tokens: int = 1


@dataclass(frozen=True, slots=True)
class Finish:
    """The provider's own end: why it stopped and, when it reports one, the usage."""

    reason: FinishReason
    usage: Usage | None = None


ProviderEvent = Prompt | Queued | Delta | Reasoning | ToolCall | ToolArguments | Finish


class Provider(ABC):
    """A model backend. Use as an async context manager (``start`` / ``aclose``)."""

    name: ClassVar[str]
    honours: frozenset[str] = frozenset()
    """The request capabilities this provider acts on (names from
    :data:`tokenwire.protocol.requests.CAPABILITIES`: ``tools``, ``tool_calls``,
    ``response_format``...). The core fields (text turns, ``model``, ``max_tokens``,
    ``temperature``, ``top_p``, ``stop``, ``seed``, ``on_disconnect``) every provider honours;
    a request that asks for anything
    else is refused by :meth:`check_honoured` (HTTP 400 naming the field and the provider).
    Empty by default, so that a new provider refuses what it was not written for."""
    context_window: int | None = None
    """The model's context size in tokens (prompt and reply together), when the provider knows
    it: reported in ``GET /v1/models`` so that clients can trim a long history. ``None``:
    unknown (an upstream's own limit applies)."""

    def check_honoured(self, params: GenerateParams) -> None:
        """Refuse a request that asks for what this provider does not honour.

        Raises:
            InvalidRequest: naming the first such field (its path, e.g. ``tools`` or
                ``messages.2.tool_calls``) and the provider.
        """
        for capability, path in params.requested_fields():
            if capability not in self.honours:
                raise InvalidRequest(f"{path}: not supported by provider {self.name!r}", param=path)

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Build the provider from the server settings (no I/O; ``start`` does that)."""

    @property
    @abstractmethod
    def models(self) -> list[str]:
        """Model ids this provider serves; the first is the default."""

    def resolve_model(self, requested: str | None) -> str:
        """The model a request will run on. Raises :class:`tokenwire.errors.NotFound`."""
        from tokenwire.errors import NotFound

        if requested is None:
            return self.models[0]
        if requested not in self.models:
            raise NotFound(
                f"model {requested!r} is not served by provider {self.name!r}; "
                f"available: {', '.join(self.models)}"
            )
        return requested

    @abstractmethod
    def stream(self, params: GenerateParams, model: str) -> AsyncGenerator[ProviderEvent, None]:
        """Stream one generation. See the module docstring for the contract."""

    async def start(self) -> None:  # noqa: B027 - an optional hook, a no-op by default
        """Acquire resources (load a model, open a client). Called once before any stream."""

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, a no-op by default
        """Release resources. Streams still running are the caller's to cancel first."""

    def stats(self) -> Mapping[str, int]:
        """The provider's own numbers, read by ``GET /metrics`` at scrape time on the event
        loop's thread (it must not block). The names exported (others are ignored):
        ``slots_total``, ``slots_busy``, ``queue_length`` (gauges: sequence slots of an engine
        that decodes several streams together, those held now, streams waiting for one) and
        ``decode_steps``, ``prompt_tokens_cached`` (counters, never decreasing: batched decode
        steps run, prompt tokens served from a prompt cache instead of being decoded). Empty by
        default: a provider with no engine of its own (an upstream API) reports nothing."""
        return {}

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
