"""Resume: reconnect latency, Redis commands per delivered token, lost and duplicated tokens.

What it measures, in one run on one machine, for each stream log backend (``memory``, and
Redis: a ``redis-server`` of the benchmark's own on a free loopback port, no persistence) and
each transport (SSE, WebSocket). Every server under test is ``tokenwire serve`` in a process of
its own on a free loopback port (scripted provider, one token every ``--interval`` seconds,
``on_disconnect=detach``), configured by ``TOKENWIRE_*`` variables:

- *memory*: one server with ``TOKENWIRE_STREAM_LOG=memory``;
- *redis*: two servers, A and B, sharing the redis-server. A runs every generation. A resume on
  A is served from A's memory (a stream that runs in a process is resumed from that process's
  own copy); a resume on B is read from Redis (the scale-out path).

1. **resume latency**: a client starts a stream (SSE ``POST /v1/streams``; WebSocket
   ``generate``), reads 1-20 events (random), aborts the connection (SSE: closes the response;
   WebSocket: aborts the TCP transport, no close frame), waits 5 ms so that the stream moves on,
   then resumes after the last seq it saw (SSE: ``GET /v1/streams/{id}/events`` with
   ``Last-Event-ID`` on a new connection; WebSocket: a new socket and a ``resume`` message).
   Latency = from just before opening the new connection to the first numbered event after
   ``stream.resumed``. ``--resumes`` samples (default 200) per target and transport, targets
   interleaved, after 5 warm-ups; the stream is then cancelled. Ratios are Redis / memory.
2. **Redis commands per delivered token**: the sum of ``calls`` of ``INFO commandstats`` on the
   benchmark's redis-server (the ``info`` command itself left out) before and after
   ``--streams`` concurrent streams x ``--tokens`` tokens on server A with no disconnects,
   divided by the ``text.delta`` events delivered (one token each). Everything the servers send
   to Redis in that window counts (XADD, EXPIRE, owner leases, pub/sub).
3. **lost and duplicated tokens**: ``--reconnects`` forced reconnects (default 1,000) per
   backend and transport. Each stream has 300 tokens; the client reads 1-12 events (random),
   aborts, waits 0, 2 or 10 ms (random: the resume meets the live edge or a catch-up), and
   resumes after its last seq (memory: on the same server; redis: on A or B, at random); until
   ``stream.end``. The text received is compared with ``scripted_text(300)`` exactly; lost =
   300 minus the tokens received (each seq counted once; a token is a word of the text, see
   ``scripted_token``); duplicated = events whose seq had been seen before. Both must be 0,
   every text exact, and every stream must end with ``finish_reason`` ``length``; otherwise the
   script exits with status 1.

Run (from the repository root, with the dev and redis extras installed, and redis-server)::

    .venv/bin/python benchmarks/resume.py            # about 70 s on 2 cores
    .venv/bin/python benchmarks/resume.py --quick    # fewer of everything: about 15 s

It prints a Markdown table. Timings are for a shared, noisy machine: compare the columns of one
run, not runs on different machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import redis
from websockets.asyncio.client import ClientConnection, connect

from measure import percentile  # noqa: E402 - a sibling module of this script
from tokenwire.providers.scripted import scripted_text

TRANSPORTS = ("sse", "websocket")
USER = [{"role": "user", "content": "resume benchmark"}]
LOSS_TOKENS = 300  # tokens per stream in part 3
LATENCY_TOKENS = 4000  # part 1: long enough to be live at the resume (then cancelled)
PAUSES = (0, 0, 0.002, 0.01)  # part 3: seconds between an abort and its resume, drawn at random
WARMUP = 5
TIMEOUT = 15.0  # seconds any one step of a client may take


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- processes --------------------------------------------------------------------------------


class Process:
    """A child process whose output goes to a log file; killed on exit."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def start_redis(stack: contextlib.ExitStack, logdir: Path) -> tuple[str, int]:
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--protected-mode", "no"]
    process = Process("redis", command, dict(os.environ), logdir)
    stack.callback(process.stop)
    client = redis.Redis(port=port)
    stack.callback(client.close)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(redis.RedisError):
            if client.ping():
                return f"redis://127.0.0.1:{port}/0", port
        if not process.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not start:\n{process.log()}")
        time.sleep(0.05)


def start_server(
    stack: contextlib.ExitStack, name: str, stream_log: str, interval: float, logdir: Path
) -> str:
    """``tokenwire serve`` with the scripted provider; returns its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "TOKENWIRE_HOST": "127.0.0.1",
        "TOKENWIRE_PORT": str(port),
        "TOKENWIRE_PROVIDER": "scripted",
        "TOKENWIRE_SCRIPTED_TOKENS": "100000",  # each request's max_tokens sets its length
        "TOKENWIRE_SCRIPTED_INTERVAL": str(interval),
        "TOKENWIRE_ON_DISCONNECT": "detach",
        "TOKENWIRE_DETACH_GRACE": "30",
        "TOKENWIRE_STREAM_LOG": stream_log,
        "TOKENWIRE_DRAIN_TIMEOUT": "1",
        "TOKENWIRE_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "tokenwire.cli", "serve"]
    process = Process(name, command, env, logdir)
    stack.callback(process.stop)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                return base_url
        if not process.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server {name} did not start:\n{process.log()}")
        time.sleep(0.1)


# -- clients ----------------------------------------------------------------------------------


class Connection:
    """One client connection carrying one stream's events (JSON dicts), SSE or WebSocket."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self._response: httpx.Response | None = None
        self._events: AsyncIterator[dict[str, Any]] | None = None
        self._ws: ClientConnection | None = None

    @classmethod
    async def generate(cls, transport: str, http: httpx.AsyncClient, base_url: str, tokens: int):
        self = cls(transport)
        body = {"messages": USER, "max_tokens": tokens, "on_disconnect": "detach"}
        if transport == "sse":
            await self._open_sse(http, "POST", base_url + "/v1/streams", json=body)
        else:
            await self._open_ws(base_url)
            await self._send({"type": "generate", "request_id": "bench", **body})
        return self

    @classmethod
    async def resume(
        cls, transport: str, http: httpx.AsyncClient, base_url: str, stream_id: str, after: int
    ):
        self = cls(transport)
        if transport == "sse":
            url = f"{base_url}/v1/streams/{stream_id}/events"
            await self._open_sse(http, "GET", url, headers={"Last-Event-ID": str(after)})
        else:
            await self._open_ws(base_url)
            await self._send({"type": "resume", "stream_id": stream_id, "after_seq": after})
        return self

    async def _open_sse(self, http: httpx.AsyncClient, method: str, url: str, **kwargs: Any):
        request = http.build_request(method, url, **kwargs)
        self._response = await http.send(request, stream=True)
        if self._response.status_code != 200:
            await self._response.aread()
            raise RuntimeError(
                f"{method} {url}: {self._response.status_code} {self._response.text}"
            )
        self._events = self._sse_events(self._response)

    @staticmethod
    async def _sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        data: str | None = None
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line[6:]
            elif line == "" and data is not None:
                yield json.loads(data)
                data = None

    async def _open_ws(self, base_url: str) -> None:
        url = base_url.replace("http://", "ws://") + "/v1/ws"
        self._ws = await connect(url, compression=None, max_size=None, ping_interval=None)

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send(json.dumps(message))

    async def event(self) -> dict[str, Any]:
        """The next event. Raises EOFError if the connection ended first."""
        async with asyncio.timeout(TIMEOUT):
            if self._ws is not None:
                try:
                    return dict(json.loads(await self._ws.recv()))
                except Exception as exc:
                    raise EOFError(f"the WebSocket closed: {exc!r}") from exc
            assert self._events is not None
            try:
                return await anext(self._events)
            except StopAsyncIteration:
                raise EOFError("the SSE response ended") from None

    async def abort(self) -> None:
        """Drop the connection: no WebSocket close frame, no end of the HTTP exchange."""
        if self._ws is not None:
            self._ws.transport.abort()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._ws.wait_closed()
        if self._response is not None:
            await self._response.aclose()


async def cancel(http: httpx.AsyncClient, base_url: str, stream_id: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        await http.post(f"{base_url}/v1/streams/{stream_id}/cancel")


def new_http() -> httpx.AsyncClient:
    """No keep-alive: every SSE request opens a new TCP connection, like a reconnect does."""
    return httpx.AsyncClient(timeout=TIMEOUT, limits=httpx.Limits(max_keepalive_connections=0))


# -- part 1: resume latency -------------------------------------------------------------------


@dataclass
class Target:
    """Where streams start (``origin``) and where they are resumed (``resume_at``)."""

    name: str
    origin: str
    resume_at: str


async def latency_sample(
    http: httpx.AsyncClient, target: Target, transport: str, rng: random.Random
) -> float:
    """One resume; returns seconds from opening the new connection to the first replayed
    event."""
    conn = await Connection.generate(transport, http, target.origin, LATENCY_TOKENS)
    start = await conn.event()
    stream_id, last_seq = start["stream_id"], start["seq"]
    for _ in range(rng.randint(1, 20)):
        last_seq = (await conn.event())["seq"]
    await conn.abort()
    await asyncio.sleep(0.005)
    began = time.perf_counter()
    back = await Connection.resume(transport, http, target.resume_at, stream_id, last_seq)
    try:
        while True:
            event = await back.event()
            if "seq" in event:
                break
            if event["type"] != "stream.resumed":
                raise RuntimeError(f"unexpected event before the replay: {event}")
        elapsed = time.perf_counter() - began
        if event["seq"] <= last_seq:
            raise RuntimeError(f"replay began at seq {event['seq']}, cursor {last_seq}")
    finally:
        await back.abort()
        await cancel(http, target.origin, stream_id)
    return elapsed


async def measure_latency(
    targets: list[Target], resumes: int, seed: int
) -> dict[tuple[str, str], list[float]]:
    rng = random.Random(seed)
    samples: dict[tuple[str, str], list[float]] = {
        (t.name, transport): [] for t in targets for transport in TRANSPORTS
    }
    async with new_http() as http:
        for i in range(WARMUP + resumes):
            for target in targets:
                for transport in TRANSPORTS:
                    seconds = await latency_sample(http, target, transport, rng)
                    if i >= WARMUP:
                        samples[(target.name, transport)].append(seconds * 1000)
            if i >= WARMUP and (i + 1 - WARMUP) % 50 == 0:
                progress(f"  latency: {i + 1 - WARMUP} resumes per target and transport")
    return samples


# -- part 2: Redis commands per delivered token -----------------------------------------------


def redis_calls(client: redis.Redis) -> int:
    """Commands Redis has executed so far (``INFO commandstats``), ``info`` itself left out
    (``client`` stays connected, so that its own connection setup is not counted either)."""
    stats = client.info("commandstats")
    return sum(int(value["calls"]) for name, value in stats.items() if name != "cmdstat_info")


async def full_stream(http: httpx.AsyncClient, transport: str, base_url: str, tokens: int) -> int:
    conn = await Connection.generate(transport, http, base_url, tokens)
    deltas = 0
    try:
        while True:
            event = await conn.event()
            if event["type"] == "text.delta":
                deltas += 1
            elif event["type"] == "stream.end":
                return deltas
            elif event["type"] == "error":
                raise RuntimeError(f"error event: {event}")
    finally:
        await conn.abort()


async def measure_commands(
    base_url: str, redis_port: int, streams: int, tokens: int
) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with redis.Redis(port=redis_port) as client:
        async with new_http() as http:
            for transport in TRANSPORTS:
                await asyncio.sleep(1.0)  # let earlier writes and lease renewals settle
                before = redis_calls(client)
                delivered = await asyncio.gather(
                    *(full_stream(http, transport, base_url, tokens) for _ in range(streams))
                )
                await asyncio.sleep(0.5)  # the last flush (stream.end reaches clients first)
                commands = redis_calls(client) - before
                total = sum(delivered)
                results[transport] = {
                    "commands": commands,
                    "tokens": total,
                    "per_token": commands / total if total else float("nan"),
                }
    return results


# -- part 3: lost and duplicated tokens -------------------------------------------------------


@dataclass
class Loss:
    reconnects: int = 0
    streams: int = 0
    lost: int = 0
    duplicated: int = 0
    mismatched: int = 0  # streams whose text differs from the provider's
    bad_ends: list[str] = field(default_factory=list)


async def measure_loss(
    transport: str, origin: str, resume_at: list[str], reconnects: int, seed: int
) -> Loss:
    rng = random.Random(seed)
    expected = scripted_text(LOSS_TOKENS)
    loss = Loss()
    async with new_http() as http:
        while loss.reconnects < reconnects:
            conn = await Connection.generate(transport, http, origin, LOSS_TOKENS)
            loss.streams += 1
            seen: set[int] = set()
            stream_id, last_seq, deltas, end = None, 0, [], None
            while end is None:
                # once the reconnects are done, the stream is read to its end
                budget = rng.randint(1, 12) if loss.reconnects < reconnects else 1 << 30
                for _ in range(budget):
                    event = await conn.event()
                    if event["type"] == "stream.resumed":
                        continue
                    if event["type"] in ("stream.reset", "error"):
                        end = event
                        break
                    stream_id = stream_id or event["stream_id"]
                    seq = event["seq"]
                    if seq in seen or seq <= last_seq:
                        loss.duplicated += 1
                        continue
                    seen.add(seq)
                    last_seq = seq
                    if event["type"] == "text.delta":
                        deltas.append(event["delta"])
                    elif event["type"] == "stream.end":
                        end = event
                        break
                await conn.abort()
                if end is None:
                    loss.reconnects += 1
                    await asyncio.sleep(rng.choice(PAUSES))
                    conn = await Connection.resume(
                        transport, http, rng.choice(resume_at), stream_id, last_seq
                    )
            if end.get("type") != "stream.end" or end.get("finish_reason") != "length":
                loss.bad_ends.append(json.dumps(end))
            if "".join(deltas) != expected:
                loss.mismatched += 1
                loss.lost += max(0, LOSS_TOKENS - len(split_tokens("".join(deltas))))
    return loss


def split_tokens(text: str) -> list[str]:
    """Split text back into scripted tokens (each but the first starts with a space)."""
    words = text.split(" ")
    tokens = [words[0], *(" " + word for word in words[1:])]
    return tokens if words[0] else tokens[1:]


# -- report -----------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ms(value: float) -> str:
    return f"{value:.2f}"


def report(args: argparse.Namespace, results: dict[str, Any]) -> bool:
    print()
    print("## tokenwire resume benchmark")
    print()
    print(f"- command: `{shlex.join(sys.orig_argv)}`")
    print(
        f"- machine: {platform.system()} {platform.machine()}, nproc {os.cpu_count()}, "
        f"Python {platform.python_version()}, redis-server {results['redis_version']}"
    )
    print(
        f"- scripted provider: 1 token every {args.interval * 1000:g} ms; "
        f"on_disconnect=detach; total {results['seconds']:.0f} s"
    )
    print()
    latency = results["latency"]
    print(
        f"### 1. resume latency, ms (new connection -> first replayed event), "
        f"{args.resumes} resumes each"
    )
    print()
    print(
        "| transport | memory p50 | memory p99 | redis, same worker p50 | p99 | ratio p50/p99 "
        "| redis, other worker p50 | p99 | ratio p50/p99 |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for transport in TRANSPORTS:
        mem = latency[("memory", transport)]
        cells = [transport, ms(percentile(mem, 50)), ms(percentile(mem, 99))]
        for name in ("redis-same", "redis-other"):
            values = latency[(name, transport)]
            p50, p99 = percentile(values, 50), percentile(values, 99)
            ratio = f"{p50 / percentile(mem, 50):.2f} / {p99 / percentile(mem, 99):.2f}"
            cells += [ms(p50), ms(p99), ratio]
        print("| " + " | ".join(cells) + " |")
    print()
    print(
        "same worker: resumed on the server that runs the generation (served from its memory, "
        "with either log); other worker: resumed on a second server that reads Redis."
    )
    print()
    print(
        f"### 2. Redis commands per delivered token ({args.streams} concurrent streams x "
        f"{args.tokens} tokens, no disconnects)"
    )
    print()
    print("| transport | Redis commands | tokens delivered | commands/token |")
    print("|---|--:|--:|--:|")
    for transport, data in results["commands"].items():
        print(f"| {transport} | {data['commands']} | {data['tokens']} | {data['per_token']:.3f} |")
    print()
    print(f"### 3. lost and duplicated tokens over forced reconnects ({LOSS_TOKENS}-token streams)")
    print()
    print(
        "| log | transport | reconnects | streams | lost tokens | duplicated | bad text | "
        "bad ends | ok |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|---|")
    passed = True
    for (backend, transport), loss in results["loss"].items():
        ok = not (loss.lost or loss.duplicated or loss.mismatched or loss.bad_ends)
        passed &= ok
        print(
            f"| {backend} | {transport} | {loss.reconnects} | {loss.streams} | {loss.lost} | "
            f"{loss.duplicated} | {loss.mismatched} | {len(loss.bad_ends)} | "
            f"{'yes' if ok else '**NO**'} |"
        )
        for end in loss.bad_ends[:3]:
            print(f"\n  bad end ({backend}/{transport}): {end}")
    print()
    print("redis: every resume on server A or B at random (A runs the generations).")
    print(f"\nresult: {'PASS' if passed else 'FAIL'} (lost and duplicated must be 0 and 0)")
    return passed


# -- main -------------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(interval: float) -> Iterator[dict[str, Any]]:
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp)
        redis_url, redis_port = start_redis(stack, logdir)
        yield {
            "memory": start_server(stack, "memory", "memory", interval, logdir),
            "redis_a": start_server(stack, "redis-a", redis_url, interval, logdir),
            "redis_b": start_server(stack, "redis-b", redis_url, interval, logdir),
            "redis_port": redis_port,
        }
        for log in sorted(logdir.glob("*.log")):
            text = log.read_text(errors="replace")
            if "Traceback" in text or "ERROR" in text:
                progress(f"server log {log.name} has errors:\n{text[-3000:]}")


async def run(args: argparse.Namespace, urls: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with redis.Redis(port=urls["redis_port"]) as client:
        results["redis_version"] = client.info("server")["redis_version"]
    targets = [
        Target("memory", urls["memory"], urls["memory"]),
        Target("redis-same", urls["redis_a"], urls["redis_a"]),
        Target("redis-other", urls["redis_a"], urls["redis_b"]),
    ]
    progress("part 1: resume latency")
    results["latency"] = await measure_latency(targets, args.resumes, args.seed)
    progress("part 2: Redis commands per delivered token")
    results["commands"] = await measure_commands(
        urls["redis_a"], urls["redis_port"], args.streams, args.tokens
    )
    progress("part 3: lost and duplicated tokens")
    results["loss"] = {}
    cases = [
        ("memory", urls["memory"], [urls["memory"]]),
        ("redis", urls["redis_a"], [urls["redis_a"], urls["redis_b"]]),
    ]
    for backend, origin, resume_at in cases:
        for transport in TRANSPORTS:
            started = time.monotonic()
            loss = await measure_loss(transport, origin, resume_at, args.reconnects, args.seed)
            results["loss"][(backend, transport)] = loss
            progress(
                f"  {backend}/{transport}: {loss.reconnects} reconnects, lost {loss.lost}, "
                f"duplicated {loss.duplicated}, {time.monotonic() - started:.1f} s"
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resumes", type=int, default=200, help="part 1: samples per cell")
    parser.add_argument("--streams", type=int, default=20, help="part 2: concurrent streams")
    parser.add_argument("--tokens", type=int, default=500, help="part 2: tokens per stream")
    parser.add_argument(
        "--reconnects", type=int, default=1000, help="part 3: per backend and transport"
    )
    parser.add_argument("--interval", type=float, default=0.001, help="seconds between tokens")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument(
        "--quick", action="store_true", help="--resumes 30 --streams 5 --reconnects 100"
    )
    args = parser.parse_args()
    if args.quick:
        args.resumes, args.streams, args.reconnects = 30, 5, 100
    started = time.monotonic()
    with servers(args.interval) as urls:
        results = asyncio.run(run(args, urls))
    results["seconds"] = time.monotonic() - started
    sys.exit(0 if report(args, results) else 1)


if __name__ == "__main__":
    main()
