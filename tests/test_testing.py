"""The provider conformance kit (``tokenwire.testing.check_provider``): well-behaved providers
pass every check; deliberately broken ones fail the check they break, with a message that
says what to fix."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Self

import httpx
import openai
import pytest

from tokenwire.errors import ProviderError
from tokenwire.protocol.events import FinishReason, Usage
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import Delta, Finish, Provider, ProviderEvent
from tokenwire.providers.function import FunctionProvider
from tokenwire.settings import Settings
from tokenwire.testing import CHECKS, ConformanceError, check_provider


class Words(Provider):
    """A well-behaved provider, the base of the broken ones: ``count`` words, one per token."""

    name = "words"

    def __init__(self, count: int = 40) -> None:
        self.count = count

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls()

    @property
    def models(self) -> list[str]:
        return ["words"]

    def stream(self, params: GenerateParams, model: str) -> AsyncGenerator[ProviderEvent, None]:
        return self.run(params)

    async def run(self, params: GenerateParams) -> AsyncGenerator[ProviderEvent, None]:
        limit = min(self.count, params.max_tokens or self.count)
        for index in range(limit):
            await asyncio.sleep(0.001)
            yield Delta(f" w{index}")
        yield Finish(FinishReason.LENGTH, Usage.of(3, limit))


class IgnoresClose(Words):
    """Produces in a task of its own, which closing the iterator leaves running."""

    async def run(self, params: GenerateParams) -> AsyncGenerator[ProviderEvent, None]:
        queue: asyncio.Queue[str] = asyncio.Queue()

        async def produce() -> None:
            index = 0
            while True:  # the upstream work, which nobody stops
                await asyncio.sleep(0.005)
                await queue.put(f" w{index}")
                index += 1

        asyncio.create_task(produce())  # noqa: RUF006 - deliberately unsupervised
        for _ in range(params.max_tokens or 16):
            yield Delta(await queue.get())
        yield Finish(FinishReason.LENGTH)


class RaisesSdkError(Words):
    """Lets the upstream SDK's exception through."""

    async def run(self, params: GenerateParams) -> AsyncGenerator[ProviderEvent, None]:
        yield Delta("Hello")
        raise openai.APIConnectionError(request=httpx.Request("POST", "http://upstream/v1"))


class BlocksTheLoop(Words):
    """Calls a blocking function on the event loop between tokens."""

    async def run(self, params: GenerateParams) -> AsyncGenerator[ProviderEvent, None]:
        for index in range(4):
            time.sleep(0.25)  # noqa: ASYNC251 - the bug under test
            yield Delta(f" w{index}")
        yield Finish(FinishReason.STOP, Usage.of(3, 4))


class FinishesTwice(Words):
    async def run(self, params: GenerateParams) -> AsyncGenerator[ProviderEvent, None]:
        yield Delta("a")
        yield Finish(FinishReason.STOP, Usage.of(1, 1))
        yield Finish(FinishReason.STOP, Usage.of(1, 1))


class MiscountsUsage(Words):
    async def run(self, params: GenerateParams) -> AsyncGenerator[ProviderEvent, None]:
        for _ in range(3):
            yield Delta("a")
        yield Finish(FinishReason.STOP, Usage.of(1, 7))


def failed(error: pytest.ExceptionInfo[ConformanceError]) -> set[str]:
    return {name for name, check in error.value.report.checks.items() if not check.passed}


async def test_a_well_behaved_provider_passes_every_check():
    report = await check_provider(Words())
    assert report.passed and list(report.checks) == list(CHECKS)
    assert report.failures == []
    assert isinstance(report.events[-1], Finish)
    assert "PASS no_blocking" in str(report)


async def test_a_provider_function_passes_every_check():
    closed: list[bool] = []

    async def generate(params: GenerateParams) -> AsyncIterator[str]:
        try:
            for index in range(100):
                await asyncio.sleep(0)
                yield f" t{index}"
        finally:
            closed.append(True)

    report = await check_provider(FunctionProvider(generate))
    assert report.passed, str(report)
    finish = report.events[-1]
    assert isinstance(finish, Finish) and finish.reason is FinishReason.LENGTH
    assert finish.usage == Usage.of(7, 16)  # counted: seven words of prompt, 16 tokens
    assert len(closed) == 4  # warm-up and normal stream (max_tokens), aclose(), the cancel


async def test_a_provider_that_ignores_close_fails_the_close_check():
    with pytest.raises(ConformanceError) as error:
        await check_provider(IgnoresClose(), close_timeout=0.5)
    assert failed(error) == {"close"}
    message = str(error.value)
    assert "FAIL close" in message
    assert "a task it started still runs" in message and "produce" in message
    # the kit cancels what it found, so nothing outlives the check
    assert [t for t in asyncio.all_tasks() if "produce" in repr(t.get_coro())] == []


async def test_a_provider_that_raises_a_raw_sdk_error_fails_the_errors_check():
    with pytest.raises(ConformanceError) as error:
        await check_provider(RaisesSdkError())
    assert "errors" in failed(error)
    assert "raised openai.APIConnectionError" in str(error.value)
    assert "raise ProviderError(...) from exc" in str(error.value)


async def test_a_failing_request_must_fail_with_a_provider_error():
    with pytest.raises(ConformanceError) as error:
        await check_provider(Words(), failing_provider=RaisesSdkError())
    assert failed(error) == {"errors"}
    assert "the failing request: raised openai.APIConnectionError" in str(error.value)
    with pytest.raises(ConformanceError) as error:
        await check_provider(Words(), failing_provider=Words())
    assert "the failing request did not fail" in str(error.value)


async def test_a_provider_that_blocks_the_loop_fails_the_no_blocking_check():
    loop = asyncio.get_running_loop()
    debug = loop.get_debug()
    with pytest.raises(ConformanceError) as error:
        await check_provider(BlocksTheLoop(), slow_callback=0.2)
    assert failed(error) == {"no_blocking"}
    assert "a blocking event-loop step (>= 0.2 s)" in str(error.value)
    assert "asyncio.to_thread" in str(error.value)
    assert loop.get_debug() == debug  # the loop is left as it was


async def test_two_finishes_and_a_wrong_usage_are_reported():
    with pytest.raises(ConformanceError) as error:
        await check_provider(FinishesTwice())
    assert "2 Finish events; exactly one, the last item" in str(error.value)
    with pytest.raises(ConformanceError) as error:
        await check_provider(MiscountsUsage())
    assert failed(error) == {"usage"}
    assert "usage.completion_tokens=7, but the text events hold 3 tokens" in str(error.value)


async def test_the_report_can_be_returned_instead_of_raised():
    report = await check_provider(RaisesSdkError(), raise_on_failure=False)
    assert not report.passed
    assert any(failure.startswith("errors: ") for failure in report.failures)


async def test_a_provider_error_is_not_a_contract_breach():
    class Refuses(Words):
        async def run(self, params: GenerateParams) -> AsyncGenerator[ProviderEvent, None]:
            raise ProviderError("upstream answered 503", retryable=True)
            yield Delta("never")

    report = await check_provider(Words(), failing_provider=Refuses())
    assert report.passed
