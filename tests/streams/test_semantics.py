"""Stream semantics under faults, the same on SSE and WebSocket, over real uvicorn sockets:
disconnects (also during a first-token stall), cancels, readers that stop reading under each
overflow policy, send timeouts, deadlines, keepalive, detach, and leak-freedom over many cycles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.uri import parse_uri

from tests.helpers import UvicornThread, scripted_app, serve, wait_for
from tokenwire.providers.scripted import Script, scripted_text
from tokenwire_client.sse import SSEDecoder

USER = [{"role": "user", "content": "the secret prompt"}]


class Peer:
    """A client of one stream that a test drives by hand: read, stop reading, or vanish.

    Nothing is read from the socket unless the test asks for an event, so a test can stall a
    reader for real. WebSocket runs on a raw socket through websockets' sans-I/O protocol (a
    library client keeps reading in the background); SSE through httpx, which never reads ahead.
    """

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.close_code: int | None = None  # WebSocket: the server's close code
        self._raw: list[bytes] = []
        self._stack = contextlib.AsyncExitStack()
        self._ready: deque[dict[str, Any]] = deque()
        self._chunks: AsyncIterator[bytes] | None = None
        self._decoder = SSEDecoder()
        self._ws: ClientProtocol | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def raw(self) -> bytes:
        """SSE: every byte received so far."""
        return b"".join(self._raw)

    @classmethod
    async def open(
        cls,
        transport: str,
        server: UvicornThread,
        *,
        http: httpx.AsyncClient | None = None,
        **body: Any,
    ) -> Peer:
        peer = cls(transport)
        request = {"messages": USER, **body}
        if transport == "sse":
            if http is None:
                http = await peer._stack.enter_async_context(httpx.AsyncClient(timeout=None))
            response = await peer._stack.enter_async_context(
                http.stream("POST", server.base_url + "/v1/streams", json=request)
            )
            assert response.status_code == 200
            peer._chunks = response.aiter_raw()
        else:
            await peer._connect_ws(server.port)
            peer._send_ws(json.dumps({"type": "generate", **request}))
        return peer

    async def _connect_ws(self, port: int) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        self._ws = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/v1/ws"), max_size=None)
        self._ws.send_request(self._ws.connect())
        self._flush_ws()
        while (
            not isinstance(self._ws.handshake_exc, Exception)
            and self._ws.state.name == "CONNECTING"
        ):
            self._ws.receive_data(await self._reader.read(65536))
        assert self._ws.state.name == "OPEN", self._ws.handshake_exc
        self._ws.events_received()  # the handshake response

    def _send_ws(self, text: str) -> None:
        assert self._ws is not None
        self._ws.send_text(text.encode())
        self._flush_ws()

    def _flush_ws(self) -> None:
        assert self._ws is not None and self._writer is not None
        for data in self._ws.data_to_send():
            if data:
                self._writer.write(data)

    async def event(self) -> dict[str, Any] | None:
        """The next event, or None once the connection has closed."""
        while not self._ready:
            if not await self._read_more():
                return None
        return self._ready.popleft()

    async def _read_more(self) -> bool:
        if self._ws is not None:
            assert self._reader is not None
            try:
                chunk = await self._reader.read(65536)
            except ConnectionResetError:
                # A server that closes its socket right after the close frame resets ours when
                # our close reply reaches it: after the close frame, that is the end (as in a
                # browser); before it, a failure.
                if self._ws.close_rcvd is None:
                    raise
                chunk = b""
            if chunk:
                self._ws.receive_data(chunk)
            else:
                self._ws.receive_eof()
            for frame in self._ws.events_received():
                if frame.opcode is Opcode.TEXT:
                    self._ready.append(json.loads(frame.data))
            self._flush_ws()  # pongs, and our half of a close
            if self._ws.close_rcvd is not None:
                self.close_code = self._ws.close_rcvd.code
            return bool(chunk)
        assert self._chunks is not None
        try:
            chunk = await anext(self._chunks)
        except (StopAsyncIteration, httpx.HTTPError):
            return False
        self._raw.append(chunk)
        self._ready.extend(json.loads(e.data) for e in self._decoder.decode(chunk))
        return True

    async def rest(self, *, until_close: bool = False) -> list[dict[str, Any]]:
        """Every event up to ``stream.end`` (a WebSocket stays open after it), or with
        ``until_close`` until the server closes the connection."""
        events = []
        while (event := await self.event()) is not None:
            events.append(event)
            if event["type"] == "stream.end" and not until_close:
                break
        return events

    async def vanish(self) -> None:
        """Drop the connection without a goodbye (a closed tab, a lost network). Idempotent."""
        if self._writer is not None:
            self._writer.transport.abort()
            self._writer.close()
            with contextlib.suppress(ConnectionError):  # a reset seen before: closed already
                await self._writer.wait_closed()  # the socket closes in connection_lost
            self._writer = None
        await self._stack.aclose()

    async def __aenter__(self) -> Peer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.vanish()


async def settled(value: Any, *, quiet: float = 0.5, within: float = 20) -> Any:
    """Wait until ``value()`` has not changed for ``quiet`` seconds; return it."""
    deadline = time.monotonic() + within
    last = value()
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet)
        if (now := value()) == last:
            return now
        last = now
    raise AssertionError(f"still changing after {within} s: {last}")


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "text.delta")


# -- disconnect and cancel -----------------------------------------------------------------------


async def test_disconnect_mid_stream_stops_the_provider_promptly(transport):
    app, provider = scripted_app(Script(tokens=10_000, interval=0.01))
    with serve(app) as server:
        peer = await Peer.open(transport, server)
        received = [await peer.event() for _ in range(4)]  # start + 3 deltas
        await peer.vanish()
        gone_at = time.monotonic()
        await wait_for(lambda: provider.records[0].closed_at is not None)
        await wait_for(lambda: len(app.state.tokenwire.registry) == 0)
    record = provider.records[0]
    after = record.produced - (len(received) - 1)
    assert record.closed_at - gone_at < 1.0  # the benchmark measures the real figure
    assert after <= 100  # at 10 ms a token, a second's worth at most
    assert not record.completed


async def test_disconnect_during_a_first_token_stall_stops_the_provider(transport):
    app, provider = scripted_app(Script(tokens=10, ttft=10))
    with serve(app) as server:
        peer = await Peer.open(transport, server)
        assert (await peer.event())["type"] == "stream.start"
        await peer.vanish()
        gone_at = time.monotonic()
        await wait_for(lambda: provider.records[0].closed_at is not None, within=3)
    assert provider.records[0].produced == 0
    assert provider.records[0].closed_at - gone_at < 1.0  # not the 10 s stall


async def test_cancel_during_a_stall_ends_with_usage(transport):
    app, provider = scripted_app(Script(tokens=10, ttft=10))
    with serve(app) as server:
        peer = await Peer.open(transport, server)
        start = await peer.event()
        async with httpx.AsyncClient() as http:  # from another connection, on both transports
            url = f"{server.base_url}/v1/streams/{start['stream_id']}/cancel"
            assert (await http.post(url)).status_code == 202
        end = await peer.event()
        await peer.vanish()
    assert end["type"] == "stream.end" and end["finish_reason"] == "cancelled"
    assert end["usage"] == {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}
    assert provider.records[0].closed_at is not None


async def test_detach_keeps_generating_then_gives_up_after_the_grace(transport):
    app, provider = scripted_app(Script(tokens=10_000, interval=0.005), detach_grace=0.3)
    with serve(app) as server:
        peer = await Peer.open(transport, server, on_disconnect="detach")
        await peer.event()
        await peer.vanish()
        gone_at = time.monotonic()
        await asyncio.sleep(0.15)
        produced_in_grace = provider.records[0].produced
        assert provider.records[0].closed_at is None  # still running, nobody attached
        await wait_for(lambda: provider.records[0].closed_at is not None)
    assert produced_in_grace > 5
    assert 0.25 < provider.records[0].closed_at - gone_at < 2.0
    assert not provider.records[0].completed


async def test_detach_lets_a_short_generation_finish(transport):
    app, provider = scripted_app(Script(tokens=40, interval=0.005), detach_grace=30)
    with serve(app) as server:
        peer = await Peer.open(transport, server, on_disconnect="detach")
        await peer.event()
        await peer.vanish()
        await wait_for(lambda: provider.records[0].completed)


async def test_many_connect_disconnect_cycles_leak_nothing(transport):
    app, provider = scripted_app(Script(tokens=10_000, interval=0.01))
    cycles = 1000
    with serve(app) as server:
        baseline = server.task_count()
        async with httpx.AsyncClient(timeout=None) as http:
            for _ in range(cycles):
                peer = await Peer.open(transport, server, http=http)
                await peer.event()
                await peer.vanish()  # an unfinished response: httpx closes its connection
        registry = app.state.tokenwire.registry
        await wait_for(lambda: len(registry) == 0, within=10)
        await wait_for(lambda: server.task_count() <= baseline, within=10)
        assert all(r.closed_at is not None for r in provider.records)
    assert len(provider.records) == cycles


# -- backpressure --------------------------------------------------------------------------------

# More tokens than a loopback connection buffers for a reader that stopped reading (measured:
# ~32k SSE frames, ~46k WebSocket frames), when each token is a frame of its own: the tests below
# use a queue of one event, so that no batch merges deltas into fewer, larger frames.
OVERFLOW = {"sse": 60_000, "websocket": 100_000}
ONE = 1  # queue_maxsize


async def live_subscription(app: Any) -> Any:
    """The subscription of the one live stream (held, so it outlives the stream's end)."""
    registry = app.state.tokenwire.registry
    await wait_for(lambda: len(registry) == 1 and registry.live()[0].subscriptions)
    return registry.live()[0].subscriptions[0]


async def test_block_makes_the_provider_wait_for_a_stalled_reader(transport):
    MANY = OVERFLOW[transport]
    app, provider = scripted_app(Script(tokens=MANY), queue_maxsize=ONE, max_tokens_limit=MANY)
    with serve(app) as server:
        async with await Peer.open(transport, server, max_tokens=MANY) as peer:
            subscription = await live_subscription(app)
            await wait_for(lambda: provider.records)
            stalled_at = await settled(lambda: provider.records[0].produced)
            assert stalled_at < MANY  # the provider waits for the reader
            assert subscription.depth == ONE  # memory bounded by the queue
            events = await peer.rest()
    assert text_of(events) == scripted_text(MANY)  # nothing lost once the reader resumes
    assert events[-1]["finish_reason"] == "length"


async def test_coalesce_keeps_the_provider_going_and_loses_nothing(transport):
    MANY = OVERFLOW[transport]
    app, provider = scripted_app(
        Script(tokens=MANY), queue_maxsize=ONE, overflow="coalesce", max_tokens_limit=MANY
    )
    with serve(app) as server:
        async with await Peer.open(transport, server, max_tokens=MANY) as peer:
            subscription = await live_subscription(app)
            await wait_for(lambda: provider.records and provider.records[0].completed, within=60)
            assert subscription.depth <= ONE + 1  # (+ the pending delta) while the provider ran
            assert subscription.coalesced > 0
            events = await peer.rest()
    deltas = [e for e in events if e["type"] == "text.delta"]
    assert text_of(events) == scripted_text(MANY)
    assert len(deltas) < MANY  # some deltas were merged...
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))  # ...and seq still only grows (it skips)
    assert events[-1]["seq"] == MANY + 2


async def test_disconnect_policy_evicts_a_stalled_reader(transport):
    MANY = OVERFLOW[transport]
    app, provider = scripted_app(
        Script(tokens=MANY),
        queue_maxsize=ONE,
        overflow="disconnect",
        slow_consumer_timeout=0.3,
        max_tokens_limit=MANY,
    )
    with serve(app) as server:
        async with await Peer.open(transport, server, max_tokens=MANY) as peer:
            subscription = await live_subscription(app)
            await wait_for(lambda: subscription.evicted, within=60)
            # the generation follows its disconnect policy (cancel) at eviction, not later
            await wait_for(lambda: provider.records[0].closed_at is not None, within=2)
            assert not provider.records[0].completed
            events = await peer.rest(until_close=True)
    error, end = events[-2], events[-1]
    assert error["type"] == "error" and error["code"] == "slow_consumer"
    assert error["retryable"] is True
    assert end["type"] == "stream.end" and end["finish_reason"] == "error"
    assert end["usage"]["completion_tokens"] > 0
    delivered = text_of(events)
    assert scripted_text(MANY).startswith(delivered) and len(delivered) < len(scripted_text(MANY))
    cursor = [e for e in events if e["type"] == "text.delta"][-1]["seq"]
    assert error["seq"] == end["seq"] == cursor  # resume after it loses nothing
    if transport == "websocket":
        assert peer.close_code == 4008


async def test_send_timeout_drops_a_reader_that_never_reads(transport):
    MANY = OVERFLOW[transport]
    app, provider = scripted_app(
        Script(tokens=MANY), queue_maxsize=ONE, send_timeout=0.3, max_tokens_limit=MANY
    )
    with serve(app) as server:
        peer = await Peer.open(transport, server, max_tokens=MANY)
        await wait_for(lambda: provider.records and provider.records[0].closed_at, within=10)
        await peer.vanish()
    assert not provider.records[0].completed  # dropped, and cancelled under the cancel policy


# -- deadlines and keepalive ---------------------------------------------------------------------


async def test_first_token_timeout(transport):
    app, provider = scripted_app(Script(tokens=5, ttft=5), first_token_timeout=0.2)
    with serve(app) as server:
        peer = await Peer.open(transport, server)
        events = [await peer.event() for _ in range(3)]
        await peer.vanish()
    start, error, end = events
    assert (error["type"], error["code"], error["retryable"]) == ("error", "provider_timeout", True)
    assert "0.2" in error["message"]
    assert (end["finish_reason"], end["usage"]["completion_tokens"]) == ("error", 0)
    assert provider.records[0].closed_at is not None


async def test_max_stream_duration(transport):
    app, provider = scripted_app(Script(tokens=1000, interval=0.01), max_stream_duration=0.3)
    with serve(app) as server:
        peer = await Peer.open(transport, server)
        events = []
        while not events or events[-1]["type"] != "stream.end":
            events.append(await peer.event())
        await peer.vanish()
    end = events[-1]
    assert end["finish_reason"] == "timeout"
    assert 0 < end["usage"]["completion_tokens"] < 1000
    assert end["usage"]["completion_tokens"] == len(text_of(events).split())
    assert provider.records[0].closed_at is not None


async def test_sse_heartbeat_before_the_first_token_and_when_idle():
    app, _ = scripted_app(
        Script(tokens=3, ttft=0.35, stall_after=1, stall=0.35), heartbeat_interval=0.1
    )
    with serve(app) as server:
        async with await Peer.open("sse", server) as peer:
            await peer.rest()
    head, _, tail = peer.raw.partition(b"event: text.delta")
    assert head.count(b": ping\n\n") >= 2  # waiting for the first token
    assert tail.count(b": ping\n\n") >= 2  # the stall after it
    assert peer.raw.endswith(b"event: stream.end" + peer.raw.rsplit(b"event: stream.end", 1)[1])


async def test_websocket_dead_peer_is_detected_by_ping_timeout():
    app, provider = scripted_app(Script(tokens=10_000, interval=0.05))
    with serve(app, ws_ping_interval=0.2, ws_ping_timeout=0.2) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert b"101" in await reader.readline()
        frame = json.dumps({"type": "generate", "messages": USER}).encode()
        mask = b"\x00\x00\x00\x00"  # a client frame must be masked; a zero mask keeps it plain
        writer.write(bytes([0x81, 0x80 | 126]) + len(frame).to_bytes(2, "big") + mask + frame)
        await writer.drain()
        # ...and then never answer a ping: the server must give up on us and cancel
        await wait_for(lambda: provider.records and provider.records[0].closed_at, within=5)
        writer.transport.abort()
        writer.close()
        await writer.wait_closed()
    assert not provider.records[0].completed


async def test_websocket_oversized_message_closes_1009():
    app, _ = scripted_app()
    with serve(app, ws_max_size=1024) as server:
        async with connect(f"ws://127.0.0.1:{server.port}/v1/ws") as ws:
            await ws.send("x" * 2048)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd.code == 1009


# -- one log line per stream end -----------------------------------------------------------------


async def test_every_stream_end_is_logged_once_without_content(transport, caplog):
    caplog.set_level(logging.INFO, logger="tokenwire.streams")
    app, _ = scripted_app(Script(tokens=5, error_after=3))
    ours = set()
    with serve(app) as server:
        for _ in range(3):
            async with await Peer.open(transport, server) as peer:
                events = await peer.rest()
            ours.add(events[0]["stream_id"])
        await wait_for(lambda: len(app.state.tokenwire.registry) == 0)
    ends = [r for r in caplog.records if getattr(r, "stream_id", None) in ours]
    assert len(ends) == 3 and {r.stream_id for r in ends} == ours
    for record in ends:
        assert record.getMessage() == "stream ended"
        assert record.transport == transport
        assert record.finish_reason == "error" and record.tokens == 3
        assert record.ttft_s >= 0 and record.duration_s >= record.ttft_s
    assert "secret" not in caplog.text and "Tokens arrive" not in caplog.text
