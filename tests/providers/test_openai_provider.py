"""The ``openai`` provider against a real OpenAI-compatible upstream: llama.cpp's own server
(``python -m llama_cpp.server``) running the bundled SmolLM2 GGUF in a subprocess.

Nothing of the openai SDK is mocked. The upstream failures are real too: a closed port, a wrong
path, a parameter llama.cpp refuses, a prompt longer than its context, a socket that never
answers, and a hand-written upstream that cuts its connection mid-stream.

Observed with llama-cpp-python 0.3.x (see the ``upstream_usage`` fixture and the close test):
llama.cpp's server ignores ``stream_options.include_usage`` (no usage chunk), answers request
validation failures with 500, notices a client that went away within a token and stops
generating, and ends a stream with ``[DONE]`` but no ``finish_reason`` when it interrupts it
for a newer request, or with an empty 200 body when the prompt does not fit its context.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import free_port, serve, wait_for
from tokenwire.app import create_app
from tokenwire.errors import ErrorCode, ProviderError, ProviderTimeout
from tokenwire.protocol.events import (
    ErrorEvent,
    FinishReason,
    StreamEnd,
    StreamStart,
    TextDelta,
    Usage,
)
from tokenwire.protocol.requests import ChatMessage, GenerateParams
from tokenwire.providers.base import Delta, Finish, ProviderEvent
from tokenwire.providers.local import bundled_model_path
from tokenwire.providers.openai import OpenAIProvider, translate_error
from tokenwire.settings import Settings
from tokenwire_client import AsyncClient

try:  # the HTTP library the installed SDK is built on: httpx2 from openai 3, httpx before
    import httpx2 as sdk_http
except ImportError:  # pragma: no cover - openai < 3
    sdk_http = httpx  # type: ignore[no-redef]

pytestmark = pytest.mark.local_model

MODEL = "smollm2-135m-instruct"  # the alias the llama.cpp server is started with
USER = [{"role": "user", "content": "Tell me about the sea."}]
STORY = [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]
DISCONNECTED = "Disconnected from client"  # what llama_cpp.server prints when it stops a stream
FINISHED = (FinishReason.STOP, FinishReason.LENGTH)
DEADLINE = 30.0  # seconds; any stream or exchange taking longer fails instead of hanging


# -- the upstream: a real llama.cpp server -------------------------------------------------------


@dataclass
class Upstream:
    process: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def output(self) -> str:
        return self.stdout.read_text(errors="replace")

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace")[-4000:]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """``python -m llama_cpp.server`` with the bundled model on a free port, for the module."""
    logs = tmp_path_factory.mktemp("llama-server")
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(bundled_model_path()),
        "--model_alias", MODEL,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "2048",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its disconnect prints reach the log at once
    with open(logs / "stdout.log", "wb") as out, open(logs / "stderr.log", "wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
    server = Upstream(process, port, logs / "stdout.log", logs / "stderr.log")
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"llama_cpp.server exited with {process.returncode}:\n{server.errors()}"
                )
            try:
                if httpx.get(f"{server.base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer in 60 s:\n{server.errors()}")
            time.sleep(0.1)
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def upstream_usage(upstream: Upstream) -> dict[str, int] | None:
    """The usage chunk llama.cpp sends for ``USER`` when asked with ``include_usage``, read
    from the raw SSE (None when it sends none: llama-cpp-python 0.3.x sends none)."""
    body = {
        "model": MODEL,
        "messages": USER,
        "max_tokens": 24,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    usage = None
    url = f"{upstream.base_url}/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=30) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                usage = json.loads(line.removeprefix("data: ")).get("usage") or usage
    return usage


# -- helpers ------------------------------------------------------------------------------------


def params(messages: list[dict[str, str]] = USER, **fields: Any) -> GenerateParams:
    return GenerateParams.model_validate(
        {"messages": messages, "max_tokens": 24, "temperature": 0, **fields}
    )


def provider_for(base_url: str, **options: Any) -> OpenAIProvider:
    return OpenAIProvider(base_url=base_url, api_key=None, model=MODEL, **options)


async def outcome(
    events: AsyncIterator[ProviderEvent], within: float = DEADLINE
) -> tuple[list[ProviderEvent], Any]:
    """Everything a stream yields, and the exception it ended with (None if none). A stream
    still open after ``within`` seconds fails the test instead of hanging it."""
    items: list[ProviderEvent] = []
    deadline = asyncio.timeout(within)
    try:
        async with deadline, contextlib.aclosing(events) as stream:  # type: ignore[type-var]
            async for item in stream:
                items.append(item)
    except Exception as exc:  # noqa: BLE001 - returned to be asserted on
        if deadline.expired():
            raise AssertionError(f"stream still open after {within} s: {items!r}") from exc
        return items, exc
    return items, None


def check_real_text(items: list[ProviderEvent]) -> tuple[list[Delta], Finish]:
    """A normal stream: >= 10 deltas of readable text, then exactly one Finish, last."""
    *deltas, finish = items
    assert all(isinstance(d, Delta) for d in deltas), items
    assert isinstance(finish, Finish), items
    assert finish.reason in FINISHED
    assert 10 <= len(deltas) <= 24  # one token per chunk at most, max_tokens=24
    text = "".join(d.text for d in deltas)  # type: ignore[union-attr]
    assert sum(c.isalpha() for c in text) >= 20 and " " in text.strip(), text
    if finish.reason is FinishReason.STOP:
        assert len(deltas) < 24
    return deltas, finish  # type: ignore[return-value]


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog does) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@contextlib.asynccontextmanager
async def breaking_upstream(text: str) -> AsyncIterator[int]:
    """An HTTP server that starts a chat-completion stream, sends ``text`` and drops the TCP
    connection without ending the response (a crashed or restarted upstream)."""
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    body = f"data: {json.dumps(chunk)}\n\n".encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(body), body)
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


class Forwarder:
    """A TCP relay from ``port`` to ``target``: brings an upstream address back to life."""

    def __init__(self, port: int, target: int) -> None:
        self.port = port
        self.target = target
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Forwarder:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


# -- provider level -----------------------------------------------------------------------------


async def test_stream_yields_real_text_then_one_finish(upstream, upstream_usage):
    async with provider_for(upstream.base_url) as provider:
        items, error = await outcome(provider.stream(params(), MODEL))
    assert error is None
    deltas, finish = check_real_text(items)
    # The provider asks for include_usage and must agree with whatever the upstream sent.
    # llama-cpp-python 0.3.x sends no usage chunk: Finish.usage is then None (the stream
    # layer counts the deltas instead).
    if upstream_usage is None:
        assert finish.usage is None
    else:
        expected = Usage.of(upstream_usage["prompt_tokens"], upstream_usage["completion_tokens"])
        assert finish.usage == expected


async def test_any_model_id_is_passed_through(upstream):
    # resolve_model leaves model ids to the upstream; llama.cpp's single-model server serves
    # its one model under any id.
    async with provider_for(upstream.base_url) as provider:
        model = provider.resolve_model("some-other-model")
        items, error = await outcome(provider.stream(params(), model))
    assert (model, error) == ("some-other-model", None)
    check_real_text(items)


async def test_closing_early_returns_at_once_and_stops_the_upstream(upstream):
    async with provider_for(upstream.base_url) as provider, asyncio.timeout(DEADLINE):
        disconnects = upstream.output().count(DISCONNECTED)
        events = provider.stream(params(STORY, max_tokens=1000), MODEL)
        deltas = 0
        async for item in events:
            deltas += isinstance(item, Delta)
            if deltas == 3:
                break
        started = time.monotonic()
        await events.aclose()  # type: ignore[attr-defined]
        assert time.monotonic() - started < 0.25
        # llama.cpp sees the connection go (it checks after every chunk) and leaves its
        # generation loop within a few tokens; the 1000 tokens would take ~15 s.
        await wait_for(lambda: upstream.output().count(DISCONNECTED) > disconnects, 3)
        items, error = await outcome(provider.stream(params(), MODEL))
    assert error is None
    check_real_text(items)


async def test_closed_port_is_a_retryable_provider_error_naming_the_upstream():
    url = f"http://127.0.0.1:{free_port()}/v1"
    async with provider_for(url) as provider:
        items, error = await outcome(provider.stream(params(), MODEL))
    assert items == []
    assert type(error) is ProviderError
    assert error.retryable is True and error.code is ErrorCode.PROVIDER_ERROR
    assert f"upstream {url}" in error.message and "unreachable" in error.message
    assert isinstance(error.__cause__, openai.APIConnectionError)


async def test_upstream_4xx_is_not_retryable(upstream):
    # A wrong path: llama.cpp answers 404.
    async with provider_for(upstream.base_url.removesuffix("/v1") + "/nope") as provider:
        items, error = await outcome(provider.stream(params(), MODEL))
    assert items == []
    assert type(error) is ProviderError
    assert error.retryable is False
    assert "upstream answered 404" in error.message
    assert isinstance(error.__cause__, openai.NotFoundError)


async def test_parameter_llama_cpp_refuses_is_its_500_and_so_retryable(upstream):
    # llama.cpp validates requests with pydantic but answers a validation failure with 500
    # (its route error handler), so tokenwire can only call it retryable. top_p=5 slips past
    # GenerateParams' own validation only through model_construct.
    bad = GenerateParams.model_construct(
        messages=[ChatMessage(role="user", content="Hi")], max_tokens=3, top_p=5.0
    )
    async with provider_for(upstream.base_url) as provider:
        items, error = await outcome(provider.stream(bad, MODEL))
    assert items == []
    assert type(error) is ProviderError
    assert error.retryable is True
    assert "upstream answered 500" in error.message and "top_p" in error.message


async def test_upstream_that_never_answers_is_a_provider_timeout():
    with silent_listener() as port:
        async with provider_for(f"http://127.0.0.1:{port}/v1", timeout=0.3) as provider:
            started = time.monotonic()
            items, error = await outcome(provider.stream(params(), MODEL))
            elapsed = time.monotonic() - started
    assert items == []
    assert type(error) is ProviderTimeout
    assert error.retryable is True and error.code is ErrorCode.PROVIDER_TIMEOUT
    assert "timed out" in error.message
    assert 0.25 < elapsed < 5


async def test_connection_dropped_mid_stream_after_text_is_a_retryable_error():
    async with breaking_upstream("Hello") as port:
        async with provider_for(f"http://127.0.0.1:{port}/v1") as provider:
            items, error = await outcome(provider.stream(params(), MODEL))
    assert items == [Delta("Hello")]  # no Finish: the stream failed
    assert isinstance(error, ProviderError)
    assert error.retryable is True


async def test_stream_ended_without_finish_reason_is_not_a_clean_stop(upstream):
    """BUG (server/tokenwire/providers/openai.py, last line of OpenAIProvider._run):
    ``yield Finish(finish or FinishReason.STOP, usage)`` turns an upstream stream that ended
    without any ``finish_reason`` into a clean stop. llama.cpp's server does exactly that when
    the prompt exceeds its context while streaming: it answers 200 with an empty body (the
    ValueError is raised inside its stream), and tokenwire reports an empty, successful
    generation (finish_reason stop, no error event)."""
    too_long = [{"role": "user", "content": "hello " * 3000}]  # ~3000 tokens > n_ctx 2048
    async with provider_for(upstream.base_url) as provider:
        items, error = await outcome(provider.stream(params(too_long, max_tokens=3), MODEL))
    assert all(not isinstance(item, Delta) for item in items)
    assert isinstance(error, ProviderError), (
        "BUG: the upstream ended the stream without a finish_reason (llama.cpp: prompt longer "
        f"than n_ctx) and the provider reported {items!r} instead of raising ProviderError"
    )


async def test_stream_interrupted_by_the_upstream_is_not_a_clean_stop(upstream):
    """Same BUG as above, second trigger: llama.cpp's server (interrupt_requests, on by
    default) ends a running stream with ``[DONE]`` and no ``finish_reason`` when another request
    arrives. The truncated first stream is reported as finish_reason stop."""
    async with provider_for(upstream.base_url) as provider:
        first: list[ProviderEvent] = []

        async def run_first() -> Any:
            try:
                async for item in provider.stream(params(STORY, max_tokens=300), MODEL):
                    first.append(item)
            except Exception as exc:  # noqa: BLE001 - returned to be asserted on
                return exc
            return None

        async with asyncio.timeout(DEADLINE):
            task = asyncio.create_task(run_first())
            await wait_for(lambda: sum(isinstance(i, Delta) for i in first) >= 3, 20)
            items, second_error = await outcome(provider.stream(params(), MODEL))
            first_error = await task
    assert second_error is None
    check_real_text(items)
    deltas = [item for item in first if isinstance(item, Delta)]
    assert len(deltas) < 300
    assert isinstance(first_error, ProviderError), (
        f"BUG: llama.cpp cut the first stream after {len(deltas)} tokens without a "
        f"finish_reason and the provider reported {first[-1]!r} instead of raising ProviderError"
    )


# -- translate_error on real SDK exceptions -----------------------------------------------------

URL = "http://upstream.test/v1/chat/completions"
STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    408: openai.APIStatusError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
    500: openai.InternalServerError,
    502: openai.InternalServerError,
    503: openai.InternalServerError,
}
RETRYABLE = {408, 409, 429, 500, 502, 503}


def request() -> Any:
    return sdk_http.Request("POST", URL)


@pytest.mark.parametrize("status", sorted(STATUS_ERRORS))
def test_translate_error_maps_status_codes(status):
    body = {"error": {"message": f"the upstream says {status}", "type": "x"}}
    response = sdk_http.Response(status, json=body, request=request())
    exc = STATUS_ERRORS[status](f"Error code: {status} - {body}", response=response, body=body)
    assert exc.status_code == status
    error = translate_error(exc)
    assert type(error) is ProviderError
    assert error.code is ErrorCode.PROVIDER_ERROR
    assert error.retryable is (status in RETRYABLE)
    assert f"upstream answered {status}" in error.message
    assert f"the upstream says {status}" in error.message


def test_translate_error_timeout_is_provider_timeout():
    error = translate_error(openai.APITimeoutError(request=request()))
    assert type(error) is ProviderTimeout
    assert error.retryable is True and error.code is ErrorCode.PROVIDER_TIMEOUT
    assert "timed out" in error.message


def test_translate_error_connection_failure_is_retryable_and_names_the_upstream():
    error = translate_error(
        openai.APIConnectionError(request=request()), "upstream http://10.9.8.7:1/v1"
    )
    assert type(error) is ProviderError
    assert error.retryable is True
    assert "upstream http://10.9.8.7:1/v1 unreachable" in error.message


def test_translate_error_error_inside_the_stream_is_not_retryable():
    # What the SDK raises for a ``data: {"error": ...}`` chunk in the middle of a stream.
    exc = openai.APIError("model overloaded", request(), body={"message": "model overloaded"})
    error = translate_error(exc)
    assert type(error) is ProviderError
    assert error.retryable is False and "model overloaded" in error.message


# -- end to end: tokenwire (openai provider) -> llama.cpp server --------------------------------


def openai_app(base_url: str) -> Any:
    return create_app(Settings(provider="openai", openai_base_url=base_url, model=MODEL))


async def test_end_to_end_streams_llama_cpp_text(upstream, upstream_usage, transport):
    with serve(openai_app(upstream.base_url)) as server:
        async with (
            asyncio.timeout(DEADLINE),
            AsyncClient(server.base_url, transport=transport) as client,
        ):
            events = [e async for e in client.stream(USER, max_tokens=24, temperature=0)]
    start, *middle, end = events
    assert isinstance(start, StreamStart) and start.model == MODEL
    assert all(isinstance(e, TextDelta) for e in middle), events
    assert end.seq - start.seq - 1 >= 10  # deltas published (a burst may arrive merged)
    text = "".join(e.delta for e in middle)
    assert sum(c.isalpha() for c in text) >= 20, text
    assert isinstance(end, StreamEnd) and end.finish_reason in FINISHED
    seqs = [e.seq for e in events]
    assert seqs[0] == 1 and seqs == sorted(set(seqs))
    assert end.usage is not None
    if upstream_usage is None:  # counted from the deltas; the prompt is unknown
        assert end.usage == Usage.of(0, len(middle))
    else:
        assert end.usage.completion_tokens == upstream_usage["completion_tokens"]


async def test_end_to_end_upstream_down_is_an_error_then_the_end(upstream, transport):
    port = free_port()  # nothing listens here until the Forwarder below
    with serve(openai_app(f"http://127.0.0.1:{port}/v1")) as server:
        async with (
            asyncio.timeout(DEADLINE),
            AsyncClient(server.base_url, transport=transport) as client,
        ):
            events = [e async for e in client.stream(USER, max_tokens=24)]
            health = await client.http.get(f"{server.base_url}/healthz")
            # the upstream comes back: the same server and provider stream again
            async with Forwarder(port, upstream.port):
                again = [e async for e in client.stream(USER, max_tokens=24, temperature=0)]
    start, error, end = events
    assert isinstance(start, StreamStart)
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.retryable) == ("provider_error", True)
    assert "unreachable" in error.message
    assert isinstance(end, StreamEnd) and end.finish_reason == "error"
    assert error.seq < end.seq and error.stream_id == end.stream_id == start.stream_id
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["live_streams"] == 0
    assert isinstance(again[-1], StreamEnd) and again[-1].finish_reason in FINISHED
    assert sum(isinstance(e, TextDelta) for e in again) >= 10
