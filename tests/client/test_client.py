"""tokenwire_client against a real uvicorn, on both transports: text and state, cancel, typed
errors, the blocking wrapper, and resume: connections cut mid-stream, eviction, stream.reset,
a restart with an in-memory log (reset) and one behind the same address with the Redis log."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import pytest

from tests.helpers import (
    ServerProcess,
    UvicornThread,
    free_port,
    scripted_app,
    serve,
    wait_for,
)
from tokenwire.protocol.events import StreamEnd, StreamResumed, StreamStart, TextDelta
from tokenwire.providers.scripted import Script, scripted_text
from tokenwire_client import (
    AsyncClient,
    Client,
    ConnectionLost,
    Reconnect,
    ServerError,
    StreamFailed,
    StreamReset,
)

USER = [{"role": "user", "content": "Tell me something"}]
FAST = Reconnect(attempts=4, initial=0.01, maximum=0.05, jitter=0.01)


def drop_connections(server: UvicornThread) -> int:
    """Cut every open connection of ``server`` at the TCP level, as a network failure would."""

    def abort() -> int:
        connections = list(server.server.server_state.connections)
        for connection in connections:
            connection.transport.abort()
        return len(connections)

    return int(server.call(abort))


async def test_stream_yields_typed_events_and_keeps_the_text(transport):
    app, _ = scripted_app(Script(tokens=30))
    with serve(app) as server:
        async with AsyncClient(server.base_url, transport=transport) as client:
            async with client.stream(USER, max_tokens=25) as stream:
                events = [event async for event in stream]
    assert isinstance(events[0], StreamStart) and isinstance(events[-1], StreamEnd)
    assert all(isinstance(event, TextDelta) for event in events[1:-1])
    assert stream.text == scripted_text(25)
    assert stream.stream_id == events[0].stream_id
    assert stream.last_seq == events[-1].seq
    assert stream.end is events[-1] and stream.end.finish_reason == "length"
    assert (stream.reconnects, stream.error) == (0, None)


async def test_cancel_ends_the_stream_with_the_text_so_far(transport):
    app, provider = scripted_app(Script(tokens=1000, interval=0.01))
    with serve(app) as server:
        async with AsyncClient(server.base_url, transport=transport) as client:
            async with client.stream(USER) as stream:
                async for event in stream:
                    if isinstance(event, TextDelta) and len(stream.text.split()) == 3:
                        await stream.cancel()
                        await stream.cancel()  # idempotent
    assert stream.end is not None and stream.end.finish_reason == "cancelled"
    assert scripted_text(1000).startswith(stream.text) and len(stream.text.split()) >= 3
    assert stream.end.usage.completion_tokens == len(stream.text.split())
    await wait_for(lambda: provider.records[0].closed_at is not None)
    assert provider.records[0].produced < 1000


async def test_cancel_from_another_task_before_the_first_token(transport):
    app, provider = scripted_app(Script(tokens=50, ttft=0.3, interval=0.01))
    with serve(app) as server:
        async with AsyncClient(server.base_url, transport=transport) as client:
            stream = client.stream(USER)
            reader = asyncio.create_task(stream.__anext__())  # opens, then waits for events
            await asyncio.sleep(0.1)
            await stream.cancel()  # the stream id may not be known yet: sent once it is
            first = await reader
            rest = [event async for event in stream]
    assert isinstance(first, StreamStart)
    assert rest[-1].finish_reason == "cancelled"
    assert provider.records[0].produced < 50


async def test_closing_early_cancels_a_detached_stream(transport):
    app, provider = scripted_app(Script(tokens=1000, interval=0.01), detach_grace=60)
    with serve(app) as server:
        async with AsyncClient(server.base_url, transport=transport) as client:
            async with client.stream(USER) as stream:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        break
        # detached by default (so that it can be resumed), yet closing it is a cancel:
        await wait_for(lambda: provider.records[0].closed_at is not None)
    assert provider.records[0].produced < 1000


async def test_a_refused_request_is_a_server_error_with_its_code(transport):
    app, _ = scripted_app()
    with serve(app) as server:
        async with AsyncClient(server.base_url, transport=transport) as client:
            with pytest.raises(ServerError) as caught:
                await client.text(USER, max_tokens=0)
    assert caught.value.code == "invalid_request" and not caught.value.retryable
    assert "max_tokens" in str(caught.value)
    assert caught.value.status == (422 if transport == "sse" else 0)


async def test_a_failing_provider_is_an_error_event_not_an_exception(transport):
    app, _ = scripted_app(Script(tokens=10, error_after=4))
    with serve(app) as server:
        async with AsyncClient(server.base_url, transport=transport) as client:
            async with client.stream(USER) as stream:
                types = [event.type async for event in stream]
    assert types[-2:] == ["error", "stream.end"]
    assert stream.text == scripted_text(4)
    assert stream.error is not None and stream.error.code == "provider_error"
    assert stream.end.finish_reason == "error"


async def test_text_raises_when_the_model_fails_with_the_server_s_code(transport):
    """``text()`` has no stream to look at afterwards: a failure must not pass as ``''``."""
    app, _ = scripted_app(Script(tokens=10, error_after=4))
    with serve(app) as server:
        async with AsyncClient(server.base_url, transport=transport) as client:
            with pytest.raises(StreamFailed) as failed:
                await client.text(USER)
    assert failed.value.code == "provider_error" and failed.value.message
    assert failed.value.text == scripted_text(4)
    assert failed.value.stream_id is not None and failed.value.stream_id.startswith("str_")


def test_the_blocking_text_raises_too(transport):
    app, _ = scripted_app(Script(tokens=10, error_after=4))
    with serve(app) as server, Client(server.base_url, transport=transport) as client:
        with pytest.raises(StreamFailed) as failed:
            client.text(USER)
        assert client.text(USER, max_tokens=3) == scripted_text(3)  # a good stream: its text
    assert failed.value.code == "provider_error" and failed.value.text == scripted_text(4)


async def test_an_unreachable_server_is_connection_lost_after_the_attempts(transport):
    async with AsyncClient(
        f"http://127.0.0.1:{free_port()}", transport=transport, reconnect=FAST
    ) as client:
        with pytest.raises(ConnectionLost) as caught:
            await client.text(USER)
    assert caught.value.attempts == FAST.attempts
    assert "gave up after 4 attempts" in str(caught.value)
    assert caught.value.stream_id is None and caught.value.last_seq == 0


def test_models_lists_the_server_s_models_and_raises_typed_errors():
    key = "tw_models-test-key-0123456789"
    app, provider = scripted_app(api_keys=key)
    provider.context_window = 2048
    with serve(app) as server:
        with Client(server.base_url, api_key=key) as client:
            (model,) = client.models()
        with Client(server.base_url) as client, pytest.raises(ServerError) as refused:
            client.models()
    assert model["id"] == "scripted" and model["context_window"] == 2048
    assert refused.value.status == 401 and refused.value.code == "unauthorized"
    with Client(f"http://127.0.0.1:{free_port()}") as client, pytest.raises(ConnectionLost):
        client.models()


async def test_a_terminal_close_code_raises_at_once():
    app, _ = scripted_app()
    with serve(app, ws_max_size=65536) as server:
        async with AsyncClient(server.base_url, transport="websocket", reconnect=FAST) as client:
            huge = [{"role": "user", "content": "x" * 100_000}]
            with pytest.raises(ConnectionLost) as caught:
                await client.text(huge)
    assert "code 1009" in str(caught.value)
    assert caught.value.attempts == 0  # terminal: not retried


def test_blocking_client(transport):
    app, provider = scripted_app(Script(tokens=1000, interval=0.005))
    with serve(app) as server, Client(server.base_url, transport=transport) as client:
        assert client.text(USER, max_tokens=7) == scripted_text(7)
        with client.stream(USER) as stream:
            for event in stream:
                if isinstance(event, TextDelta) and len(stream.text.split()) == 2:
                    stream.cancel()
        assert stream.end is not None and stream.end.finish_reason == "cancelled"
        assert scripted_text(1000).startswith(stream.text) and len(stream.text.split()) < 1000
        # leaving a stream early closes it; the next one works on the same loop
        with client.stream(USER) as early:
            next(iter(early))
        assert client.text(USER, max_tokens=3) == scripted_text(3)
    assert len(provider.records) == 4


# -- resume --------------------------------------------------------------------------------------


async def test_forced_drops_mid_stream_lose_and_duplicate_nothing(transport):
    app, provider = scripted_app(Script(tokens=200, interval=0.004), reconnect_delay=0.02)
    with serve(app) as server:
        async with AsyncClient(server.base_url, transport=transport, reconnect=FAST) as client:
            async with client.stream(USER) as stream:
                events, cuts = [], [20, 70, 140]
                async for event in stream:
                    events.append(event)
                    if cuts and len(stream.text.split()) >= cuts[0]:
                        cuts.pop(0)
                        assert drop_connections(server) >= 1
    deltas = [event for event in events if isinstance(event, TextDelta)]
    assert stream.text == "".join(event.delta for event in deltas) == scripted_text(200)
    assert [event.seq for event in deltas] == sorted({event.seq for event in deltas})
    assert stream.reconnects == 3
    assert sum(isinstance(event, StreamResumed) for event in events) == 3
    assert stream.end.finish_reason == "stop" and stream.end.usage.completion_tokens == 200
    assert len(provider.records) == 1  # one generation, resumed, never restarted
    # SSE: the server's `retry:` (TOKENWIRE_RECONNECT_DELAY) is the floor of every wait
    assert stream.retry_after == (0.02 if transport == "sse" else None)


# more than the socket buffers and the client's read-ahead hold, with one token per frame
OVERFLOW = {"sse": 60_000, "websocket": 100_000}


async def test_an_evicted_slow_consumer_resumes_without_a_gap(transport):
    many = OVERFLOW[transport]
    app, provider = scripted_app(
        Script(tokens=many),
        max_tokens_limit=many,
        overflow="disconnect",
        queue_maxsize=1,  # no batches, so no merged deltas: every token costs a whole frame
        slow_consumer_timeout=0.2,
        stream_log_max_events=2 * many,
        stream_log_max_bytes=200 * many,
        reconnect_delay=0.02,
    )
    with serve(app) as server:
        async with AsyncClient(server.base_url, transport=transport, reconnect=FAST) as client:
            async with client.stream(USER, max_tokens=many) as stream:
                async for event in stream:
                    if isinstance(event, TextDelta) and event.seq == 2:
                        # stop reading until the generation is over: the server evicts us
                        await wait_for(lambda: provider.records[0].completed, within=120)
    assert stream.text == scripted_text(many)
    assert stream.reconnects >= 1 and stream.error is None  # the eviction is not an error
    assert stream.end.finish_reason == "length"


async def test_an_unknown_stream_is_a_stream_reset(transport):
    app, _ = scripted_app(Script(tokens=300, interval=0.01), reconnect_delay=0.02)
    with serve(app) as server:
        async with AsyncClient(server.base_url, transport=transport, reconnect=FAST) as client:
            async with client.stream(USER) as stream:
                with pytest.raises(StreamReset) as caught:
                    async for event in stream:
                        if isinstance(event, TextDelta):
                            stream.stream_id = "str_unknown"  # as if the server had forgotten it
                            drop_connections(server)
    assert caught.value.reason == "unknown_stream"
    assert caught.value.last_seq == stream.last_seq >= 2
    assert isinstance(caught.value, ConnectionLost)


class FixedPortServer(UvicornThread):
    """A server on a given port: the one a previous server had, to play a restart."""

    def __init__(self, app, port: int, **config) -> None:
        super().__init__(app, **config)
        self.port = self.config.port = port


async def test_a_server_restart_is_retried_until_the_new_one_answers(transport):
    app, _ = scripted_app(Script(tokens=5000, interval=0.01), reconnect_delay=0.02)
    patient = Reconnect(attempts=30, initial=0.02, maximum=0.2, jitter=0.02)
    first = UvicornThread(app, timeout_graceful_shutdown=1)
    with first:
        client = AsyncClient(first.base_url, transport=transport, reconnect=patient)
        stream = client.stream(USER)
        async for event in stream:
            if isinstance(event, TextDelta):
                break
    # The first server is gone (its in-memory log with it); a new one takes its port.
    second_app, _ = scripted_app(Script(tokens=5))
    with FixedPortServer(second_app, first.port):
        with pytest.raises(StreamReset) as caught:
            async for _ in stream:
                pass
        await stream.aclose()
        await client.aclose()
    assert caught.value.reason == "unknown_stream" and stream.reconnects == 1
    assert stream.text and scripted_text(5000).startswith(stream.text)


def start_when_free(server: ServerProcess, port: int) -> ServerProcess:
    """Start ``server`` once nothing listens on ``port`` any more (the old server let go)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            time.sleep(0.02)
        except OSError:
            return server.start()
    raise AssertionError(f"port {port} is still taken")


async def test_a_restart_behind_the_same_address_is_invisible_with_a_shared_log(
    transport, redis_server, tmp_path
):
    """SIGTERM to the server mid-reply (it drains: SSE responses end, WebSockets close 1012);
    a new server process takes the same port; the client's backoff spans the gap and it
    resumes there from the Redis stream log while the old process finishes the generation."""
    port = free_port()

    def process(name: str) -> ServerProcess:
        return ServerProcess(
            tmp_path,
            name,
            port=port,
            provider="scripted",
            stream_log=redis_server.url,
            scripted_tokens=300,
            scripted_interval=0.01,
            reconnect_delay=0.05,
        )

    old, new = process("old").start(), process("new")
    patient = Reconnect(attempts=60, initial=0.05, maximum=0.5, jitter=0.05)
    try:
        async with AsyncClient(old.base_url, transport=transport, reconnect=patient) as client:
            async with client.stream(USER) as stream:
                restart = None
                async for _ in stream:
                    if restart is None and len(stream.text.split()) >= 20:
                        old.signal(signal.SIGTERM)
                        restart = asyncio.create_task(asyncio.to_thread(start_when_free, new, port))
        assert restart is not None
        await restart
        await asyncio.to_thread(old.wait, 30)
    finally:
        old.stop()
        new.stop()
    assert stream.text == scripted_text(300)
    assert stream.reconnects >= 1 and stream.end.finish_reason == "stop"
    assert "draining 1 live streams" in old.log() and "Traceback" not in old.log()
    resumed = {"sse": '/events HTTP/1.1" 200', "websocket": 'WebSocket /v1/ws" [accepted]'}
    assert resumed[transport] in new.log()  # the new process served the resume


async def test_a_stream_whose_worker_was_killed_ends_with_an_error_not_a_hang(
    transport, redis_server, tmp_path
):
    """The worker running a stream is SIGKILLed and a new one takes its address; the resume
    finds the stream lost (its lease lapsed): the server sends ``error`` + ``stream.end`` at
    the client's own last seq, and the client hands both over and ends; or, when the client saw
    events that never reached Redis, ``stream.reset`` (lost). Never a hang (the bound below
    only stops a broken run) nor a non-retryable 400."""
    port = free_port()

    def process(name: str) -> ServerProcess:
        return ServerProcess(
            tmp_path,
            name,
            port=port,
            provider="scripted",
            stream_log=redis_server.url,
            stream_log_lease=1,
            scripted_tokens=10_000,
            scripted_interval=0.05,
            reconnect_delay=0.05,
        )

    old, new = process("old").start(), process("new")
    patient = Reconnect(attempts=60, initial=0.05, maximum=0.5, jitter=0.05)
    reset = None
    restart = None
    try:
        async with AsyncClient(old.base_url, transport=transport, reconnect=patient) as client:
            async with asyncio.timeout(60), client.stream(USER) as stream:
                try:
                    async for _ in stream:
                        if restart is None and len(stream.text.split()) >= 5:
                            old.signal(signal.SIGKILL)
                            restart = asyncio.create_task(
                                asyncio.to_thread(start_when_free, new, port)
                            )
                except StreamReset as exc:
                    reset = exc
        assert restart is not None
        await restart
    finally:
        old.stop()
        new.stop()
    assert stream.reconnects >= 1
    if reset is not None:
        assert reset.reason == "lost"
    else:
        assert stream.end is not None and stream.end.finish_reason == "error"
        assert stream.error is not None and stream.error.code == "unavailable"
        assert stream.error.retryable
