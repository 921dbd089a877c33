"""The load generator: many concurrent streams against one server, in a process of its own.

Run as ``python -m transport.loadgen``: it reads one JSON job from stdin (which server, its
port and pid, the phases to run, see :func:`main`), writes progress lines
``{"type": "progress", ...}`` to stdout while it runs, ``{"type": "window", "phase", "seconds"}``
when a measurement window opens, and one ``{"type": "result", ...}`` line at the end.

Why raw sockets: the client must cost less per token than the server, or the table would
measure the client. Every stream is an :class:`asyncio.Protocol` on uvloop; HTTP responses
(status line, headers, chunked transfer coding) are parsed by httptools, the C parser uvicorn
itself uses; SSE events are split with ``bytes.split``; WebSocket frames (RFC 6455, section 5.2)
are read by a few lines below that handle only what a server sends (unmasked, unfragmented text
frames, ping, close). httpx and the websockets library would each cost more per event than a
lean server does (pure-Python h11 and a generator-based frame parser). The harness prints
the client's CPU per token next to the server's, and flags a window in which the client was
busy more than 90 % of the time or its event loop lagged.

Timestamps: ``time.monotonic()`` once per ``data_received`` call, shared by every token parsed
from that chunk. Latency of token ``i`` = that time - :meth:`transport.source.Schedule.due`.

Phases (each a function ``phase_<name>(gen, spec) -> dict``; add one to :data:`PHASES` to
extend the benchmark, e.g. cancel latency or resume gap):

- ``memory``: warm-up, then the server's RSS as idle connections and then active streams are
  added in steps;
- ``load``: stepped concurrency at a fixed token rate (one step = the latency measurement; many
  steps with ``stop_p99_ms`` = the ramp), added TTFT and inter-token latency, CPU per token;
- ``outpace``: streams whose tokens are all due at once, read by a client that reads each
  socket at most once per ``read_every`` seconds: tokens delivered per server CPU-second;
- ``cancel``: client cancel -> the server's token generator stopped (every server: a
  disconnect; tokenwire also its explicit cancel, timed to ``stream.end`` as well, and with
  the job's ``cancel_stall`` a disconnect while the first token is still far off);
- ``isolation``: healthy streams' inter-token latency with and without stalled consumers on the
  same server, and the server's RSS per stalled consumer;
- ``resume`` (tokenwire): forced disconnects mid-stream, then a resume after the last seq seen:
  the gap, and tokens lost or duplicated; with the job's ``resume_ports`` (servers sharing a
  Redis stream log) resumed on any of them, and ``redis_port``: Redis commands per token.

The cancel and resume phases steer streams from outside (:mod:`transport.control`: plain HTTP
requests, ``GET /active``) and follow one stream across its connections
(:class:`~transport.control.Follow`, :class:`FollowedSSE`, :class:`FollowedWS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import resource
import socket
import sys
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
import psutil
import uvloop

from common import (
    cdf,
    quantiles,
    redis_command_calls,
    redis_traffic,
    slope,
    summary,
    ws_accept,
    ws_frame,
    ws_key,
)
from tokenwire.providers.scripted import scripted_text
from transport.control import Follow, StopWatch, http_request
from transport.source import Schedule, request_fields

# The client side of each server under test: protocol, path, SSE event separator, flavour
# ("json": tokenwire's events; "usage": JSON deltas, then an ``event: usage`` that the tokens
# counted must match; neither: one raw token per frame).
CLIENTS: dict[str, dict[str, Any]] = {
    "tokenwire-sse": {"protocol": "sse", "path": "/v1/streams", "sep": b"\n\n", "json": True},
    "tokenwire-ws": {"protocol": "ws", "path": "/v1/ws", "json": True},
    "baseline-streaming": {"protocol": "sse", "path": "/stream", "sep": b"\n\n", "json": False},
    "baseline-sse-starlette": {
        "protocol": "sse",
        "path": "/sse",
        "sep": b"\r\n\r\n",
        "json": False,
    },
    "baseline-websocket": {"protocol": "ws", "path": "/ws", "json": False},
    "baseline-fastapi-sse": {
        "protocol": "sse",
        "path": "/fastapi-sse",
        "sep": b"\n\n",
        "json": False,
        "usage": True,
    },
}

IDLE_TTFT = 3600.0  # seconds: an "idle" SSE stream waits this long for its first token
VERIFY_EVERY = 50  # keep and check the full text of every 50th stream


class Recorder:
    """What the streams of the current step deliver. Latencies in seconds."""

    def __init__(self, latency: bool = True) -> None:
        self.latency = latency
        self.ttft = array("d")
        self.itl = array("d")
        self.w0 = math.inf  # the measurement window [w0, w1), time.monotonic()
        self.w1 = math.inf
        self.delivered = 0  # tokens that arrived inside the window

    def open_window(self, seconds: float) -> None:
        self.itl = array("d")
        self.delivered = 0
        self.w0 = time.monotonic()
        self.w1 = self.w0 + seconds


class Stream(asyncio.Protocol):
    """One connection carrying (at most) one stream; ``mode`` is idle, active, outpace or
    stalled (sends its request, then never reads: see :func:`phase_isolation`)."""

    def __init__(self, gen: Generator, index: int, mode: str, schedule_of: Callable[[], Schedule]):
        self.gen = gen
        self.index = index
        self.mode = mode
        self.schedule_of = schedule_of
        self.schedule: Schedule | None = None
        self.transport: asyncio.Transport | None = None
        self.established = False  # response headers (SSE) or the stream's first token (active)
        self.ended = False
        self.failed: str | None = None
        self.received = 0
        self.text: list[str] | None = [] if index % VERIFY_EVERY == 0 else None
        self.buffer = b""
        self.read_every = gen.read_every if mode == "outpace" else 0.0
        self.follow: Follow | None = None  # told of every token and of the end
        self.stalled = False  # a stalled stream once its request is out: reads nothing more
        self.abandoned = False  # closed by the client on purpose: its loss is no failure

    # -- lifecycle ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.gen.open_streams.add(self)
        self.send_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.open_streams.discard(self)
        if not self.abandoned and not self.ended and self.failed is None and not self.gen.closing:
            self.fail(f"connection lost: {exc or 'closed by the server'}")

    def fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
            self.gen.failures.append(reason)
            self.gen.changed.set()
            if self.follow is not None:
                self.follow.broke(reason)
        self.close()

    def abandon(self) -> None:
        """Drop the connection (no close handshake) as a client that goes away does."""
        self.abandoned = True
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def end(self) -> None:
        self.ended = True
        self.verify()
        self.close()

    def verify(self) -> None:
        """Compare the kept text with the scripted text of as many tokens (once)."""
        if self.text is not None and self.received:
            self.gen.verified += 1
            if "".join(self.text) != scripted_text(self.received):
                self.gen.mismatches += 1
            self.text = None

    def new_schedule(self) -> Schedule:
        self.schedule = self.schedule_of()
        return self.schedule

    def data_received(self, data: bytes) -> None:
        if self.stalled:  # a chunk read before the pause took hold: dropped, unparsed
            self.stall()
            return
        now = time.monotonic()
        try:
            self.parse(data, now)
        except Exception as exc:  # a protocol error ends this stream, not the run
            self.fail(f"{type(exc).__name__}: {exc}")
        if self.read_every and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
            self.gen.loop.call_later(self.read_every, self._resume)

    def stall(self) -> None:
        """Stop reading this socket for good (also from ``connection_made``, where uvloop
        would start reading after the call: the pause is repeated on the next loop turn)."""
        self.stalled = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
            self.gen.loop.call_soon(self._pause)

    def _pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- tokens ---------------------------------------------------------------------------

    def deliver(self, now: float, count: int, text: str | None) -> None:
        """``count`` tokens (``text``, kept for every VERIFY_EVERY-th stream) parsed at ``now``."""
        first = self.received
        self.received = first + count
        if not self.established:
            self.established = True
            self.gen.mark_established()
        if self.text is not None and text is not None:
            self.text.append(text)
        recorder = self.gen.recorder
        in_window = recorder.w0 <= now < recorder.w1
        if in_window:
            recorder.delivered += count
        schedule = self.schedule
        if recorder.latency and schedule is not None:
            start = schedule.t0 + schedule.ttft
            interval = schedule.interval
            for index in range(first, first + count):
                if index == 0:
                    recorder.ttft.append(now - start)
                elif in_window:
                    recorder.itl.append(now - start - index * interval)
        if self.follow is not None:
            self.follow.delivered(self.received, now)

    def count_of(self, delta: str) -> int:
        """Tokens in a text delta: one per leading space, plus the first token (no space)."""
        return delta.count(" ") + (1 if self.received == 0 else 0)

    # -- protocol-specific ----------------------------------------------------------------

    def send_request(self) -> None:
        raise NotImplementedError

    def parse(self, data: bytes, now: float) -> None:
        raise NotImplementedError


class SSEStream(Stream):
    """``POST <path>`` with the schedule; the response is an SSE stream (any framing flavour)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.parser = httptools.HttpResponseParser(self)
        self.sep: bytes = self.gen.client["sep"]
        self.tokenwire: bool = self.gen.client["json"]
        self.usage: bool = self.gen.client.get("usage", False)
        self.now = 0.0

    def send_request(self) -> None:
        if self.mode == "idle":
            schedule = Schedule(time.monotonic(), tokens=1, ttft=IDLE_TTFT, interval=0)
            self.schedule = schedule
        else:
            schedule = self.new_schedule()
        body = json.dumps(request_fields(schedule), separators=(",", ":")).encode()
        assert self.transport is not None
        self.transport.write(self.gen.request_head % len(body) + body)
        if self.mode == "stalled":
            self.stall()

    def parse(self, data: bytes, now: float) -> None:
        self.now = now
        self.parser.feed_data(data)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status != 200:
            self.fail(f"HTTP {status}")
        elif self.mode == "idle":
            self.established = True
            self.gen.mark_established()

    def on_body(self, body: bytes) -> None:
        events = (self.buffer + body if self.buffer else body).split(self.sep)
        self.buffer = events.pop()
        if self.tokenwire:
            for event in events:
                if b"event: text.delta" in event:
                    delta = json.loads(event[event.index(b"data: ") + 6 :])["delta"]
                    self.deliver(self.now, self.count_of(delta), delta)
                elif b"event: stream.end" in event:
                    self.end()
                elif b"event: error" in event:
                    self.fail(event.decode(errors="replace"))
        elif self.usage:
            for event in events:
                if event.startswith(b"data: "):  # a delta (one or more tokens, counted)
                    delta = json.loads(event[6:])["delta"]
                    self.deliver(self.now, self.count_of(delta), delta)
                elif event.startswith(b"event: usage\n"):
                    self.check_usage(json.loads(event[event.index(b"data: ") + 6 :]))
        else:
            for event in events:
                if event.startswith(b"data:"):
                    self.deliver(self.now, 1, event[6:].decode() if self.text is not None else None)

    def check_usage(self, usage: dict[str, Any]) -> None:
        """The server's count of the tokens it streamed (the last event) must be the tokens
        counted in the deltas received; then the stream has ended."""
        if usage.get("completion_tokens") != self.received:
            self.fail(f"usage says {usage.get('completion_tokens')} tokens, got {self.received}")
        else:
            self.end()

    def on_message_complete(self) -> None:
        if self.usage:
            if not self.ended:
                self.fail("the response ended without its usage event")
        elif not self.tokenwire:
            self.end()


class WSStream(Stream):
    """WebSocket ``GET <path>``; ``generate`` with the schedule once the upgrade is done."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.key = ws_key()
        self.upgraded = False
        self.tokenwire: bool = self.gen.client["json"]

    def send_request(self) -> None:
        assert self.transport is not None
        self.transport.write(self.gen.request_head % self.key)

    def generate(self) -> None:
        fields = request_fields(self.new_schedule())
        message = {"type": "generate", "request_id": str(self.index), **fields}
        assert self.transport is not None
        self.transport.write(ws_frame(0x1, json.dumps(message, separators=(",", ":")).encode()))

    def parse(self, data: bytes, now: float) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            self.handshake(buffer[: end + 4])
            buffer = buffer[end + 4 :]
        position, size = 0, len(buffer)
        while size - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length, header = second & 0x7F, 2
            if length == 126:
                if size - position < 4:
                    break
                length, header = int.from_bytes(buffer[position + 2 : position + 4]), 4
            elif length == 127:
                if size - position < 10:
                    break
                length, header = int.from_bytes(buffer[position + 2 : position + 10]), 10
            end = position + header + length
            if end > size:
                break
            if second & 0x80 or not first & 0x80:
                raise ValueError("masked or fragmented frame from the server")
            self.frame(first & 0x0F, buffer[position + header : end], now)
            position = end
        self.buffer = buffer[position:]

    def handshake(self, head: bytes) -> None:
        accept = ws_accept(self.key)
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            raise ValueError(f"upgrade refused: {head.splitlines()[0]!r}")
        self.upgraded = True
        if self.mode == "idle":
            self.established = True
            self.gen.mark_established()
        else:
            self.generate()
            if self.mode == "stalled":
                self.stall()

    def frame(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == 0x1:
            if self.tokenwire:
                event = json.loads(payload)
                kind = event.get("type")
                if kind == "text.delta":
                    delta = event["delta"]
                    self.deliver(now, self.count_of(delta), delta)
                elif kind == "stream.end":
                    self.end()
                elif kind == "error":
                    self.fail(f"error event: {payload[:200]!r}")
            else:
                self.deliver(now, 1, payload.decode() if self.text is not None else None)
        elif opcode == 0x8:  # close: a baseline's end of stream, or the server going away
            code = int.from_bytes(payload[:2]) if len(payload) >= 2 else 1005
            if code == 1000 and not self.tokenwire:
                self.end()
            else:
                self.fail(f"closed by the server with code {code}")
        elif opcode == 0x9 and self.transport is not None:  # ping -> pong
            self.transport.write(ws_frame(0xA, payload))


def followed_event(stream: Stream, event: dict[str, Any], now: float) -> None:
    """One tokenwire event (protocol v1) on a followed connection: a replayed event whose seq
    the client had already seen counts as duplicated and is not delivered again."""
    follow = stream.follow
    assert follow is not None
    kind = event.get("type")
    if kind == "text.delta":
        delta = event["delta"]
        count = stream.count_of(delta)
        if follow.seen(event.get("seq"), count):
            stream.deliver(now, count, delta)
    elif kind == "stream.start":
        follow.seen(event.get("seq"), 0)
        follow.start(event["stream_id"])
    elif kind == "stream.end":
        follow.seen(event.get("seq"), 0)
        follow.finished(now, event.get("finish_reason"))
        stream.end()
    elif kind in ("error", "stream.reset"):
        stream.fail(f"{kind}: {json.dumps(event)[:200]}")


class FollowedSSE(SSEStream):
    """tokenwire over SSE, each event parsed (id, type, seq), for a :class:`Follow`. Sends
    ``request`` (bytes: e.g. ``GET /v1/streams/{id}/events`` with ``Last-Event-ID``), or, if
    None, the usual ``POST /v1/streams``."""

    def __init__(self, gen: Generator, index: int, follow: Follow, request: bytes | None = None):
        super().__init__(gen, index, "active", lambda: follow.schedule)
        self.follow = follow
        self.received = follow.received
        self.text = follow.text
        self.request = request

    def send_request(self) -> None:
        if self.request is None:
            super().send_request()
        else:
            assert self.transport is not None
            self.schedule = self.schedule_of()
            self.transport.write(self.request)

    def on_body(self, body: bytes) -> None:
        events = (self.buffer + body if self.buffer else body).split(self.sep)
        self.buffer = events.pop()
        for event in events:
            start = event.find(b"data: ")
            if start >= 0:  # not a comment (ping) or retry
                followed_event(self, json.loads(event[start + 6 :]), self.now)


class FollowedWS(WSStream):
    """tokenwire over WebSocket, for a :class:`Follow`: after the upgrade it sends ``message``
    (e.g. ``resume``), or, if None, the usual ``generate``."""

    def __init__(
        self, gen: Generator, index: int, follow: Follow, message: dict[str, Any] | None = None
    ):
        super().__init__(gen, index, "active", lambda: follow.schedule)
        self.follow = follow
        self.received = follow.received
        self.text = follow.text
        self.message = message

    def generate(self) -> None:
        if self.message is None:
            super().generate()
        else:
            self.schedule = self.schedule_of()
            self.send(self.message)

    def send(self, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(ws_frame(0x1, json.dumps(message, separators=(",", ":")).encode()))

    def frame(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == 0x1:
            followed_event(self, json.loads(payload), now)
        else:
            super().frame(opcode, payload, now)


class Generator:
    """Opens, counts and closes the streams of one job; reads the server's CPU and RSS."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.name: str = job["server"]
        self.client = CLIENTS[self.name]
        self.port: int = job["port"]
        self.rate: float = job["rate"]
        self.features: set[str] = set(job.get("features", ()))  # of tokenwire: cancel, resume
        self.read_every: float = job.get("read_every", 0.01)
        self.stalled_socket: tuple[int, int] | None = None  # stalled streams' (rcvbuf, mss)
        self.server = psutil.Process(job["server_pid"])
        # with "server_pids" (a server of several processes: a supervisor and its workers),
        # the server's CPU is theirs together
        pids = job.get("server_pids") or [job["server_pid"]]
        self.processes = [psutil.Process(pid) for pid in pids]
        self.redis_port: int | None = job.get("redis_port")
        self.loop = asyncio.get_running_loop()
        self.stream_class = SSEStream if self.client["protocol"] == "sse" else WSStream
        host = f"127.0.0.1:{self.port}"
        if self.client["protocol"] == "sse":
            self.request_head = (
                f"POST {self.client['path']} HTTP/1.1\r\nHost: {host}\r\n"
                "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                "Content-Length: %d\r\n\r\n"
            ).encode()
        else:
            self.request_head = (
                f"GET {self.client['path']} HTTP/1.1\r\nHost: {host}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        self.recorder = Recorder()
        self.streams: list[Stream] = []
        self.open_streams: set[Stream] = set()
        self.failures: list[str] = []
        self.established = 0
        self.verified = 0
        self.mismatches = 0
        self.closing = False
        self.lag = array("d")
        self.changed = asyncio.Event()
        self.quiesce_s: list[float] = []  # seconds each close_all waited for a quiet server
        self.quiesce_within: float = job.get("quiesce_within", 20.0)
        self.warnings: list[str] = []
        self.phase = ""

    # -- streams --------------------------------------------------------------------------

    async def open(self, count: int, mode: str, spread: float, schedule_of: Any = None) -> None:
        """Open ``count`` streams spaced evenly over ``spread`` seconds; returns when every
        connection attempt has finished (not when the streams are established)."""

        async def one(index: int) -> None:
            stream = self.stream_class(self, index, mode, schedule_of)
            options = self.stalled_socket if mode == "stalled" else None
            await self.connect(stream, *(options or ()))

        attempts = []
        base = len(self.streams)
        start = time.monotonic()
        for number in range(count):
            delay = start + spread * number / count - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            attempts.append(asyncio.ensure_future(one(base + number)))
        await asyncio.gather(*attempts)

    async def connect(
        self,
        stream: Stream,
        rcvbuf: int | None = None,
        mss: int | None = None,
        *,
        port: int | None = None,
    ) -> None:
        """Connect ``stream`` to the server. ``rcvbuf``: its socket's SO_RCVBUF and ``mss``:
        its TCP_MAXSEG (bytes), both set before connecting so that they hold from the start
        (the server's side then sees that segment size: Linux sizes a send buffer by
        congestion window x segment size, so loopback's 64 KiB segments would give a stalled
        socket megabytes of kernel buffer, an Ethernet path's ~1,448 bytes a few dozen KiB).
        ``port``: another server's (default: the job's). A failed connect fails the stream."""
        self.streams.append(stream)
        address = ("127.0.0.1", port or self.port)
        try:
            if rcvbuf is None and mss is None:
                await self.loop.create_connection(lambda: stream, *address)
                return
            sock = socket.socket()
            try:
                if rcvbuf is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                if mss is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
                sock.setblocking(False)
                await self.loop.sock_connect(sock, address)
            except BaseException:
                sock.close()
                raise
            await self.loop.create_connection(lambda: stream, sock=sock)
        except OSError as exc:
            stream.fail(f"connect: {exc}")

    def followed(self, index: int, follow: Follow, request: Any = None) -> Stream:
        """A connection of this server's kind for ``follow`` (tokenwire only): ``request`` is a
        WebSocket message (dict) or an SSE request (bytes); None starts the stream as usual."""
        if self.client["protocol"] == "ws":
            return FollowedWS(self, index, follow, request)
        return FollowedSSE(self, index, follow, request)

    def events_request(self, stream_id: str, after_seq: int | None) -> bytes:
        """tokenwire's SSE attach (``after_seq`` None) or resume request for ``stream_id``."""
        head = f"GET /v1/streams/{stream_id}/events HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
        head += "Accept: text/event-stream\r\n"
        if after_seq is not None:
            head += f"Last-Event-ID: {after_seq}\r\n"
        return (head + "\r\n").encode()

    def mark_established(self) -> None:
        self.established += 1
        self.changed.set()

    async def wait_established(self, target: int, within: float) -> None:
        """Until ``target`` streams are established or failed, or ``within`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self.established + len(self.failures) < target:
                    self.changed.clear()
                    await self.changed.wait()

    async def close_all(self, settle: float) -> None:
        """Abort every open stream, wait ``settle / 2`` seconds, then until the server is
        quiet again (see :meth:`quiesce`)."""
        self.closing = True
        for stream in list(self.open_streams):
            stream.verify()
            stream.close()
        began = time.monotonic()
        await asyncio.sleep(settle / 2)
        await self.quiesce()
        self.quiesce_s.append(time.monotonic() - began)
        self.closing = False
        self.streams.clear()
        self.established = 0

    async def quiesce(self, busy: float = 0.05) -> None:
        """Until the server used less than ``busy`` of a CPU over 0.2 s twice in a row (at most
        ``quiesce_within`` seconds; then a warning). A server that fell behind its schedule
        keeps working for a while after its clients left (overdue tokens, disconnects noticed
        late); the next phase must not pay for that."""
        within = self.quiesce_within
        if await self.calm(busy, within) is None:
            self.warnings.append(f"server still busy {within:g} s after its clients left")

    async def calm(self, busy: float, within: float, period: float = 0.2) -> float | None:
        """Seconds from now until the server began to use less than ``busy`` of a CPU over
        ``period`` s, twice in a row (returns once it has); None if not within ``within`` s."""
        began = time.monotonic()
        quiet, since, deadline = 0, began, began + within
        before = self.server_cpu()
        while quiet < 2 and time.monotonic() < deadline:
            start = time.monotonic()
            await asyncio.sleep(period)
            now = self.server_cpu()
            if now - before < busy * period:
                since = start if quiet == 0 else since
                quiet += 1
            else:
                quiet = 0
            before = now
        return since - began if quiet >= 2 else None

    def active_schedule(self, seconds: float, rate: float | None = None) -> Callable[[], Schedule]:
        """Schedules of streams that last ``seconds`` at ``rate`` tokens/s (default: the job's)."""
        rate = rate or self.rate
        tokens = max(1, math.ceil(seconds * rate))
        return lambda: Schedule(time.monotonic(), tokens=tokens, ttft=0.0, interval=1 / rate)

    # -- measurements ---------------------------------------------------------------------

    def server_cpu(self) -> float:
        return sum(self.process_cpu())

    def process_cpu(self) -> list[float]:
        """CPU seconds of each of the server's processes (one, or the job's
        ``server_pids``), user and system."""
        cpu = []
        for process in self.processes:
            times = process.cpu_times()
            cpu.append(float(times.user + times.system))
        return cpu

    async def server_rss(self) -> int:
        samples = []
        for _ in range(3):
            samples.append(self.server.memory_info().rss)
            await asyncio.sleep(0.05)
        return sorted(samples)[1]

    async def ticker(self) -> None:
        """Record how late this event loop wakes up (client-side lag) inside the window."""
        period = 0.01
        while True:
            before = time.monotonic()
            await asyncio.sleep(period)
            after = time.monotonic()
            if self.recorder.w0 <= after < self.recorder.w1:
                self.lag.append(after - before - period)

    async def measure(self, seconds: float) -> dict[str, Any]:
        """Open the window for ``seconds`` and return CPU, counts and client lag within it."""
        self.lag = array("d")
        redis0 = await redis_traffic(self.redis_port) if self.redis_port else None
        each0, own0 = self.process_cpu(), time.process_time()
        emit({"type": "window", "server": self.name, "phase": self.phase, "seconds": seconds})
        self.recorder.open_window(seconds)
        await asyncio.sleep(seconds)
        each1, own1 = self.process_cpu(), time.process_time()
        redis1 = await redis_traffic(self.redis_port) if self.redis_port else None
        delivered = self.recorder.delivered
        self.recorder.w0 = self.recorder.w1 = math.inf
        each = [after - before for before, after in zip(each0, each1, strict=True)]
        server_cpu, client_cpu = sum(each), own1 - own0
        extra: dict[str, Any] = {}
        if len(each) > 1:  # as the job's server_pids: e.g. the supervisor, then its workers
            extra["process_cpu_s"] = each
        if redis0 is not None and redis1 is not None:
            traffic = {key: redis1[key] - redis0.get(key, 0) for key in redis1}
            extra["redis"] = traffic
            extra["redis_per_token"] = (
                {key: value / delivered for key, value in traffic.items()} if delivered else None
            )
        return {
            **extra,
            "window_s": seconds,
            "tokens": delivered,
            "tokens_per_s": delivered / seconds,
            "server_cpu_s": server_cpu,
            "client_cpu_s": client_cpu,
            "server_cpu_us_per_token": 1e6 * server_cpu / delivered if delivered else None,
            "client_cpu_us_per_token": 1e6 * client_cpu / delivered if delivered else None,
            "server_busy": server_cpu / seconds,
            "client_busy": client_cpu / seconds,
            "client_lag_p99_ms": 1e3 * quantiles(self.lag, [0.99])[0] if self.lag else None,
        }

    def progress(self, **fields: Any) -> None:
        emit({"type": "progress", "server": self.name, **fields})


# -- phases ---------------------------------------------------------------------------------


async def phase_memory(gen: Generator, spec: dict[str, Any]) -> dict[str, Any]:
    """Server RSS with 0..``connections`` idle connections, then as many active streams on
    top, in ``steps`` steps. Idle: a WebSocket after the upgrade with no stream; an SSE stream
    whose first token is due in an hour. Active: a stream delivering ``rate`` tokens/s (low, so
    that no server falls behind and holds a backlog). Bytes per connection = least-squares
    slope."""
    connections, steps, settle = spec["connections"], spec["steps"], spec["settle"]
    gen.recorder = Recorder(latency=False)
    warm = lambda: Schedule(time.monotonic(), tokens=5, ttft=0.0, interval=0.0)  # noqa: E731
    await gen.open(spec.get("warmup", 20), "active", 0.2, warm)
    await asyncio.sleep(settle)
    await gen.close_all(0.2)
    base = await gen.server_rss()
    points: dict[str, list[list[int]]] = {"idle": [[0, base]], "active": []}
    per_step = [connections * (k + 1) // steps - connections * k // steps for k in range(steps)]
    active_seconds = 2 * steps * (settle + 1) + 30
    for mode in ("idle", "active"):
        if mode == "active":
            points["active"].append([0, points["idle"][-1][1]])
        opened = 0
        for count in per_step:
            target = gen.established + count
            schedule_of = gen.active_schedule(active_seconds, spec["rate"])
            await gen.open(count, mode, 0.25, schedule_of)
            await gen.wait_established(target, 30)
            opened += count
            await asyncio.sleep(settle)
            points[mode].append([opened, await gen.server_rss()])
            gen.progress(phase="memory", detail=f"{opened} {mode}")
    await gen.close_all(settle)
    return {
        "points": points,
        "idle_bytes_per_connection": slope(points["idle"]),
        "active_bytes_per_connection": slope(points["active"]),
        "base_rss_bytes": base,
    }


async def phase_load(gen: Generator, spec: dict[str, Any]) -> dict[str, Any]:
    """Steps of ``streams`` concurrent streams at ``rate`` tokens/s each: top up (new streams
    spread over ``spread`` s), wait ``settle`` s, measure ``window`` s. With ``stop_p99_ms``,
    stop after the first step whose added inter-token p99 exceeds it (or that lost streams)."""
    steps: list[int] = spec["streams"]
    window, settle, spread = spec["window"], spec["settle"], spec["spread"]
    stop = spec.get("stop_p99_ms")
    lifetime = len(steps) * (spread + settle + window + 2) + 10
    results, sustained = [], 0
    all_ttft, all_itl = array("d"), array("d")
    for number, target in enumerate(steps, 1):
        gen.recorder = Recorder()
        failures = len(gen.failures)
        missing = target - len(gen.open_streams)
        await gen.open(max(missing, 0), "active", spread, gen.active_schedule(lifetime))
        await asyncio.sleep(settle)
        step = await gen.measure(window)
        recorder = gen.recorder
        step.update(
            streams=target,
            open_streams=len(gen.open_streams),
            failed_streams=len(gen.failures) - failures,
            ttft_ms=summary(recorder.ttft),
            itl_ms=summary(recorder.itl),
        )
        all_ttft.extend(recorder.ttft)
        all_itl.extend(recorder.itl)
        results.append(step)
        p99 = step["itl_ms"]["p99"]
        ok = step["failed_streams"] == 0 and p99 is not None and (stop is None or p99 < stop)
        if ok:
            sustained = target
        gen.progress(
            phase=spec["name"], detail=f"step {number}/{len(steps)}: {target} streams, p99 {p99}"
        )
        if stop is not None and not ok:
            break
    await gen.close_all(settle)
    return {
        "steps": results,
        "max_streams": sustained,
        "ttft_ms": summary(all_ttft),
        "itl_ms": summary(all_itl),
        "cdf": {"ttft_ms": cdf(all_ttft), "itl_ms": cdf(all_itl)},
    }


async def phase_outpace(gen: Generator, spec: dict[str, Any]) -> dict[str, Any]:
    """``streams`` streams whose ``tokens`` tokens are all due at once; each socket is read at
    most once per ``read_every`` s, so the provider outpaces the client. Measured: tokens
    delivered per second and per server CPU-second in a ``window`` s window."""
    gen.recorder = Recorder(latency=False)
    gen.read_every = spec["read_every"]
    tokens = spec["tokens"]
    burst = lambda: Schedule(time.monotonic(), tokens=tokens, ttft=0.0, interval=0.0)  # noqa: E731
    await gen.open(spec["streams"], "outpace", 0.1, burst)
    await asyncio.sleep(spec["settle"])
    result = await gen.measure(spec["window"])
    result["tokens_per_server_cpu_s"] = (
        result["tokens"] / result["server_cpu_s"] if result["server_cpu_s"] else None
    )
    await gen.close_all(spec["settle"])
    gen.progress(phase="outpace", detail=f"{result['tokens_per_s']:.0f} tokens/s")
    return result


async def phase_cancel(gen: Generator, spec: dict[str, Any]) -> dict[str, Any]:
    """``cancels`` cancels, ``concurrency`` at a time, of each kind the server has:
    ``disconnect`` (every server: the client drops the connection) and ``cancel`` (tokenwire:
    WebSocket ``{"type": "cancel"}``, SSE ``POST /v1/streams/{id}/cancel``). Each stream runs
    at the job's rate; the client cancels at a random moment between two tokens once
    ``after_tokens`` tokens have arrived. Measured from just before the cancel (milliseconds):
    ``stop_ms``, until the server's token generator stopped (the server's own clock, see
    :class:`transport.control.StopWatch`); for ``cancel`` also ``end_ms``, until ``stream.end``
    arrived, whose finish_reason must be cancelled. With the job's ``cancel_stall`` (tokenwire),
    also ``stall``: streams whose first token is due after ``within`` + 5 s, dropped by the
    client once ``stream.start`` arrived (a provider stalled before its first token must stop
    too). A stop not seen within ``within`` seconds counts in ``not_stopped``."""
    gen.recorder = Recorder(latency=False)
    rng = random.Random(spec.get("seed", 6))
    interval, within = 1 / gen.rate, spec["within"]
    tokens = spec["after_tokens"] + math.ceil(gen.rate * (within + 5))  # outlive the cancel
    watch = StopWatch(gen.port)
    kinds = ["disconnect", *(["cancel"] if "cancel" in gen.features else [])]
    if gen.job.get("cancel_stall") and "cancel" in gen.features:
        kinds.append("stall")
    results: dict[str, Any] = {"cancel": None}

    async def one(kind: str, number: int, stats: dict[str, Any]) -> None:
        ttft = within + 5 if kind == "stall" else 0.0  # a stall outlives the cancel
        schedule = Schedule(time.monotonic(), tokens=tokens, ttft=ttft, interval=interval)
        follow = Follow(schedule)
        if kind != "disconnect":
            stream = gen.followed(number, follow)
        else:
            stream = gen.stream_class(gen, number, "active", lambda: schedule)
            stream.follow = follow
        await gen.connect(stream)
        try:
            if kind == "stall":
                async with asyncio.timeout(within):
                    await follow.started
            else:
                await follow.tokens(spec["after_tokens"], within)
                await asyncio.sleep(rng.uniform(0, interval))
            began = time.monotonic()
            if kind != "cancel":
                stream.abandon()
            elif isinstance(stream, FollowedWS):
                stream.send({"type": "cancel", "stream_id": follow.stream_id})
            else:
                status, _, body = await http_request(
                    gen.port, "POST", f"/v1/streams/{follow.stream_id}/cancel"
                )
                if status != 202:
                    stream.fail(f"cancel: HTTP {status} {body[:200]!r}")
            if kind == "cancel":
                async with asyncio.timeout(within):
                    ended = await follow.ended
                stats["end"].append(ended - began)
                stats["not_cancelled"] += follow.finish_reason != "cancelled"
        except (TimeoutError, RuntimeError) as exc:
            stream.fail(f"{kind} {number}: {type(exc).__name__}: {exc}")
            return
        stopped = await watch.stopped(schedule.t0, began, within)
        if stopped is None:
            stats["not_stopped"] += 1
        else:
            stats["stop"].append(stopped - began)

    try:
        for kind in kinds:
            stats: dict[str, Any] = {
                "stop": array("d"), "end": array("d"), "not_stopped": 0, "not_cancelled": 0
            }  # fmt: skip
            numbers = iter(range(spec["cancels"]))

            async def worker(
                kind: str = kind, stats: dict[str, Any] = stats, numbers: Any = numbers
            ) -> None:
                for number in numbers:
                    await one(kind, number, stats)

            await asyncio.gather(*(worker() for _ in range(spec["concurrency"])))
            result = {
                "samples": spec["cancels"],
                "stop_ms": summary(stats["stop"]),
                "not_stopped": stats["not_stopped"],
            }
            if kind == "cancel":
                result.update(end_ms=summary(stats["end"]), not_cancelled=stats["not_cancelled"])
            results[kind] = result
            gen.progress(phase="cancel", detail=f"{kind}: stop p50 {result['stop_ms']['p50']} ms")
    finally:
        polls = watch.polls
        await watch.close()
    await gen.close_all(spec["settle"])
    results.update(concurrency=spec["concurrency"], active_polls=polls)
    return results


async def phase_isolation(gen: Generator, spec: dict[str, Any]) -> dict[str, Any]:
    """Slow-consumer isolation. ``healthy`` streams at the job's rate (opened over ``spread``
    s); after ``settle`` s, a ``window``-second measurement of their added inter-token latency
    (``alone``). Then ``stalled`` consumers join: streams whose ``stalled_tokens`` tokens are
    all due at once, on sockets with a ``rcvbuf``-byte receive buffer and an ``mss``-byte
    segment size (an Ethernet path's, see :meth:`Generator.connect`) that the client never
    reads. The server writes to each what its buffers take (a bounded queue, uvicorn's write
    buffer, the kernel's send buffer) at full speed: ``fill`` is that time, until the server's
    CPU falls back to within 0.1 CPU of the ``alone`` level (at most ``fill_within`` s, else
    ``fill_s`` is None and a warning), with the healthy streams' latency over it. Then the same
    measurement as alone, steady (``stalled``). ``p99_ratio`` = added inter-token p99 steady
    with / alone, ``fill_p99_ratio`` the same over the fill; ``rss_bytes_per_stalled`` = RSS
    growth (alone -> steady) / ``stalled``. Times in seconds, latencies in milliseconds."""
    healthy, stalled = spec["healthy"], spec["stalled"]
    window, settle, spread = spec["window"], spec["settle"], spec["spread"]
    lifetime = spread + settle + 2 * window + spec["fill_within"] + 10

    async def measured(label: str) -> dict[str, Any]:
        gen.recorder = Recorder()
        result = await gen.measure(window)
        result.update(
            itl_ms=summary(gen.recorder.itl),
            rss_bytes=await gen.server_rss(),
            healthy_open=sum(1 for s in gen.open_streams if s.mode == "active"),
        )
        gen.progress(phase="isolation", detail=f"{label}: p99 {result['itl_ms']['p99']} ms")
        return result

    await gen.open(healthy, "active", spread, gen.active_schedule(lifetime))
    await asyncio.sleep(settle)
    alone = await measured("alone")
    burst = lambda: Schedule(time.monotonic(), spec["stalled_tokens"], 0.0, 0.0)  # noqa: E731
    gen.recorder = Recorder()
    gen.recorder.open_window(spec["fill_within"] + 1)
    gen.stalled_socket = (spec["rcvbuf"], spec["mss"])
    began = time.monotonic()
    await gen.open(stalled, "stalled", 0.0, burst)
    fill_s = await gen.calm(alone["server_busy"] + 0.1, spec["fill_within"])
    gen.recorder.w1 = time.monotonic()
    fill = {"fill_s": fill_s, "itl_ms": summary(gen.recorder.itl)}
    fill["window_s"] = gen.recorder.w1 - began
    if fill_s is None:
        gen.warnings.append(f"stalled consumers kept the server busy > {spec['fill_within']:g} s")
    with_stalled = await measured(f"{stalled} stalled")
    await gen.close_all(settle)
    ratio = lambda p99, base: p99 / base if p99 is not None and base else None  # noqa: E731
    p99_alone = alone["itl_ms"]["p99"]
    return {
        "healthy_streams": healthy,
        "stalled_consumers": stalled,
        "alone": alone,
        "fill": fill,
        "stalled": with_stalled,
        "p99_ratio": ratio(with_stalled["itl_ms"]["p99"], p99_alone),
        "fill_p99_ratio": ratio(fill["itl_ms"]["p99"], p99_alone),
        "rss_bytes_per_stalled": (with_stalled["rss_bytes"] - alone["rss_bytes"]) / stalled,
    }


async def phase_resume(gen: Generator, spec: dict[str, Any]) -> dict[str, Any]:
    """tokenwire's resume. ``streams`` streams of ``tokens`` tokens at the job's rate (started
    over ``spread`` s, detached: SSE ``POST /v1/streams`` with ``Accept: application/json``,
    WebSocket ``generate``, both ``"on_disconnect": "detach"``). Each is dropped
    ``disconnects`` times (after a random token count, at a random moment between tokens), and
    resumed at once after the last seq seen on a new connection (SSE ``GET
    /v1/streams/{id}/events`` with ``Last-Event-ID``; WebSocket ``resume``). ``gap_ms``:
    disconnect -> the first token that had not arrived before; ``added_gap_ms``: the same from
    that token's due time if it was due after the disconnect. Then to ``stream.end``:
    ``lost_tokens`` (scheduled - received, each token counted once), ``duplicated_tokens``
    (in events whose seq had been seen), ``inexact_streams`` (text != the scripted text); all
    must be 0. With the job's ``resume_ports`` (the first runs the streams; all share a Redis
    stream log), each resume goes to one of them at random: ``gap_ms_by_server`` (``same``,
    ``other``). With its ``redis_port``: ``redis_commands`` (``INFO commandstats``, over the
    phase) and ``redis_commands_per_token`` (per token delivered, ``tokens_delivered``)."""
    tokens, disconnects, within = spec["tokens"], spec["disconnects"], spec["within"]
    interval = 1 / gen.rate
    rng = random.Random(spec.get("seed", 6))
    gen.recorder = Recorder(latency=False)
    gaps, added = array("d"), array("d")
    ports = gen.job.get("resume_ports") or [gen.port]  # the first one runs the generations
    by_port = {port: array("d") for port in ports}
    redis_port = gen.job.get("redis_port")
    redis_before = await redis_command_calls(redis_port) if redis_port else 0
    counts = {"lost": 0, "duplicated": 0, "inexact": 0, "unfinished": 0, "delivered": 0}
    finish_reasons: dict[str, int] = {}

    async def one(number: int) -> None:
        await asyncio.sleep(spec["spread"] * number / spec["streams"])
        schedule = Schedule(time.monotonic(), tokens=tokens, ttft=0.0, interval=interval)
        follow = Follow(schedule)
        fields = {**request_fields(schedule), "on_disconnect": "detach"}
        websocket = gen.client["protocol"] == "ws"
        stream: Stream | None = None
        try:
            if websocket:
                message = {"type": "generate", "request_id": str(number), **fields}
                stream = gen.followed(number, follow, message)
            else:
                accept = {"Accept": "application/json"}
                status, _, body = await http_request(
                    gen.port, "POST", "/v1/streams", fields, accept
                )
                if status != 201:
                    raise RuntimeError(f"POST /v1/streams: HTTP {status} {body[:200]!r}")
                follow.start(json.loads(body)["stream_id"])
                stream = gen.followed(number, follow, gen.events_request(follow.stream_id, None))
            await gen.connect(stream)
            points = sorted(rng.sample(range(1, tokens - 1), disconnects))
            for point in points:
                await follow.tokens(point, within)
                await asyncio.sleep(rng.uniform(0, interval))
                before, began = follow.received, time.monotonic()
                port = rng.choice(ports) if len(ports) > 1 else gen.port
                stream.abandon()
                assert follow.stream_id is not None
                if websocket:
                    message = {"type": "resume", "stream_id": follow.stream_id}
                    stream = gen.followed(number, follow, {**message, "after_seq": follow.last_seq})
                else:
                    request = gen.events_request(follow.stream_id, follow.last_seq)
                    stream = gen.followed(number, follow, request)
                await gen.connect(stream, port=port)
                first = await follow.tokens(before + 1, within)
                gaps.append(first - began)
                by_port[port].append(first - began)
                added.append(first - max(began, schedule.due(before)))
            async with asyncio.timeout(tokens * interval + within):
                await follow.ended
        except (TimeoutError, RuntimeError) as exc:
            counts["unfinished"] += 1
            reason = f"resume {number}: {type(exc).__name__}: {exc}"
            if stream is None:
                gen.failures.append(reason)
            else:
                stream.fail(reason)
            return
        reason = str(follow.finish_reason)
        finish_reasons[reason] = finish_reasons.get(reason, 0) + 1
        counts["lost"] += tokens - follow.received
        counts["duplicated"] += follow.duplicated
        counts["inexact"] += "".join(follow.text) != scripted_text(tokens)
        counts["delivered"] += follow.received

    await asyncio.gather(*(one(number) for number in range(spec["streams"])))
    gen.progress(phase="resume", detail=f"{len(gaps)} resumes")
    await gen.close_all(spec["settle"])
    extra: dict[str, Any] = {}
    if len(ports) > 1:  # resumed on the server that runs the stream, or on another one
        extra["gap_ms_by_server"] = {
            "same": summary(by_port[ports[0]]),
            "other": summary(array("d", (g for p in ports[1:] for g in by_port[p]))),
        }
    if redis_port:  # everything the servers sent to Redis over the phase, settle included
        commands = await redis_command_calls(redis_port) - redis_before
        delivered = counts["delivered"]
        extra.update(
            stream_log="redis",
            redis_commands=commands,
            tokens_delivered=delivered,
            redis_commands_per_token=commands / delivered if delivered else None,
        )
    return {
        **extra,
        "streams": spec["streams"],
        "resumes": len(gaps),
        "gap_ms": summary(gaps),
        "added_gap_ms": summary(added),
        "lost_tokens": counts["lost"],
        "duplicated_tokens": counts["duplicated"],
        "inexact_streams": counts["inexact"],
        "unfinished_streams": counts["unfinished"],
        "finish_reasons": finish_reasons,
    }


PHASES: dict[str, Callable[[Generator, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "memory": phase_memory,
    "latency": phase_load,
    "ramp": phase_load,
    "outpace": phase_outpace,
    "cancel": phase_cancel,
    "isolation": phase_isolation,
    "resume": phase_resume,
}


# -- entry point ----------------------------------------------------------------------------


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def run(job: dict[str, Any]) -> dict[str, Any]:
    gen = Generator(job)
    ticker = asyncio.ensure_future(gen.ticker())
    results: dict[str, Any] = {}
    try:
        for spec in job["phases"]:
            gen.failures = []
            gen.verified = gen.mismatches = 0
            gen.quiesce_s = []
            gen.warnings = []
            gen.phase = spec["name"]
            began = time.monotonic()
            result = await PHASES[spec["name"]](gen, spec)
            result.update(
                elapsed_s=time.monotonic() - began,
                failures=len(gen.failures),
                failure_examples=sorted(set(gen.failures))[:5],
                verified_streams=gen.verified,
                text_mismatches=gen.mismatches,
                quiesce_s=gen.quiesce_s,
                warnings=gen.warnings,
            )
            results[spec["name"]] = result
    finally:
        ticker.cancel()
    return results


def main() -> None:
    """Read the job (JSON on stdin): ``server`` (a key of :data:`CLIENTS`), ``port``,
    ``server_pid``, ``rate`` (tokens/s of active streams), ``phases`` (a list of
    ``{"name": <a key of PHASES>, ...}`` specs, see each phase). Writes JSON lines to stdout."""
    job = json.load(sys.stdin)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = uvloop.run(run(job))
    emit({"type": "result", "server": job["server"], "phases": results})


if __name__ == "__main__":
    main()
