"""Non-streamed chat completions (``stream`` unset): the collect transport, driven by the
official ``openai`` SDK against real ``tokenwire serve`` processes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.helpers import ServerProcess
from tokenwire.providers.scripted import scripted_text

LOCAL_MODEL = "smollm2-135m-instruct.q4_1"
USER = [{"role": "user", "content": "Say something"}]


def sdk(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def scripted_server(tmp_path, request) -> Iterator[ServerProcess]:
    interval = request.param
    server = ServerProcess(
        tmp_path,
        f"scripted-{interval}",
        provider="scripted",
        scripted_tokens=20,
        scripted_interval=interval,
    ).start()
    yield server
    server.stop()


@pytest.mark.parametrize("scripted_server", [0, 0.001, 0.005, 0.02], indirect=True)
def test_a_non_streamed_completion_is_whole_at_any_token_pace(scripted_server):
    """A token that arrives while the collector waits must be kept like any other (it once
    went down the pump's write-at-once path and the answer was a 500)."""
    with sdk(scripted_server) as client:
        streamed = client.chat.completions.create(model="scripted", messages=USER, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == (
            scripted_text(20)
        )
        for _ in range(3):
            completion = client.chat.completions.create(model="scripted", messages=USER)
            assert completion.choices[0].message.content == scripted_text(20)
            assert completion.choices[0].finish_reason == "stop"
            assert completion.usage is not None and completion.usage.completion_tokens == 20
    assert "Traceback" not in scripted_server.log()


def ended(server: ServerProcess, finish_reason: str) -> float:
    text = httpx.get(server.base_url + "/metrics").text
    labels = f'finish_reason="{finish_reason}",transport="openai"'
    prefix = "tokenwire_streams_ended_total{" + labels + "} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


def test_a_client_that_leaves_stops_the_generation(tmp_path):
    server = ServerProcess(
        tmp_path, "slow", provider="scripted", scripted_tokens=400, scripted_interval=0.05
    ).start()
    try:
        body = {"model": "scripted", "messages": USER}
        with pytest.raises(httpx.ReadTimeout):  # 20 s of tokens; the client gives up at 0.5 s
            httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=0.5)
        deadline = time.monotonic() + 5
        while ended(server, "cancelled") < 1:
            assert time.monotonic() < deadline, "the generation ran on after the client left"
            time.sleep(0.05)
        assert ended(server, "stop") == 0
    finally:
        server.stop()


@pytest.mark.local_model
def test_a_non_streamed_completion_on_the_local_model(tmp_path):
    server = ServerProcess(tmp_path, "local", provider="local").start()
    try:
        with sdk(server) as client:
            options = {"temperature": 0, "seed": 7, "max_tokens": 16}
            streamed = client.chat.completions.create(
                model=LOCAL_MODEL, messages=USER, stream=True, **options
            )
            text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
            completion = client.chat.completions.create(model=LOCAL_MODEL, messages=USER, **options)
        assert text and completion.choices[0].message.content == text
        assert completion.choices[0].finish_reason in ("stop", "length")
        assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 16
    finally:
        server.stop()
