"""Your own async generator as the provider (``FunctionProvider``): what it yields becomes the
stream, closing the stream closes the generator, its exceptions become ``provider_error``, and
usage is counted when it reports none. In-process, and for real: a module in a temporary
directory served by a ``tokenwire serve --provider user_model:generate`` process over SSE and
WebSocket, where cancelling a stream runs the generator's ``finally`` (it writes a file)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ServerProcess, asgi_client, wait_for
from tokenwire.app import create_app
from tokenwire.errors import ErrorCode, ProviderError
from tokenwire.protocol.events import FinishReason, Usage
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers import FunctionProvider, ProviderLoadError, as_provider
from tokenwire.providers.base import (
    Delta,
    Finish,
    Prompt,
    ProviderEvent,
    Reasoning,
    ToolArguments,
    ToolCall,
)
from tokenwire.settings import Settings
from tokenwire_client import AsyncClient

USER_MODULE = '''\
"""A user's model code: echoes the last message word by word."""

import asyncio
from pathlib import Path

CLOSED = Path(__file__).with_name("closed.log")


async def generate(params):
    words = params.messages[-1].content.split()
    try:
        if words[0] == "forever":  # streams until the stream is closed
            index = 0
            while True:
                await asyncio.sleep(0.02)
                yield f"tick{index} "
                index += 1
        for index, word in enumerate(words):
            await asyncio.sleep(0)
            yield word if index == 0 else " " + word
    finally:
        with CLOSED.open("a") as log:
            log.write(" ".join(words) + "\\n")
'''


def params(text: str = "one two three", **fields: Any) -> GenerateParams:
    return GenerateParams.model_validate(
        {"messages": [{"role": "user", "content": text}], **fields}
    )


async def run(provider: FunctionProvider, request: GenerateParams) -> list[ProviderEvent]:
    async with aclosing(provider.stream(request, provider.models[0])) as stream:
        return [item async for item in stream]


async def echo(request: GenerateParams) -> AsyncIterator[str]:
    for index, word in enumerate(request.messages[-1].content.split()):
        yield word if index == 0 else " " + word


# -- in-process ------------------------------------------------------------------------------


async def test_text_becomes_deltas_and_usage_is_counted():
    items = await run(FunctionProvider(echo), params("one two three"))
    assert items == [
        Delta("one"),
        Delta(" two"),
        Delta(" three"),
        Finish(FinishReason.STOP, Usage.of(3, 3)),  # prompt: words of the messages
    ]


async def test_count_tokens_counts_text_and_prompt():
    provider = FunctionProvider(echo, count_tokens=len)  # one "token" per character
    items = await run(provider, params("ab cd"))
    assert items[-1] == Finish(FinishReason.STOP, Usage.of(5, 5))
    assert items[:2] == [Delta("ab", 2), Delta(" cd", 3)]


async def test_max_tokens_closes_the_generator_and_finishes_with_length():
    closed: list[int] = []

    async def endless(request: GenerateParams) -> AsyncIterator[str]:
        index = 0
        try:
            while True:
                yield f"t{index} "
                index += 1
        finally:
            closed.append(index)

    items = await run(FunctionProvider(endless), params("hi", max_tokens=4))
    assert [i.text for i in items if isinstance(i, Delta)] == ["t0 ", "t1 ", "t2 ", "t3 "]
    assert items[-1] == Finish(FinishReason.LENGTH, Usage.of(1, 4))
    assert closed == [3]  # closed at its fourth yield: nothing more was generated


async def test_closing_the_stream_runs_the_generators_finally():
    closed = asyncio.Event()

    async def slow(request: GenerateParams) -> AsyncIterator[str]:
        try:
            while True:
                await asyncio.sleep(0)
                yield "x"
        finally:
            closed.set()

    provider = FunctionProvider(slow)
    stream = provider.stream(params(), "slow")
    assert await anext(stream) == Delta("x")
    await stream.aclose()
    assert closed.is_set()


async def test_cancelling_the_reader_runs_the_generators_finally():
    closed = asyncio.Event()
    waiting = asyncio.Event()

    async def upstream(request: GenerateParams) -> AsyncIterator[str]:
        try:
            yield "first"
            waiting.set()
            await asyncio.Event().wait()  # an upstream call that never answers
            yield "never"
        finally:
            closed.set()

    provider = FunctionProvider(upstream)

    async def read() -> None:
        async with aclosing(provider.stream(params(), "upstream")) as stream:
            async for _ in stream:
                pass

    reader = asyncio.create_task(read())
    await waiting.wait()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert closed.is_set()


async def test_an_exception_becomes_a_provider_error_that_names_the_function():
    async def broken(request: GenerateParams) -> AsyncIterator[str]:
        yield "partial"
        raise KeyError("secret-token-123")

    stream = FunctionProvider(broken).stream(params(), "broken")
    assert await anext(stream) == Delta("partial")
    with pytest.raises(ProviderError) as error:
        await anext(stream)
    assert error.value.code is ErrorCode.PROVIDER_ERROR and not error.value.retryable
    assert error.value.message == (
        "provider function tests.providers.test_function:"
        "test_an_exception_becomes_a_provider_error_that_names_the_function.<locals>.broken "
        "raised KeyError"
    )
    assert "secret" not in error.value.message  # the exception's text stays in the log
    assert isinstance(error.value.__cause__, KeyError)


async def test_a_provider_error_passes_through_as_raised():
    async def refuses(request: GenerateParams) -> AsyncIterator[str]:
        raise ProviderError("quota exhausted", retryable=True)
        yield "never"

    with pytest.raises(ProviderError) as error:
        await run(FunctionProvider(refuses), params())
    assert error.value.message == "quota exhausted" and error.value.retryable


async def test_rich_events_and_the_functions_own_usage_pass_through():
    async def agent(request: GenerateParams) -> AsyncIterator[str | ProviderEvent]:
        yield Prompt(11)
        yield Reasoning("Look it up.")
        yield ToolCall(0, "call_1", "search")
        yield ToolArguments(0, '{"q": "sea"}', tokens=5)
        yield Finish(FinishReason.TOOL_CALLS, Usage.of(11, 7))

    items = await run(FunctionProvider(agent), params())
    assert items == [
        Prompt(11),
        Reasoning("Look it up."),
        ToolCall(0, "call_1", "search"),
        ToolArguments(0, '{"q": "sea"}', tokens=5),
        Finish(FinishReason.TOOL_CALLS, Usage.of(11, 7)),
    ]


async def test_a_finish_without_usage_gets_the_counted_one():
    async def stops(request: GenerateParams) -> AsyncIterator[str | ProviderEvent]:
        yield Prompt(9)
        yield "a"
        yield "b"
        yield Finish(FinishReason.CONTENT_FILTER)

    items = await run(FunctionProvider(stops), params())
    assert items[-1] == Finish(FinishReason.CONTENT_FILTER, Usage.of(9, 2))


async def test_yielding_something_else_is_a_provider_error():
    async def wrong(request: GenerateParams) -> AsyncIterator[Any]:
        yield {"text": "a dict"}

    with pytest.raises(ProviderError, match="yielded a dict; expected str, Delta"):
        await run(FunctionProvider(wrong), params())


def test_only_async_generator_functions_are_wrapped():
    async def returns(request: GenerateParams) -> str:
        return "text"

    with pytest.raises(TypeError, match="is not an async generator function"):
        FunctionProvider(returns)  # type: ignore[arg-type]  # the misuse under test
    with pytest.raises(ProviderLoadError, match="an `async def` that returns; it must `yield`"):
        as_provider(returns, Settings())


def test_the_model_id_is_the_functions_name_or_the_model_setting():
    assert as_provider(echo, Settings()).models == ["echo"]
    assert as_provider(echo, Settings(model="my-model")).models == ["my-model"]
    assert FunctionProvider(echo, models=["a", "b"]).resolve_model(None) == "a"


async def test_create_app_serves_a_function_in_process():
    async def broken(request: GenerateParams) -> AsyncIterator[str]:
        yield "half"
        raise RuntimeError("boom")

    async with asgi_client(create_app(Settings(), provider=echo)) as client:
        body = {"messages": [{"role": "user", "content": "sea and sky"}], "model": "echo"}
        response = await client.post("/v1/chat/completions", json=body)
    assert response.json()["choices"][0]["message"]["content"] == "sea and sky"
    assert response.json()["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 3,
        "total_tokens": 6,
    }
    async with asgi_client(create_app(Settings(), provider=broken)) as client:
        response = await client.post("/v1/streams", json={**body, "model": None})
    assert "event: error" in response.text
    assert '"code":"provider_error"' in response.text
    assert "raised RuntimeError" in response.text and "boom" not in response.text


# -- a real `tokenwire serve --provider module:attribute` process ----------------------------


@pytest.fixture(scope="module")
def user_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    folder = tmp_path_factory.mktemp("user-code")
    (folder / "user_model.py").write_text(USER_MODULE)
    server = ServerProcess(folder, "serve", cwd=folder, provider="user_model:generate")
    server.start()
    try:
        yield server, folder
    finally:
        server.stop()


async def test_served_function_streams_the_exact_text(user_server, transport):
    server, _ = user_server
    text = f"the quick brown fox over {transport}"
    async with AsyncClient(server.base_url, transport=transport) as client:
        stream = client.stream([{"role": "user", "content": text}], max_tokens=50)
        events = [event async for event in stream]
        health = (await client.http.get(server.base_url + "/healthz")).json()
    assert stream.text == text
    assert events[0].type == "stream.start" and events[0].model == "generate"
    assert stream.end is not None and stream.end.finish_reason == FinishReason.STOP
    assert stream.end.usage == Usage.of(6, 6)
    assert health["provider"] == "function"


async def test_cancel_closes_the_served_generator(user_server, transport):
    server, folder = user_server
    closed = folder / "closed.log"
    tag = f"forever {transport}"
    async with AsyncClient(server.base_url, transport=transport) as client:
        stream = client.stream([{"role": "user", "content": tag}], max_tokens=1000)
        async with stream:
            async for event in stream:
                if event.type == "text.delta" and stream.text.count("tick") == 3:
                    await stream.cancel()
        assert stream.end is not None and stream.end.finish_reason == FinishReason.CANCELLED
        assert stream.end.usage is not None and stream.end.usage.completion_tokens >= 3
    # the generator's finally ran in the server process
    await wait_for(lambda: closed.exists() and tag in closed.read_text().splitlines())
    assert stream.text.startswith("tick0 tick1 tick2 ")


def test_the_server_refuses_a_model_the_function_does_not_serve(user_server):
    server, _ = user_server
    body = {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o"}
    response = httpx.post(server.base_url + "/v1/streams", json=body)
    assert response.status_code == 404
    assert "model 'gpt-4o' is not served by provider 'function'" in response.text
