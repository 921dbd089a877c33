"""Resume and control across servers that share one Redis (a real redis-server started on a
free port): resume on another server at random cursors, cancel through another server, a
stream whose server died, Redis unreachable at start, and Redis lost and back mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal

import httpx
import pytest

from tests.helpers import RedisServer, ServerProcess, scripted_app, serve, wait_for
from tests.streams.test_resume import detached, forced_disconnects, resume
from tests.streams.test_semantics import Peer, text_of
from tokenwire.app import create_app
from tokenwire.providers.scripted import (
    Script,
    ScriptedProvider,
    scripted_reasoning,
    scripted_text,
    scripted_tool_calls,
)
from tokenwire.settings import Settings
from tokenwire.streams.log import StreamLogUnavailable


async def test_random_forced_disconnects_resumed_on_either_server(transport, redis_server):
    """200 forced disconnects; every resume goes to a server picked at random (A runs the
    generations): the text is exactly the provider's, no seq twice."""
    script = Script(tokens=300, interval=0.001)
    app_a, _ = scripted_app(script, stream_log=redis_server.url, on_disconnect="detach")
    app_b, _ = scripted_app(script, stream_log=redis_server.url)
    with serve(app_a) as a, serve(app_b) as b:
        await forced_disconnects(transport, a, [a, b], drops=200, tokens=300, rng=random.Random(7))


async def test_start_on_a_resume_on_b_cancel_through_b(transport, redis_server):
    script = Script(tokens=100_000, interval=0.005)
    app_a, provider_a = scripted_app(script, stream_log=redis_server.url)
    app_b, provider_b = scripted_app(script, stream_log=redis_server.url)
    with serve(app_a) as a, serve(app_b) as b:
        created = await detached(a)
        stream_id = created["stream_id"]
        async with await resume(transport, b, stream_id, 0) as peer:
            first = [await peer.event() for _ in range(20)]
            assert provider_b.records == []  # B serves it from the log only
            async with httpx.AsyncClient() as http:
                response = await http.post(f"{b.base_url}/v1/streams/{stream_id}/cancel")
            rest = await peer.rest()
        await wait_for(lambda: provider_a.records[0].closed_at is not None)
    assert response.status_code == 202
    assert response.json() == {"stream_id": stream_id, "status": "cancelling"}
    events = first + rest
    seqs = [e["seq"] for e in events]
    assert seqs[0] == 1 and seqs == sorted(set(seqs))  # only grows (merged deltas skip seqs)
    assert events[-1]["finish_reason"] == "cancelled"
    produced = provider_a.records[0].produced
    assert text_of(events) == scripted_text(produced)


async def test_a_remote_reader_holds_off_the_detach_grace(redis_server):
    # The grace must outlast the resume's connection to B on a loaded machine (0.3 s did not, in
    # a full run beside other jobs); the stream runs 4x as long as the grace.
    script = Script(tokens=500, interval=0.01)  # under the default max_tokens (512)
    app_a, provider_a = scripted_app(script, stream_log=redis_server.url, detach_grace=1.25)
    app_b, _ = scripted_app(script, stream_log=redis_server.url)
    with serve(app_a) as a, serve(app_b) as b:
        created = await detached(a)
        async with await resume("sse", b, created["stream_id"], 0) as peer:
            events = await peer.rest()
    assert events[-1]["finish_reason"] == "stop"  # ran 5 s, far past the grace
    assert text_of(events) == scripted_text(500)
    assert provider_a.records[0].completed


async def test_redis_unreachable_at_start_is_a_clear_startup_error():
    closed = RedisServer()  # a free port where nothing listens
    app = create_app(
        Settings(provider="scripted", stream_log=closed.url), provider=ScriptedProvider()
    )
    with pytest.raises(StreamLogUnavailable, match=f"cannot reach the stream log at {closed.url}"):
        async with app.router.lifespan_context(app):
            pass


async def test_redis_lost_and_back_mid_stream(own_redis):
    """Redis dies mid-stream: the streams of that server get a retryable `unavailable` error
    and stream.end (never silence), new streams are refused with 503 + Retry-After; when Redis
    is back, new streams work again and the interrupted stream's log is complete from the
    failure on (its earlier events went with the old Redis: a resume from before them gets
    stream.reset, never a partial replay)."""
    app, _ = scripted_app(Script(tokens=100_000, interval=0.01), stream_log=own_redis.url)
    with serve(app) as server:
        peer = await Peer.open("sse", server)
        start = await peer.event()
        for _ in range(5):
            await peer.event()
        own_redis.kill()
        events = await peer.rest()
        async with httpx.AsyncClient() as http:
            refused = await http.post(
                server.base_url + "/v1/streams",
                json={"messages": [{"role": "user", "content": "x"}]},
            )
            own_redis.start()
            log = app.state.tokenwire.stream_log
            await wait_for(lambda: log.healthy, within=10)
        new = await Peer.open("sse", server, max_tokens=5)
        again = await new.rest()
        await new.vanish()
        async with await resume("sse", server, start["stream_id"], 0) as late:
            reset = await late.event()
        await peer.vanish()
    error, end = events[-2:]
    assert error["code"] == "unavailable" and error["retryable"] is True
    assert end["finish_reason"] == "error"
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "unavailable"
    assert again[-1]["type"] == "stream.end" and text_of(again) == scripted_text(5)
    assert reset == {"type": "stream.reset", "stream_id": start["stream_id"], "reason": "expired"}


# -- separate processes (`tokenwire serve`) ------------------------------------------------------


@pytest.fixture
def processes(tmp_path, redis_server):
    """Start `tokenwire serve` processes that share the session's Redis; all stopped after."""
    started: list[ServerProcess] = []

    def start(name: str, **settings: object) -> ServerProcess:
        defaults = {"provider": "scripted", "stream_log": redis_server.url, "log_level": "info"}
        server = ServerProcess(tmp_path, name, **{**defaults, **settings}).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def test_processes_start_on_a_resume_on_b_cancel_through_b(transport, processes):
    a = processes("a", scripted_tokens=100_000, scripted_interval=0.005, max_tokens=4096)
    b = processes("b")
    created = await detached(a)
    stream_id = created["stream_id"]
    async with await resume(transport, b, stream_id, 0) as peer:
        first = [await peer.event() for _ in range(20)]
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{b.base_url}/v1/streams/{stream_id}/cancel")
        rest = await peer.rest()
    assert response.json() == {"stream_id": stream_id, "status": "cancelling"}
    events = first + rest
    seqs = [e["seq"] for e in events]
    assert seqs[0] == 1 and seqs == sorted(set(seqs))  # only grows (merged deltas skip seqs)
    assert events[-1]["finish_reason"] == "cancelled"
    assert len(events) < 1000  # stopped long before max_tokens (4,096 tokens at 5 ms)
    completion = events[-1]["usage"]["completion_tokens"]
    assert text_of(events) == scripted_text(completion)


async def test_sigterm_drains_a_and_every_client_finishes_through_b(processes):
    """SIGTERM to A while 4 SSE and 4 WebSocket clients stream through it: SSE responses end
    (the client resumes after `retry:`), WebSockets close with 1012; each client resumes on B
    after its last seq and gets the complete text, while A's generations finish writing to the
    log; A runs its lifespan shutdown and exits without a traceback."""
    tokens = 200
    a = processes("a", scripted_tokens=tokens, scripted_interval=0.01)
    b = processes("b")
    async with contextlib.AsyncExitStack() as peers_open:  # closed even if an assert fails
        peers = [await Peer.open(t, a) for t in ["sse", "websocket"] * 4]
        for peer in peers:
            peers_open.push_async_callback(peer.vanish)
        received: list[list[dict]] = [[await peer.event() for _ in range(10)] for peer in peers]
        a.signal(signal.SIGTERM)
        for peer, events in zip(peers, received, strict=True):
            events.extend(await peer.rest())
            assert events[-1]["type"] != "stream.end"  # cut off by the drain
            if peer.transport == "websocket":
                assert peer.close_code == 1012
            await peer.vanish()
    for peer, events in zip(peers, received, strict=True):
        stream_id, last_seq = events[0]["stream_id"], events[-1]["seq"]
        async with await resume(peer.transport, b, stream_id, last_seq) as again:
            events.extend(e for e in await again.rest() if e["type"] != "stream.resumed")
        seqs = [e["seq"] for e in events]
        # from stream.start to stream.end, only growing: a busy machine merges deltas (a merged
        # delta takes its last seq), so seqs may skip, but the text is whole and never repeated
        assert seqs[0] == 1 and seqs[-1] == tokens + 2 and seqs == sorted(set(seqs))
        assert text_of(events) == scripted_text(tokens)
    assert await asyncio.to_thread(a.wait, 30) is not None, a.log()
    log = a.log()
    assert "draining 8 live streams" in log
    assert "Application shutdown complete" in log
    assert "Traceback" not in log


async def test_a_killed_servers_stream_ends_with_a_retryable_error_elsewhere(transport, processes):
    """SIGKILL to the process that runs a stream: a reader on B gets `unavailable` (retryable)
    and stream.end at its cursor once A's lease lapses, instead of waiting forever."""
    a = processes("a", scripted_tokens=100_000, scripted_interval=0.01, stream_log_lease=1)
    b = processes("b", stream_log_lease=1)
    created = await detached(a)
    async with await resume(transport, b, created["stream_id"], 0) as peer:
        first = [await peer.event() for _ in range(5)]
        a.signal(signal.SIGKILL)
        rest = await peer.rest()
    error, end = rest[-2:]
    assert error["type"] == "error" and error["code"] == "unavailable" and error["retryable"]
    assert "stopped before its end" in error["message"]
    assert end["type"] == "stream.end" and end["finish_reason"] == "error"
    assert error["seq"] == end["seq"] == (first + rest)[-3]["seq"]


async def test_workers_share_the_log_so_any_worker_serves_any_stream(transport, processes):
    """`tokenwire serve --workers 2`: each request lands on either worker; every stream,
    resumed on a new connection after a random cursor, gives its complete text, and a cancel
    reaches the worker that runs the stream."""
    server = processes("w", workers=2, scripted_tokens=60, scripted_interval=0.01)
    rng = random.Random(3)
    for _ in range(8):
        created = await detached(server)
        count = rng.randint(1, 30)
        async with await resume(transport, server, created["stream_id"], 0) as peer:
            head = [await peer.event() for _ in range(count)]
        # resume after the last seq seen (merged writes carry several tokens under one seq,
        # so the count of events read is not a cursor)
        cursor = head[-1]["seq"]
        async with await resume(transport, server, created["stream_id"], cursor) as peer:
            tail = [e for e in await peer.rest() if e["type"] != "stream.resumed"]
        assert text_of(head + tail) == scripted_text(60)
    created = await detached(server, max_tokens=4000)
    async with httpx.AsyncClient() as http:
        statuses = set()
        while not statuses & {"cancelled", "cancelling"}:  # until it is not "ended"
            response = await http.post(
                f"{server.base_url}/v1/streams/{created['stream_id']}/cancel"
            )
            statuses.add(response.json()["status"])
    async with await resume(transport, server, created["stream_id"], 0) as peer:
        events = await peer.rest()
    assert events[-1]["finish_reason"] == "cancelled"
    pids = {
        line.split("[")[1].split("]")[0]
        for line in server.log().splitlines()
        if "Started server process" in line
    }
    assert len(pids) == 2


def test_serve_refuses_to_start_when_redis_is_unreachable(tmp_path):
    closed = RedisServer()
    server = ServerProcess(tmp_path, "x", provider="scripted", stream_log=closed.url)
    with pytest.raises(RuntimeError, match="did not start"):
        server.start()
    assert f"cannot reach the stream log at {closed.url}" in server.log()
    assert server.wait(5) == 2  # a refusal to start: status 2, one line
    assert "Traceback" not in server.log()


async def test_a_rich_stream_resumes_inside_a_tool_call_on_another_server(transport, redis_server):
    """Reasoning and tool-call events through the Redis log: resumed on B inside a call's
    arguments, the arguments come out whole and every tool_call.end exact."""
    script = Script(
        tokens=3, reasoning_tokens=5, tool_calls=2, tool_call_pieces=30, interleave_tool_calls=True
    )
    app_a, _ = scripted_app(script, stream_log=redis_server.url)
    app_b, _ = scripted_app(script, stream_log=redis_server.url)
    with serve(app_a) as a, serve(app_b) as b:
        stream_id = (await detached(a))["stream_id"]
        async with await resume(transport, a, stream_id, 0) as peer:
            whole = await peer.rest()
        cursor = next(e["seq"] for e in whole if e["type"] == "tool_call.delta") + 7
        async with await resume(transport, b, stream_id, cursor) as peer:
            rest = [e for e in await peer.rest() if "seq" in e]
    assert rest[0]["seq"] == cursor + 1
    events = [e for e in whole if e.get("seq", 0) <= cursor] + rest
    for index, (call_id, name, arguments) in enumerate(scripted_tool_calls(2)):
        pieces = [
            e["delta"] for e in events if e["type"] == "tool_call.delta" and e["index"] == index
        ]
        assert "".join(pieces) == arguments
        (end,) = [e for e in rest if e["type"] == "tool_call.end" and e["index"] == index]
        assert (end["call_id"], end["name"], end["arguments"]) == (call_id, name, arguments)
    reasoning = "".join(e["delta"] for e in events if e["type"] == "reasoning.delta")
    assert reasoning == scripted_reasoning(5)
    assert rest[-1]["finish_reason"] == "tool_calls"
