"""The scripted provider: deterministic text on a deterministic clock, with injectable faults.

It serves the model id ``scripted``. Token ``i`` (from 0) is the ``i``-th word of a fixed
paragraph, cycled, with a leading space from the second on; :func:`scripted_text` gives the
exact text of ``n`` tokens, so tests can compare what a client received byte for byte.

Timing: the first token comes ``ttft`` seconds after the stream starts, then one every
``interval`` seconds, each delay stretched by up to ``jitter`` seconds (seeded, so repeatable).
Faults: ``error_after=N`` raises a retryable :class:`ProviderError` after N tokens;
``stall_after=N`` with ``stall=T`` sleeps T seconds after N tokens (``stall_after=0``: before the
first one).

Rich streams (for tests and the benchmark): ``reasoning_tokens`` reasoning tokens come first
(:func:`scripted_reasoning`), then the ``tokens`` text tokens, then ``tool_calls`` calls
(:func:`scripted_tool_calls`: ids, names and arguments), each call's arguments sent in
``tool_call_pieces`` pieces; with ``interleave_tool_calls`` the calls' pieces alternate (as
parallel calls may arrive), else each call is sent whole before the next begins. Every item
(reasoning token, text token, call piece) takes one ``interval`` and counts as one token for
``error_after`` and ``stall_after``; a stream with tool calls finishes with ``tool_calls``.
``max_tokens`` limits the text tokens only.

Every stream is recorded in :attr:`ScriptedProvider.records` so tests can check how many tokens
were produced and when the stream was closed (when ``keep_records``, the default except on a
server built from settings).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace
from typing import Self

from tokenwire.errors import ProviderError
from tokenwire.protocol.events import FinishReason, Usage
from tokenwire.protocol.requests import CAPABILITIES, GenerateParams
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

MODEL_ID = "scripted"

_PARAGRAPH = (
    "Tokens arrive one by one, each a small promise kept: the server reads them from the model, "
    "numbers them, and hands them to every listener in order, so that a reader who loses the "
    "line can pick it up again exactly where it dropped."
).split()


def scripted_token(index: int) -> str:
    """The text of token ``index`` (from 0)."""
    word = _PARAGRAPH[index % len(_PARAGRAPH)]
    return word if index == 0 else f" {word}"


def scripted_text(tokens: int) -> str:
    """The exact text of the first ``tokens`` tokens."""
    return "".join(scripted_token(i) for i in range(tokens))


_THOUGHTS = (
    "The reader asked for a stream; first I weigh what to say, then which tools to call."
).split()


def scripted_reasoning_token(index: int) -> str:
    """The text of reasoning token ``index`` (from 0)."""
    word = _THOUGHTS[index % len(_THOUGHTS)]
    return word if index == 0 else f" {word}"


def scripted_reasoning(tokens: int) -> str:
    """The exact reasoning text of the first ``tokens`` reasoning tokens."""
    return "".join(scripted_reasoning_token(i) for i in range(tokens))


_TOOLS = ("get_weather", "get_time", "search_docs")
_CITIES = ("Paris", "Lagos", "Lima", "Oslo", "Kyoto")


def scripted_tool_calls(count: int) -> list[tuple[str, str, str]]:
    """The (call id, function name, arguments JSON) of the first ``count`` scripted calls."""
    return [
        (
            f"call_{i}",
            _TOOLS[i % len(_TOOLS)],
            json.dumps(
                {"city": _CITIES[i % len(_CITIES)], "days": i + 1, "note": scripted_text(3 + i)}
            ),
        )
        for i in range(count)
    ]


def split_arguments(arguments: str, pieces: int) -> list[str]:
    """``arguments`` cut into at most ``pieces`` non-empty pieces of near-equal length."""
    pieces = max(1, min(pieces, len(arguments)))
    size, extra = divmod(len(arguments), pieces)
    out, start = [], 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        out.append(arguments[start:end])
        start = end
    return out


@dataclass(frozen=True)
class Script:
    """What one scripted stream does. Durations in seconds."""

    tokens: int = 32
    ttft: float = 0.0
    interval: float = 0.0
    jitter: float = 0.0
    error_after: int | None = None
    stall_after: int | None = None
    stall: float = 0.0
    seed: int = 0
    reasoning_tokens: int = 0
    tool_calls: int = 0
    tool_call_pieces: int = 4
    interleave_tool_calls: bool = False

    def items(self, tokens: int) -> list[ProviderEvent]:
        """What the stream sends, in order (``tokens``: the text tokens, after max_tokens)."""
        items: list[ProviderEvent] = [
            Reasoning(scripted_reasoning_token(i)) for i in range(self.reasoning_tokens)
        ]
        items += [Delta(scripted_token(i)) for i in range(tokens)]
        calls = scripted_tool_calls(self.tool_calls)
        pieces = [split_arguments(arguments, self.tool_call_pieces) for _, _, arguments in calls]
        if self.interleave_tool_calls:
            for step in range(max((len(p) for p in pieces), default=0)):
                for index, (call_id, name, _) in enumerate(calls):
                    if step == 0:
                        items.append(ToolCall(index, call_id, name))
                    if step < len(pieces[index]):
                        items.append(ToolArguments(index, pieces[index][step]))
        else:
            for index, (call_id, name, _) in enumerate(calls):
                items.append(ToolCall(index, call_id, name))
                items += [ToolArguments(index, piece) for piece in pieces[index]]
        return items


@dataclass
class StreamRecord:
    """What happened to one scripted stream (for tests and benchmarks).

    ``produced`` counts tokens yielded; ``closed_at`` is ``time.monotonic()`` when the iterator
    was closed (by the consumer or by running to the end), ``None`` while it runs.
    """

    script: Script
    started_at: float = field(default_factory=time.monotonic)
    produced: int = 0
    token_times: list[float] = field(default_factory=list)
    closed_at: float | None = None
    completed: bool = False


class ScriptedProvider(Provider):
    """Deterministic provider for tests, benchmarks and demos without a model."""

    name = "scripted"
    honours = CAPABILITIES  # a fake: it takes every field; what it sends is its script's

    def __init__(
        self,
        script: Script | None = None,
        *,
        script_for: Callable[[GenerateParams], Script] | None = None,
        keep_records: bool = True,
        context_window: int | None = None,
    ) -> None:
        self.script = script or Script()
        self.context_window = context_window  # reported only (tests of history trimming)
        self.script_for = script_for  # per request (tests): overrides ``script``
        self.keep_records = keep_records  # off on servers: records grow with every token
        self.records: list[StreamRecord] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            Script(
                tokens=settings.scripted_tokens,
                ttft=settings.scripted_ttft,
                interval=settings.scripted_interval,
                jitter=settings.scripted_jitter,
                error_after=settings.scripted_error_after,
                stall_after=settings.scripted_stall_after,
                stall=settings.scripted_stall,
                reasoning_tokens=settings.scripted_reasoning_tokens,
                tool_calls=settings.scripted_tool_calls,
                tool_call_pieces=settings.scripted_tool_call_pieces,
                interleave_tool_calls=settings.scripted_interleave_tool_calls,
            ),
            keep_records=False,
        )

    @property
    def models(self) -> list[str]:
        return [MODEL_ID]

    def script_of(self, params: GenerateParams) -> Script:
        script = self.script_for(params) if self.script_for else self.script
        if params.max_tokens is not None and params.max_tokens < script.tokens:
            script = replace(script, tokens=params.max_tokens)
        return script

    def stream(self, params: GenerateParams, model: str) -> AsyncGenerator[ProviderEvent, None]:
        script = self.script_of(params)
        record = StreamRecord(script)
        if self.keep_records:
            self.records.append(record)
        limited = params.max_tokens is not None and params.max_tokens <= script.tokens
        prompt_tokens = sum(len(message.content.split()) for message in params.messages)
        return self._run(script, record, prompt_tokens, limited)

    async def _run(
        self, script: Script, record: StreamRecord, prompt_tokens: int, limited: bool
    ) -> AsyncGenerator[ProviderEvent, None]:
        rng = random.Random(script.seed)
        items = script.items(script.tokens)
        try:
            yield Prompt(prompt_tokens)
            for index, item in enumerate(items):
                if script.stall_after == index and script.stall > 0:
                    await asyncio.sleep(script.stall)
                if script.error_after == index:
                    raise ProviderError(f"scripted failure after {index} tokens", retryable=True)
                delay = script.ttft if index == 0 else script.interval
                if script.jitter:
                    delay += rng.uniform(0, script.jitter)
                if delay:
                    await asyncio.sleep(delay)
                if not isinstance(item, ToolCall):
                    record.produced += 1
                    if self.keep_records:
                        record.token_times.append(time.monotonic())
                yield item
            if script.error_after == len(items):
                raise ProviderError(f"scripted failure after {len(items)} tokens", retryable=True)
            record.completed = True
            if script.tool_calls:
                reason = FinishReason.TOOL_CALLS
            else:
                reason = FinishReason.LENGTH if limited else FinishReason.STOP
            usage = Usage.of(prompt_tokens, record.produced)
            if script.reasoning_tokens:
                usage = usage.model_copy(update={"reasoning_tokens": script.reasoning_tokens})
            yield Finish(reason, usage)
        finally:
            record.closed_at = time.monotonic()
