"""``/v1/chat/completions`` and ``/v1/models`` driven by the official ``openai`` SDK, unmodified,
against a real uvicorn on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.helpers import UvicornThread, asgi_client, scripted_app, serve
from tokenwire.providers.scripted import Script, scripted_text

USER = [{"role": "user", "content": "Say something"}]


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornThread]:
    def script_for(params):
        content = params.messages[-1].content
        return Script(tokens=30, error_after=4 if content == "fail" else None)

    app, provider = scripted_app()
    provider.script_for = script_for
    with serve(app) as running:
        yield running


def sdk(server: UvicornThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def async_sdk(server: UvicornThread) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def test_sync_sdk_streams_with_usage(server):
    with sdk(server) as client:
        stream = client.chat.completions.create(
            model="scripted", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == scripted_text(30)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage.completion_tokens == 30
    assert usage_chunk.usage.prompt_tokens == 2
    assert usage_chunk.usage.total_tokens == 32
    assert all(c.usage is None for c in chunks[:-1])


async def test_async_sdk_streams_and_honours_max_tokens(server):
    async with async_sdk(server) as client:
        stream = await client.chat.completions.create(
            model="scripted", messages=USER, stream=True, max_tokens=7
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == scripted_text(7)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)  # no include_usage: no usage chunk


async def test_async_sdk_non_streamed_completion(server):
    async with async_sdk(server) as client:
        completion = await client.chat.completions.create(model="scripted", messages=USER)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == scripted_text(30)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 30


def test_models_lists_the_provider_model(server):
    with sdk(server) as client:
        models = client.models.list()
    assert [m.id for m in models.data] == ["scripted"]
    assert models.data[0].owned_by == "tokenwire"


def test_unknown_model_is_a_404_in_openai_shape(server):
    with sdk(server) as client, pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-17", messages=USER, stream=True)
    body = caught.value.body
    assert body["code"] == "not_found" and "gpt-17" in body["message"]


def test_invalid_field_is_a_422_naming_it(server):
    with sdk(server) as client, pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(model="scripted", messages=USER, temperature=5)
    assert "temperature" in caught.value.body["message"]


def test_provider_failure_mid_stream_raises_in_the_sdk(server):
    with sdk(server) as client:
        stream = client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "fail"}], stream=True
        )
        received = []
        with pytest.raises(openai.APIError, match="scripted failure after 4 tokens"):
            for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == scripted_text(4)


def test_provider_failure_without_streaming_is_a_502(server):
    with sdk(server) as client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "fail"}]
        )
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "provider_error"


async def test_non_json_body_is_a_400_in_openai_shape():
    app, _ = scripted_app(Script(tokens=2))
    async with asgi_client(app) as http:
        response = await http.post("/v1/chat/completions", content=b"{not json")
        missing = await http.post("/v1/chat/completions", json={"model": "scripted"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in response.json()["error"]["message"]
    assert missing.status_code == 422
    assert "messages: Field required" in missing.json()["error"]["message"]


async def test_unknown_route_and_method_are_json_errors():
    app, _ = scripted_app(Script(tokens=2))
    async with asgi_client(app) as http:
        missing = await http.get("/v1/nope")
        wrong_method = await http.get("/v1/streams")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert isinstance(wrong_method.json()["error"]["message"], str)


async def test_sse_headers(server):
    async with httpx.AsyncClient() as http:
        async with http.stream(
            "POST", server.base_url + "/v1/streams", json={"messages": USER}
        ) as response:
            await response.aread()
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-stream-id"].startswith("str_")
    assert b"event: stream.end" in response.content
