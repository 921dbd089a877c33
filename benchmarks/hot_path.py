"""The hot path alone: server CPU per token of tokenwire's apps against the baselines, in one
process, with the ASGI server taken out.

Each app under test (tokenwire SSE ``POST /v1/streams`` against baseline (a)'s
``StreamingResponse``; tokenwire's WebSocket against baseline (c)'s ``send_text`` per token; the
apps of :mod:`transport.servers`, so the same token source and schedule) is called directly as
an ASGI app: ``receive`` hands over the request and then waits for the end of the round, ``send``
only counts the writes. So what is measured is the app's own work per token (the stream layer,
the transport, encoding, Starlette's wrappers) without uvicorn, sockets or a client, which the
full benchmark (``tokenwire bench``) adds in equal measure for every server. With no process
boundary and no network, the figure moves far less from run to run than the full benchmark's:
a good loop for work on the hot path.

A round starts ``--streams`` streams at ``--rate`` tokens/s each (spread over one interval so
that their tokens interleave), lets them settle, then reads ``time.process_time()`` over a
window of ``--window`` seconds and counts the writes in it. Rounds alternate between the apps.
It prints, per pair, the CPU microseconds per write of each round, and the ratio of the medians
(tokenwire / baseline). The groups ``rich-sse`` and ``rich-ws`` compare tokenwire with itself:
each token made a reasoning delta, or a tool call's arguments delta, against a text delta
(the provider's ``per_token``, see :class:`transport.servers.ScheduledScriptedProvider`), so
their ratios are the cost per rich event over the cost per text event. Writes stand for
tokens: at these rates nothing is merged, and the script says so if the apps' write counts
differ by more than 1%. It asserts nothing.

Run (from the repository root, with the dev extra installed)::

    .venv/bin/python benchmarks/hot_path.py                 # 1000 streams x 20 tok/s, 3 rounds
    .venv/bin/python benchmarks/hot_path.py --transport sse --rounds 5
    .venv/bin/python benchmarks/hot_path.py --transport rich-sse --transport rich-ws
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette
from starlette.types import Message

sys.path.insert(0, str(Path(__file__).resolve().parent))
# tokenwire's settings as in the full benchmark (read when its app is built)
from transport.harness import TOKENWIRE_ENV  # noqa: E402

os.environ.update(TOKENWIRE_ENV)
from transport.servers import baseline_streaming, baseline_websocket, tokenwire_app  # noqa: E402
from transport.source import Schedule, request_fields  # noqa: E402

# (name, app factory, transport, path)
APPS: dict[str, tuple[Callable[[], Starlette], str, str]] = {
    "tokenwire-sse": (tokenwire_app, "http", "/v1/streams"),
    "baseline (a) StreamingResponse": (baseline_streaming, "http", "/stream"),
    "tokenwire-ws": (tokenwire_app, "websocket", "/v1/ws"),
    "baseline (c) WebSocket": (baseline_websocket, "websocket", "/ws"),
    "tokenwire-sse reasoning.delta": (lambda: tokenwire_app("reasoning"), "http", "/v1/streams"),
    "tokenwire-sse tool_call.delta": (lambda: tokenwire_app("tool_call"), "http", "/v1/streams"),
    "tokenwire-ws reasoning.delta": (lambda: tokenwire_app("reasoning"), "websocket", "/v1/ws"),
    "tokenwire-ws tool_call.delta": (lambda: tokenwire_app("tool_call"), "websocket", "/v1/ws"),
}
# Each group's apps run in turns; each is compared with the group's last (the reference).
PAIRS = {
    "sse": ("tokenwire-sse", "baseline (a) StreamingResponse"),
    "websocket": ("tokenwire-ws", "baseline (c) WebSocket"),
    "rich-sse": ("tokenwire-sse reasoning.delta", "tokenwire-sse tool_call.delta", "tokenwire-sse"),
    "rich-ws": ("tokenwire-ws reasoning.delta", "tokenwire-ws tool_call.delta", "tokenwire-ws"),
}


class Counter:
    """The ASGI ``send`` of every stream of a round: counts body writes and WebSocket texts."""

    def __init__(self) -> None:
        self.writes = 0

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body" and message.get("body") or kind == "websocket.send":
            self.writes += 1


def _scope(kind: str, path: str, port: int) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "http" if kind == "http" else "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", port),
        "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"127.0.0.1:8000")],
    }
    if kind == "http":
        scope["method"] = "POST"
        scope["headers"].append((b"content-type", b"application/json"))
    return scope


async def _stream(
    app: Starlette, kind: str, path: str, port: int, body: dict[str, Any], sink: Counter,
    done: asyncio.Event,
) -> None:  # fmt: skip
    """One stream through ``app``; the client leaves when ``done`` is set."""
    if kind == "http":
        first: list[Message] = [
            {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        ]
        gone: Message = {"type": "http.disconnect"}
    else:
        text = json.dumps({"type": "generate", **body})
        first = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": text}]
        gone = {"type": "websocket.disconnect", "code": 1001}

    async def receive() -> Message:
        if first:
            return first.pop(0)
        await done.wait()
        return gone

    await app(_scope(kind, path, port), receive, sink.send)


async def one_round(
    app: Starlette, kind: str, path: str, streams: int, rate: float, window: float
) -> tuple[float, int]:
    """CPU seconds and writes in the window of one round."""
    sink, done = Counter(), asyncio.Event()
    interval = 1.0 / rate
    settle = interval + 1.0
    tokens = int((settle + window + 2.0) * rate) + 1
    tasks = []
    for i in range(streams):
        schedule = Schedule(time.monotonic(), tokens, ttft=interval, interval=interval)
        body = request_fields(schedule)
        tasks.append(asyncio.create_task(_stream(app, kind, path, 10_000 + i, body, sink, done)))
        await asyncio.sleep(interval / streams)
    await asyncio.sleep(settle)
    writes, cpu = sink.writes, time.process_time()
    await asyncio.sleep(window)
    cpu, writes = time.process_time() - cpu, sink.writes - writes
    done.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return cpu, writes


async def main(args: argparse.Namespace) -> None:
    console = Console()
    for transport in args.transport:
        names = PAIRS[transport]
        apps = {name: APPS[name][0]() for name in names}
        per_write: dict[str, list[float]] = {name: [] for name in names}
        writes: dict[str, list[int]] = {name: [] for name in names}
        async with contextlib.AsyncExitStack() as lifespans:
            for name, app in apps.items():  # and warm each up once (imports, caches)
                await lifespans.enter_async_context(app.router.lifespan_context(app))
                _, kind, path = APPS[name]
                await one_round(app, kind, path, min(args.streams, 50), args.rate, 0.5)
            for r in range(args.rounds):
                for name, app in apps.items():
                    _, kind, path = APPS[name]
                    cpu, n = await one_round(app, kind, path, args.streams, args.rate, args.window)
                    per_write[name].append(cpu / max(n, 1) * 1e6)
                    writes[name].append(n)
                    console.print(f"round {r + 1}, {name}: {per_write[name][-1]:.1f} µs/write")
        table = Table(title=f"{transport}: {args.streams} streams x {args.rate:g} tok/s")
        table.add_column("app")
        table.add_column("µs CPU per write, each round")
        table.add_column("median", justify="right")
        table.add_column("writes (median)", justify="right")
        for name in names:
            rounds = ", ".join(f"{v:.1f}" for v in per_write[name])
            table.add_row(
                name,
                rounds,
                f"{statistics.median(per_write[name]):.1f}",
                str(int(statistics.median(writes[name]))),
            )
        console.print(table)
        *others, reference = names
        base = statistics.median(per_write[reference])
        for name in others:
            ours = statistics.median(per_write[name])
            # each round's own ratio too: on a busy machine, rounds move together
            paired = [a / b for a, b in zip(per_write[name], per_write[reference], strict=True)]
            console.print(
                f"ratio {name} / {reference}: [bold]{ours / base:.2f}[/bold] (of medians); "
                f"same-round ratios {', '.join(f'{r:.2f}' for r in paired)}, median "
                f"[bold]{statistics.median(paired):.2f}[/bold]"
            )
        counts = [statistics.median(writes[n]) for n in names]
        if max(counts) - min(counts) > 0.01 * max(counts):
            console.print("[yellow]write counts differ by more than 1%: merged deltas?[/yellow]")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens/s per stream")
    parser.add_argument("--window", type=float, default=5.0, help="measuring window, seconds")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per app")
    parser.add_argument(
        "--transport", choices=sorted(PAIRS), action="append",
        help="a group to run (repeatable; default: sse and websocket); rich-sse and rich-ws "
        "compare tokenwire's CPU per reasoning and per tool-call delta with per text delta",
    )  # fmt: skip
    args = parser.parse_args()
    args.transport = args.transport or ["sse", "websocket"]
    return args


if __name__ == "__main__":
    uvloop.run(main(parse_args()))
