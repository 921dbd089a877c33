"""The local provider: the bundled SmolLM2 GGUF through llama.cpp, for real.

Streams real model text through SSE, WebSocket and /v1/chat/completions over a real uvicorn;
checks that closing stops llama.cpp within a token and that generation never blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import aclosing

import openai
import pytest

from tests.helpers import UvicornThread, serve
from tokenwire.app import create_app
from tokenwire.errors import ProviderError
from tokenwire.protocol.events import TextDelta
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import Delta, Finish, Prompt
from tokenwire.providers.local import LocalProvider, bundled_model_path, model_id
from tokenwire.settings import Settings
from tokenwire_client import AsyncClient

pytestmark = pytest.mark.local_model

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
MODEL = "smollm2-135m-instruct.q4_1"


def params(max_tokens: int = 32) -> GenerateParams:
    return GenerateParams.model_validate(
        {"messages": PROMPT, "max_tokens": max_tokens, "temperature": 0, "seed": 1}
    )


@pytest.fixture(scope="module")
def local_server() -> Iterator[UvicornThread]:
    with serve(create_app(Settings(provider="local"))) as server:
        yield server


def test_the_bundled_model_ships_in_the_wheel():
    path = bundled_model_path()
    assert path.is_file() and path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000
    assert model_id(path) == MODEL


@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_local_model_streams_real_text(local_server, transport):
    async with AsyncClient(local_server.base_url, transport=transport) as client:
        events = [e async for e in client.stream(PROMPT, max_tokens=40, temperature=0, seed=1)]
    deltas = [e for e in events if isinstance(e, TextDelta)]
    text = "".join(d.delta for d in deltas)
    assert events[0].type == "stream.start" and events[0].model == MODEL
    assert len(deltas) >= 20
    assert len(text.split()) >= 10 and any(c.isalpha() for c in text)
    end = events[-1]
    assert end.finish_reason in ("stop", "length")
    assert end.usage.completion_tokens == len(deltas)
    assert end.usage.prompt_tokens > 10  # the chat template adds a system turn


def test_local_model_through_the_openai_sdk(local_server):
    with openai.OpenAI(base_url=local_server.base_url + "/v1", api_key="unused") as client:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=PROMPT,
            stream=True,
            max_tokens=40,
            temperature=0,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) >= 20
    assert chunks[-1].usage.completion_tokens == len(pieces)


async def test_same_seed_same_text_on_both_transports(local_server):
    texts = []
    for transport in ("sse", "websocket"):
        async with AsyncClient(local_server.base_url, transport=transport) as client:
            texts.append(await client.text(PROMPT, max_tokens=24, temperature=0, seed=7))
    assert texts[0] == texts[1] and texts[0]


async def test_closing_stops_llama_within_a_token():
    provider = LocalProvider()
    async with provider:
        stream = provider.stream(params(max_tokens=400), MODEL)
        items = []
        async with aclosing(stream):
            async for item in stream:
                items.append(item)
                if sum(isinstance(i, Delta) for i in items) == 3:
                    started = time.monotonic()
                    break
        closed_in = time.monotonic() - started
        assert isinstance(items[0], Prompt) and items[0].tokens > 10
        assert not any(isinstance(i, Finish) for i in items)
        # the model is free again at once: a second stream runs to its end
        second = [item async for item in provider.stream(params(max_tokens=5), MODEL)]
    assert isinstance(second[-1], Finish) and second[-1].usage.completion_tokens == 5
    assert closed_in < 2.0  # generous bound on a shared machine; the benchmark measures it


async def test_generation_never_blocks_the_event_loop(caplog):
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05  # asyncio logs every callback that runs longer
    caplog.set_level(logging.WARNING, logger="asyncio")
    await asyncio.sleep(0)  # debug applies from the next step: time every step that follows
    provider = LocalProvider()
    try:
        async with provider:
            items = [item async for item in provider.stream(params(max_tokens=48), MODEL)]
    finally:
        loop.set_debug(False)
    assert sum(isinstance(i, Delta) for i in items) >= 20
    slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert slow == []


async def test_a_missing_gguf_is_a_clear_error(tmp_path):
    provider = LocalProvider(tmp_path / "nope.gguf")
    with pytest.raises(ProviderError, match="model file not found"):
        await provider.start()
