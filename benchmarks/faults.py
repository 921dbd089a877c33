"""Faults: what a Redis-backed deployment holds under a resume burst, a header flood and
slowloris. Prints a Markdown table; exits with status 1 if any running stream was cut.

Setup: a ``redis-server`` of the run's own on a free loopback port (no persistence) and two
``tokenwire serve`` workers, A and B, sharing it (scripted provider, one token every
``--interval`` seconds), each in a process of its own on a free loopback port, configured by
``TOKENWIRE_*`` variables (``TOKENWIRE_HTTP_HEADER_TIMEOUT`` is ``--header-timeout``).

1. **resume burst**: A runs ``--streams`` streams and B runs ``--streams`` streams, each read to
   its end by one SSE client. Meanwhile ``--burst`` concurrent ``GET
   /v1/streams/str_<random>/events`` with ``Last-Event-ID: 1`` hit A (an unknown stream: each
   waits for Redis to reach its cursor), and ``--readers`` concurrent readers of A's streams
   hit B (each holds a Redis connection while it waits for events). *Streams cut* counts the
   streams of A and B that did not end with ``finish_reason`` ``length`` (must be 0);
   *refused* counts the burst's and the readers' 503s (the bounded reader pool) and readers
   cut off with a retryable ``error``.
2. **header flood**: ``--flood`` connections to A each send one header that never ends, up
   to 20 MB each. *Answered 431* counts the connections that got ``431``; *RSS growth* is
   A's peak resident memory during the flood minus its RSS before (``/proc``, via psutil).
3. **slowloris**: ``--slowloris`` connections to A each send a request head one byte a
   second. *Closed by the server* counts those the server closed within ``--header-timeout``
   + 5 s; ``/healthz`` is asked once a second meanwhile (*healthz ok*).

Run (from the repository root, with the dev, bench and redis extras installed, and
redis-server)::

    .venv/bin/python benchmarks/faults.py            # about 30 s on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from resume import Process, free_port, start_redis  # noqa: E402 - a sibling module

USER = [{"role": "user", "content": "fault run"}]
CHUNK = 64 * 1024


def start_worker(
    stack: contextlib.ExitStack, name: str, redis_url: str, args: argparse.Namespace, logdir: Path
) -> tuple[str, Process]:
    port = free_port()
    env = {
        **os.environ,
        "TOKENWIRE_HOST": "127.0.0.1",
        "TOKENWIRE_PORT": str(port),
        "TOKENWIRE_PROVIDER": "scripted",
        "TOKENWIRE_SCRIPTED_TOKENS": "100000",  # each request's max_tokens sets its length
        "TOKENWIRE_SCRIPTED_INTERVAL": str(args.interval),
        "TOKENWIRE_ON_DISCONNECT": "detach",
        "TOKENWIRE_STREAM_LOG": redis_url,
        "TOKENWIRE_HTTP_HEADER_TIMEOUT": str(args.header_timeout),
        "TOKENWIRE_DRAIN_TIMEOUT": "1",
        "TOKENWIRE_LOG_LEVEL": "warning",
    }
    process = Process(name, [sys.executable, "-m", "tokenwire.cli", "serve"], env, logdir)
    stack.callback(process.stop)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                return base_url, process
        if not process.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server {name} did not start:\n{process.log()}")
        time.sleep(0.1)


def sse_payloads(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


# -- 1. resume burst --------------------------------------------------------------------------


async def resume_burst(http: httpx.AsyncClient, a: str, b: str, args: argparse.Namespace) -> dict:
    async def start(base_url: str) -> str:
        response = await http.post(
            base_url + "/v1/streams",
            json={"messages": USER, "max_tokens": args.tokens, "on_disconnect": "detach"},
            headers={"Accept": "application/json"},
        )
        response.raise_for_status()
        return str(response.json()["stream_id"])

    async def read(base_url: str, stream_id: str) -> dict[str, Any]:
        """Every event of a stream, as its owner's client reads it; the last one."""
        async with http.stream("GET", f"{base_url}/v1/streams/{stream_id}/events") as response:
            body = (await response.aread()).decode()
        events = sse_payloads(body)
        return events[-1] if events else {"type": f"HTTP {response.status_code}"}

    async def probe() -> str:
        stream_id = "str_" + secrets.token_urlsafe(16)
        url = f"{a}/v1/streams/{stream_id}/events"
        response = await http.get(url, headers={"Last-Event-ID": "1"})
        if response.status_code == 200:
            return sse_payloads(response.text)[0]["type"]  # stream.reset
        return str(response.status_code)

    async def remote_reader(stream_id: str) -> str:
        async with http.stream("GET", f"{b}/v1/streams/{stream_id}/events") as response:
            if response.status_code != 200:
                return str(response.status_code)
            events = sse_payloads((await response.aread()).decode())
        end = events[-1] if events else {}
        return "ok" if end.get("finish_reason") == "length" else "cut off (retryable error)"

    ids_a = [await start(a) for _ in range(args.streams)]
    ids_b = [await start(b) for _ in range(args.streams)]
    owners = [asyncio.create_task(read(a, s)) for s in ids_a]
    owners += [asyncio.create_task(read(b, s)) for s in ids_b]
    await asyncio.sleep(0.2)
    probes = [asyncio.create_task(probe()) for _ in range(args.burst)]
    readers = [
        asyncio.create_task(remote_reader(ids_a[i % len(ids_a)])) for i in range(args.readers)
    ]
    ends = await asyncio.gather(*owners)
    burst = await asyncio.gather(*probes)
    remote = await asyncio.gather(*readers)
    cut = sum(1 for end in ends if end.get("finish_reason") != "length")
    tally: dict[str, int] = {}
    for outcome in burst:
        tally[f"burst {outcome}"] = tally.get(f"burst {outcome}", 0) + 1
    for outcome in remote:
        tally[f"reader {outcome}"] = tally.get(f"reader {outcome}", 0) + 1
    return {"streams": len(ends), "cut": cut, "outcomes": tally}


# -- 2. header flood --------------------------------------------------------------------------


async def header_flood(port: int, pid: int, args: argparse.Namespace) -> dict:
    process = psutil.Process(pid)
    before = process.memory_info().rss
    peak = before
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.05)

    async def flood() -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        reply = asyncio.create_task(reader.read(64))  # the answer, read as soon as it comes
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Flood: ")
            sent = 0
            with contextlib.suppress(OSError):
                while sent < 20 * 1024 * 1024 and not reply.done():
                    writer.write(b"a" * CHUNK)
                    await writer.drain()
                    sent += CHUNK
            async with asyncio.timeout(10):
                answer = await reply
        except (OSError, TimeoutError):
            answer = b""
        finally:
            reply.cancel()
            writer.transport.abort()
        return answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/1.1 ") else "closed"

    watcher = asyncio.create_task(watch())
    outcomes = await asyncio.gather(*(flood() for _ in range(args.flood)))
    stop.set()
    await watcher
    return {
        "connections": args.flood,
        "answered_431": outcomes.count("431"),
        "rss_before_mb": before / 2**20,
        "rss_growth_mb": (peak - before) / 2**20,
    }


# -- 3. slowloris -----------------------------------------------------------------------------


async def slowloris(base_url: str, port: int, args: argparse.Namespace) -> dict:
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000
    limit = args.header_timeout + 5

    async def one() -> bool:
        """Whether the server closed the connection within ``limit`` seconds."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            async with asyncio.timeout(limit):
                for byte in head:
                    writer.write(bytes([byte]))
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1):
                            if await reader.read(1024) == b"":
                                return True
            return False
        except OSError:
            return True
        except TimeoutError:
            return False
        finally:
            writer.transport.abort()

    async def health() -> tuple[int, int]:
        ok = asked = 0
        async with httpx.AsyncClient(timeout=2) as http:
            for _ in range(int(limit)):
                asked += 1
                with contextlib.suppress(httpx.HTTPError):
                    ok += (await http.get(base_url + "/healthz")).status_code == 200
                await asyncio.sleep(1)
        return ok, asked

    checker = asyncio.create_task(health())
    closed = await asyncio.gather(*(one() for _ in range(args.slowloris)))
    ok, asked = await checker
    return {"connections": args.slowloris, "closed": sum(closed), "healthz": f"{ok}/{asked}"}


# -- report -----------------------------------------------------------------------------------


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    burst, flood, loris = results["burst"], results["flood"], results["slowloris"]
    outcomes = ", ".join(f"{n} {name}" for name, n in sorted(burst["outcomes"].items()))
    print("| scenario | what the server held |")
    print("|---|---|")
    print(
        f"| resume burst: {args.burst} unknown-stream resumes on A, {args.readers} readers of "
        f"A's streams on B, {burst['streams']} running streams | **streams cut: "
        f"{burst['cut']}**; {outcomes} |"
    )
    print(
        f"| header flood: {flood['connections']} connections x 20 MB of one header | answered "
        f"431: {flood['answered_431']}/{flood['connections']}; RSS growth "
        f"{flood['rss_growth_mb']:.1f} MB (from {flood['rss_before_mb']:.0f} MB) |"
    )
    print(
        f"| slowloris: {loris['connections']} connections at 1 byte/s, header timeout "
        f"{args.header_timeout:g} s | closed by the server: {loris['closed']}/"
        f"{loris['connections']}; /healthz meanwhile: {loris['healthz']} ok |"
    )


async def run(args: argparse.Namespace, a: str, b: str, pid_a: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=20)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        burst = await resume_burst(http, a, b, args)
    port_a = int(a.rsplit(":", 1)[1])
    flood = await header_flood(port_a, pid_a, args)
    loris = await slowloris(a, port_a, args)
    return {"burst": burst, "flood": flood, "slowloris": loris}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=4, help="running streams per worker")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per running stream")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds per token")
    parser.add_argument("--burst", type=int, default=300, help="unknown-stream resumes on A")
    parser.add_argument("--readers", type=int, default=150, help="readers of A's streams on B")
    parser.add_argument("--flood", type=int, default=10, help="header-flood connections")
    parser.add_argument("--slowloris", type=int, default=300, help="slowloris connections")
    parser.add_argument("--header-timeout", type=float, default=2.0, help="seconds")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        logdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="faults-")))
        redis_url, _ = start_redis(stack, logdir)
        a, process_a = start_worker(stack, "a", redis_url, args, logdir)
        b, _ = start_worker(stack, "b", redis_url, args, logdir)
        results = asyncio.run(run(args, a, b, process_a.process.pid))
    report(args, results)
    sys.exit(1 if results["burst"]["cut"] else 0)


if __name__ == "__main__":
    main()
