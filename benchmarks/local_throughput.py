"""Local-model throughput through tokenwire vs. llama-cpp-python alone, and event-loop stalls.

What it measures, in one run on one machine:

1. **baseline**: ``llama_cpp.Llama`` on the bundled SmolLM2 GGUF (``n_ctx=2048``,
   ``verbose=False``), ``create_chat_completion(stream=True, temperature=0, seed=...)`` for a
   fixed prompt. Tokens/s = chunks with content / wall time from the call to the last chunk.
2. **sse** and **websocket**: the real server in a separate process (``tokenwire serve
   --provider local`` on a free loopback port, waited for on ``GET /healthz``), streaming the
   same prompt with the same ``max_tokens``, ``temperature`` and ``seed`` through
   ``tokenwire_client.AsyncClient`` (``POST /v1/streams`` and WebSocket ``/v1/ws``).
   Tokens/s = ``stream.end`` usage's completion tokens / wall time from the request to
   ``stream.end`` (a lagging client may get several tokens in one ``text.delta``). Runs are
   interleaved (baseline, sse, websocket, in a rotating order) and strictly sequential: never
   two generations at once. One warm-up run of each is discarded (it fills llama.cpp's prompt
   cache, so later runs skip most of the prompt evaluation, on every path alike).
3. **event-loop stall**: in this process, a ``LocalProvider`` streams the same prompt while a
   ticker task sleeps 1 ms in a loop and records how late each wake-up is (max, p99). Two
   references: the same ticker while the baseline ``Llama`` generates in a worker thread
   (``asyncio.to_thread``, no tokenwire code: the stall that llama-cpp-python and the machine
   cause on their own), and with nothing running (the machine's noise floor).

4. **concurrency** (continuous batching): a second server with ``TOKENWIRE_LOCAL_PARALLEL=8``;
   for 1, 2, 4 and 8 SSE streams started together (each its own prompt, ``temperature=0``),
   aggregate tokens/s = all ``text.delta`` events / wall time from the first request to the
   last ``stream.end``, and each stream's time to first token. Each stream's text is compared
   with what the same request gives alone (the 1-stream runs).
5. **long prompt**: in this process, a ``LocalProvider`` (4 slots) decodes 3 streams; a
   ~1,500-token prompt arrives; the gap between consecutive tokens of the 3 running streams
   while it is prefilled (max) against their gaps before it (median), and its own TTFT.

Targets: median SSE/baseline and WebSocket/baseline tokens/s >= 0.95; event-loop lateness
while LocalProvider generates: max < 10 ms; aggregate tokens/s with 4 streams >= 1.3 x one
stream's, with 8 >= 1.8 x; TTFT of the last of 4 simultaneous requests <= 3 x a lone
request's TTFT plus its prefill time (a lone TTFT includes its prefill: the target used is
4 x the lone p50 TTFT).

Run from the repository root, with the dev extra installed (about a minute with the defaults
on a 2-core machine)::

    python benchmarks/local_throughput.py                  # --max-tokens 128 --runs 5
    python benchmarks/local_throughput.py --runs 10 --json results.json

It prints tables and asserts nothing: a slow or noisy shared machine never "fails" it. With
few runs, p99 tokens/s is about the fastest run; the table also shows the slowest (min).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from common import free_port, http_ready, launched, percentile
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import Delta, Prompt
from tokenwire.providers.local import LocalProvider, bundled_model_path
from tokenwire_client import AsyncClient

PROMPT = "Write a long story about a lighthouse keeper and a storm."
MESSAGES = [{"role": "user", "content": PROMPT}]
N_CTX = 2048
TICK = 0.001  # the ticker's sleep, seconds
RATIO_TARGET = 0.95
STALL_TARGET_MS = 10.0
MODES = ("baseline", "sse", "websocket")
CONCURRENCY = (1, 2, 4, 8)
AGGREGATE_TARGETS = {4: 1.3, 8: 1.8}
TTFT_TARGET = 4.0  # x the lone p50 TTFT (3 x TTFT + the prefill, which the TTFT includes)
TOPICS = (
    "a lighthouse keeper and a storm",
    "a robot who learns to paint",
    "two friends lost in a desert",
    "a dragon who is afraid of fire",
    "a baker who finds a secret map",
    "a cat that becomes mayor",
    "an astronaut alone on Mars",
    "a musician who lost her voice",
)

console = Console(width=None if sys.stdout.isatty() else 132)


# -- statistics -------------------------------------------------------------------------------


@dataclass
class Run:
    """One timed generation."""

    tokens: int
    seconds: float
    ttft: float | None
    text: str = field(repr=False)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def summarize(runs: list[Run]) -> dict[str, Any]:
    rates = [run.tokens_per_s for run in runs]
    ttfts = [run.ttft for run in runs if run.ttft is not None]
    return {
        "runs": len(runs),
        "tokens": sorted({run.tokens for run in runs}),
        "tokens_per_s": rates,
        "p50_tokens_per_s": percentile(rates, 50),
        "p99_tokens_per_s": percentile(rates, 99),
        "min_tokens_per_s": min(rates) if rates else float("nan"),
        "p50_ttft_ms": percentile(ttfts, 50) * 1000 if ttfts else float("nan"),
    }


# -- 1. baseline: llama-cpp-python alone ------------------------------------------------------


def baseline_run(llama: Any, max_tokens: int, seed: int) -> Run:
    parts: list[str] = []
    ttft = None
    start = time.perf_counter()
    end = start
    chunks = llama.create_chat_completion(
        messages=MESSAGES, stream=True, max_tokens=max_tokens, temperature=0, seed=seed
    )
    for chunk in chunks:
        end = time.perf_counter()
        content = chunk["choices"][0]["delta"].get("content")
        if content:
            if ttft is None:
                ttft = end - start
            parts.append(content)
    return Run(len(parts), end - start, ttft, "".join(parts))


# -- 2. through the server, in a separate process ---------------------------------------------


@contextlib.contextmanager
def server_process(
    port: int | None = None,
    startup_timeout: float = 120.0,
    env_extra: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run ``tokenwire serve --provider local`` (the CLI's own uvicorn options: uvloop and
    httptools when installed) on ``port`` (default: a free one); yield its base URL once
    /healthz is ok. ``env_extra`` adds settings (e.g. ``TOKENWIRE_LOCAL_PARALLEL``)."""
    port = port or free_port()
    command = [sys.executable, "-c", "from tokenwire.cli import app; app()", "serve"]
    command += ["--provider", "local", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning"]
    env = {**os.environ, "TOKENWIRE_PROVIDER": "local", **(env_extra or {})}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with launched(command, log, http_ready(port), env=env, within=startup_timeout):
            yield f"http://127.0.0.1:{port}"


async def server_run(
    client: AsyncClient, max_tokens: int, seed: int, messages: list[dict[str, str]] = MESSAGES
) -> Run:
    parts: list[str] = []
    ttft = None
    finish = None
    usage = None
    start = time.perf_counter()
    end = start
    async with client.stream(messages, max_tokens=max_tokens, temperature=0, seed=seed) as events:
        async for event in events:
            end = time.perf_counter()
            if event.type == "text.delta":
                if ttft is None:
                    ttft = end - start
                parts.append(event.delta)
            elif event.type == "error":
                raise RuntimeError(f"the server failed the stream: {event.message}")
            elif event.type == "stream.end":
                finish = event.finish_reason
                usage = event.usage
    if finish is None:
        raise RuntimeError("the stream ended without stream.end")
    # the server may merge deltas when a client lags (one text.delta, several tokens): count
    # the tokens the usage reports
    tokens = usage.completion_tokens if usage is not None else len(parts)
    return Run(tokens, end - start, ttft, "".join(parts))


# -- 3. event-loop stall during local generation ----------------------------------------------


async def ticker(stop: asyncio.Event, lateness: list[float]) -> None:
    """Sleep TICK in a loop; record how late (seconds) each wake-up was."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(TICK)
        lateness.append(max(0.0, time.perf_counter() - before - TICK))


async def measure_ticker(work: Callable[[], Any]) -> list[float]:
    """Run the ticker for as long as ``await work()`` takes."""
    stop = asyncio.Event()
    lateness: list[float] = []
    task = asyncio.create_task(ticker(stop, lateness))
    await asyncio.sleep(0)  # let it start
    try:
        await work()
    finally:
        stop.set()
        await task
    return lateness


def stall_summary(lateness: list[float], seconds: float) -> dict[str, Any]:
    ms = [value * 1000 for value in lateness]
    return {
        "seconds": seconds,
        "ticks": len(ms),
        "max_ms": max(ms) if ms else float("nan"),
        "p99_ms": percentile(ms, 99),
        "p50_ms": percentile(ms, 50),
        "over_5ms": sum(value > 5 for value in ms),
    }


async def measure_stall(llama: Any, max_tokens: int, seed: int, runs: int) -> dict[str, Any]:
    """Ticker lateness while (a) LocalProvider generates and (b), as a reference without any
    tokenwire code, the baseline ``Llama`` generates in a worker thread (``asyncio.to_thread``),
    interleaved run by run; then (c) with nothing running, for as long as (a) took."""
    params = GenerateParams.model_validate(
        {"messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0, "seed": seed}
    )
    provider_runs: list[Run] = []
    lateness: dict[str, list[float]] = {"generating": [], "thread": [], "idle": []}
    seconds = dict.fromkeys(lateness, 0.0)

    async with LocalProvider(n_ctx=N_CTX) as provider:
        model = provider.models[0]

        async def provider_once() -> Run:
            parts: list[str] = []
            ttft = None
            start = time.perf_counter()
            end = start
            async for item in provider.stream(params, model):
                end = time.perf_counter()
                if isinstance(item, Delta):
                    if ttft is None:
                        ttft = end - start
                    parts.append(item.text)
            return Run(len(parts), end - start, ttft, "".join(parts))

        async def provider_run() -> None:
            provider_runs.append(await provider_once())

        async def thread_run() -> None:
            await asyncio.to_thread(baseline_run, llama, max_tokens, seed)

        await provider_once()  # warm-up: the provider's own llama.cpp instance, prompt cache
        for index in range(runs):
            pair = [("generating", provider_run), ("thread", thread_run)]
            for name, work in pair if index % 2 == 0 else pair[::-1]:
                started = time.perf_counter()
                lateness[name] += await measure_ticker(work)
                seconds[name] += time.perf_counter() - started

    idle_seconds = max(2.0, seconds["generating"])
    lateness["idle"] = await measure_ticker(lambda: asyncio.sleep(idle_seconds))
    seconds["idle"] = idle_seconds
    loop = asyncio.get_running_loop()
    return {
        "loop": f"{type(loop).__module__}.{type(loop).__name__}",
        **{name: stall_summary(values, seconds[name]) for name, values in lateness.items()},
        "provider": summarize(provider_runs),
        "provider_texts": [run.text for run in provider_runs],
    }


# -- 4. concurrency: several streams at once through the server -------------------------------


def topic_messages(index: int) -> list[dict[str, str]]:
    topic = TOPICS[index % len(TOPICS)]
    return [{"role": "user", "content": f"Write a long story about {topic}."}]


async def concurrency(max_tokens: int, seed: int, runs: int) -> dict[str, Any]:
    """For each level in CONCURRENCY, ``runs`` rounds of that many SSE streams started
    together; a round's aggregate tok/s = its deltas / (last stream.end - first request)."""
    port = free_port()
    parallel = max(CONCURRENCY)
    console.print(f"starting a server with TOKENWIRE_LOCAL_PARALLEL={parallel} on port {port}")
    levels: dict[int, dict[str, Any]] = {}
    with server_process(port, env_extra={"TOKENWIRE_LOCAL_PARALLEL": str(parallel)}) as base:
        async with AsyncClient(base, transport="sse") as client:
            await server_run(client, max_tokens, seed)  # warm-up, discarded
            alone: dict[int, str] = {}
            for level in CONCURRENCY:
                aggregates: list[float] = []
                ttfts: list[float] = []
                last_ttfts: list[float] = []
                texts: list[str] = []
                indexes: list[int] = []
                for round_ in range(runs):
                    start = time.perf_counter()
                    results = await asyncio.gather(
                        *(
                            server_run(client, max_tokens, seed, topic_messages(index))
                            for index in range(level)
                        )
                    )
                    wall = time.perf_counter() - start
                    tokens = sum(run.tokens for run in results)
                    aggregates.append(tokens / wall)
                    firsts = [run.ttft for run in results if run.ttft is not None]
                    ttfts.extend(firsts)
                    last_ttfts.append(max(firsts) if firsts else float("nan"))
                    texts.extend(run.text for run in results)
                    indexes.extend(range(level))
                    console.print(
                        f"  {level} streams, round {round_ + 1}/{runs}: {tokens} tokens "
                        f"{wall:6.3f} s {tokens / wall:7.1f} tok/s aggregate, last TTFT "
                        f"{last_ttfts[-1] * 1000:.0f} ms"
                    )
                if level == 1:
                    for index in range(max(CONCURRENCY)):  # the reference texts, alone
                        run = await server_run(client, max_tokens, seed, topic_messages(index))
                        alone[index] = run.text
                same = [text == alone[index] for text, index in zip(texts, indexes, strict=True)]
                diverged = [
                    _common_prefix(text, alone[index])
                    for text, index in zip(texts, indexes, strict=True)
                    if text != alone[index]
                ]
                levels[level] = {
                    "aggregate_tokens_per_s": aggregates,
                    "p50_aggregate_tokens_per_s": percentile(aggregates, 50),
                    "p50_ttft_ms": percentile(ttfts, 50) * 1000,
                    "p50_last_ttft_ms": percentile(last_ttfts, 50) * 1000,
                    "same_text": sum(same),
                    "streams": len(same),
                    "diverged_after_chars": diverged,
                }
    return {"parallel": parallel, "levels": levels}


def _common_prefix(a: str, b: str) -> int:
    size = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        size += 1
    return size


# -- 5. a long prompt arriving while 3 streams decode -----------------------------------------


async def long_prompt(max_tokens: int, seed: int, prefill_chunk: int) -> dict[str, Any]:
    """Inter-token gaps of 3 running streams before and while a ~1,500-token prompt is
    prefilled, in this process (LocalProvider, 4 slots)."""
    story = " ".join(f"Day {n}: the keeper lit the lamp and watched the sea." for n in range(120))
    long_params = GenerateParams.model_validate(
        {
            "messages": [{"role": "user", "content": f"Summarize: {story}"}],
            "max_tokens": 8,
            "temperature": 0,
        }
    )
    async with LocalProvider(n_ctx=N_CTX, parallel=4, prefill_chunk=prefill_chunk) as provider:
        model = provider.models[0]
        arrivals: list[list[float]] = [[], [], []]
        long_started = asyncio.Event()
        long_result: dict[str, float] = {}

        async def running(index: int) -> None:
            params = GenerateParams.model_validate(
                {
                    "messages": topic_messages(index),
                    "max_tokens": max(max_tokens, 96),
                    "temperature": 0,
                    "seed": seed,
                }
            )
            async for item in provider.stream(params, model):
                if isinstance(item, Delta):
                    arrivals[index].append(time.perf_counter())
                    if index == 0 and len(arrivals[0]) == 16:
                        long_started.set()

        async def joining() -> None:
            await long_started.wait()
            start = time.perf_counter()
            long_result["start"] = start
            async for item in provider.stream(long_params, model):
                if isinstance(item, Prompt):
                    long_result["prompt_tokens"] = item.tokens
                elif isinstance(item, Delta) and "first" not in long_result:
                    long_result["first"] = time.perf_counter()

        await asyncio.gather(*(running(i) for i in range(3)), joining())
    start, first = long_result["start"], long_result["first"]
    before: list[float] = []
    during: list[float] = []
    for times in arrivals:
        for previous, current in zip(times, times[1:], strict=False):
            if current <= start:
                before.append(current - previous)
            elif previous < first:
                during.append(current - previous)
    return {
        "prefill_chunk": prefill_chunk,
        "prompt_tokens": long_result.get("prompt_tokens", 0),
        "long_ttft_ms": (first - start) * 1000,
        "p50_gap_before_ms": percentile(before, 50) * 1000,
        "max_gap_during_ms": max(during) * 1000 if during else float("nan"),
        "tokens_during": len(during),
    }


# -- the whole run ----------------------------------------------------------------------------


async def throughput(llama: Any, max_tokens: int, seed: int, runs: int) -> dict[str, Any]:
    results: dict[str, list[Run]] = {mode: [] for mode in MODES}
    console.print("starting the server (provider local)")
    with server_process() as base_url:
        sse = AsyncClient(base_url, transport="sse")
        ws = AsyncClient(base_url, transport="websocket")
        async with sse, ws:

            async def one(mode: str) -> Run:
                if mode == "baseline":
                    return baseline_run(llama, max_tokens, seed)
                return await server_run(sse if mode == "sse" else ws, max_tokens, seed)

            for mode in MODES:  # warm-up, discarded
                await one(mode)
            for index in range(runs):
                shift = index % len(MODES)
                for mode in MODES[shift:] + MODES[:shift]:
                    run = await one(mode)
                    results[mode].append(run)
                    console.print(
                        f"  run {index + 1}/{runs} {mode:<9} {run.tokens:4d} tokens "
                        f"{run.seconds:6.3f} s {run.tokens_per_s:7.1f} tok/s"
                    )
    reference = results["baseline"][0].text
    return {
        "summary": {mode: summarize(runs_) for mode, runs_ in results.items()},
        "same_text": {
            mode: all(run.text == reference for run in runs_) for mode, runs_ in results.items()
        },
        "reference_text": reference,
    }


def ratio(summary: dict[str, Any], mode: str) -> float:
    base = summary["baseline"]["p50_tokens_per_s"]
    return summary[mode]["p50_tokens_per_s"] / base if base else float("nan")


def verdict(ok: bool) -> str:
    return "[green]ok[/green]" if ok else "[red]MISSED[/red]"


def report(results: dict[str, Any]) -> None:
    summary = results["throughput"]["summary"]
    same = results["throughput"]["same_text"]
    stall = results["stall"]
    config = results["config"]

    table = Table(
        title=(
            f"tokens/s, max_tokens={config['max_tokens']}, {config['runs']} runs each "
            f"(+1 warm-up), temperature=0, seed={config['seed']}, "
            f"llama.cpp n_threads={config['n_threads']}"
        )
    )
    for header in ("path", "tokens", "p50 tok/s", "p99 tok/s", "min tok/s", "p50 TTFT ms"):
        table.add_column(header, justify="left" if header == "path" else "right")
    table.add_column("p50 / baseline", justify="right")
    table.add_column("same text", justify="center")
    rows = [(mode, summary[mode], same[mode]) for mode in MODES]
    rows.append(("LocalProvider in-process *", stall["provider"], stall["provider_same_text"]))
    base = summary["baseline"]["p50_tokens_per_s"]
    for name, data, same_text in rows:
        value = data["p50_tokens_per_s"] / base
        ratio_cell = f"{value:.3f}"
        if name in ("sse", "websocket"):
            ratio_cell += f" {verdict(value >= RATIO_TARGET)}"
        table.add_row(
            name,
            "/".join(str(n) for n in data["tokens"]),
            f"{data['p50_tokens_per_s']:.1f}",
            f"{data['p99_tokens_per_s']:.1f}",
            f"{data['min_tokens_per_s']:.1f}",
            f"{data['p50_ttft_ms']:.1f}",
            ratio_cell,
            "yes" if same_text else "[red]no[/red]",
        )
    console.print(table)
    console.print(
        f"target: sse and websocket p50 >= {RATIO_TARGET} x baseline. tokens = completion chunks "
        "with content (baseline) or text.delta events (server); p99 tok/s is the fast tail, "
        "min the slow one.\n* LocalProvider consumed directly in this process, while the 1 ms "
        "ticker of the next table ran (section 3)."
    )

    loop_table = Table(title=f"event-loop lateness of a {TICK * 1000:g} ms sleep ({stall['loop']})")
    headers = ("condition", "seconds", "ticks", "p50 ms", "p99 ms", "max ms", ">5 ms", "target")
    for header in headers:
        loop_table.add_column(header, justify="left" if header == "condition" else "right")
    conditions = (
        ("idle (the machine's own noise)", "idle"),
        ("llama-cpp-python in a worker thread (no tokenwire)", "thread"),
        ("LocalProvider generating", "generating"),
    )
    for name, key in conditions:
        data = stall[key]
        target = verdict(data["max_ms"] < STALL_TARGET_MS) if key == "generating" else ""
        loop_table.add_row(
            name,
            f"{data['seconds']:.1f}",
            str(data["ticks"]),
            f"{data['p50_ms']:.3f}",
            f"{data['p99_ms']:.3f}",
            f"{data['max_ms']:.3f}",
            str(data["over_5ms"]),
            target,
        )
    console.print(loop_table)
    console.print(f"target: max lateness while LocalProvider generates < {STALL_TARGET_MS:g} ms")
    if "concurrency" in results:
        report_concurrency(results)


def report_concurrency(results: dict[str, Any]) -> None:
    data = results["concurrency"]
    levels = data["levels"]
    lone = levels[1]["p50_aggregate_tokens_per_s"]
    lone_ttft = levels[1]["p50_ttft_ms"]
    table = Table(
        title=(
            f"continuous batching through the server (SSE, TOKENWIRE_LOCAL_PARALLEL="
            f"{data['parallel']}), {results['config']['concurrency_runs']} rounds per level, "
            f"max_tokens={results['config']['max_tokens']}, temperature=0"
        )
    )
    headers = ("streams", "p50 aggregate tok/s", "x one stream", "p50 TTFT ms")
    for header in (*headers, "p50 TTFT of the last ms", "same text as alone", "target"):
        table.add_column(header, justify="right")
    for level, row in levels.items():
        factor = row["p50_aggregate_tokens_per_s"] / lone if lone else float("nan")
        targets = []
        if level in AGGREGATE_TARGETS:
            targets.append(
                f">= {AGGREGATE_TARGETS[level]}x {verdict(factor >= AGGREGATE_TARGETS[level])}"
            )
        if level == 4:
            ok = row["p50_last_ttft_ms"] <= TTFT_TARGET * lone_ttft
            targets.append(f"last TTFT <= {TTFT_TARGET:g}x lone {verdict(ok)}")
        diverged = row["diverged_after_chars"]
        same = f"{row['same_text']}/{row['streams']}"
        if diverged:
            same += f" (differ after {min(diverged)}-{max(diverged)} chars)"
        table.add_row(
            str(level),
            f"{row['p50_aggregate_tokens_per_s']:.1f}",
            f"{factor:.2f}",
            f"{row['p50_ttft_ms']:.0f}",
            f"{row['p50_last_ttft_ms']:.0f}",
            same,
            "; ".join(targets),
        )
    console.print(table)
    long = results["long_prompt"]
    console.print(
        f"long prompt ({long['prompt_tokens']} tokens, prefill chunk {long['prefill_chunk']}) "
        f"arriving while 3 streams decode: its TTFT {long['long_ttft_ms']:.0f} ms; the running "
        f"streams' token gap p50 before it {long['p50_gap_before_ms']:.1f} ms, max while it "
        f"was prefilled {long['max_gap_during_ms']:.1f} ms ({long['tokens_during']} tokens "
        "in that time)"
    )


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``asyncio``: the standard loop; ``uvloop``: uvloop; ``auto``: uvloop when installed (as
    uvicorn picks it for the server)."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise SystemExit("--loop uvloop: uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def json_safe(value: Any) -> Any:
    """NaN (no data) as null, so that the file is strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Throughput of the local model through tokenwire (SSE, WebSocket) vs. "
        "llama-cpp-python alone, and event-loop stalls during local generation.",
    )
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per generation")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per path")
    parser.add_argument("--seed", type=int, default=42, help="sampling seed")
    parser.add_argument(
        "--concurrency-runs", type=int, default=3, help="rounds per concurrency level"
    )
    parser.add_argument(
        "--prefill-chunk", type=int, default=128, help="long-prompt section: prefill chunk"
    )
    parser.add_argument(
        "--skip-concurrency", action="store_true", help="only sections 1-3 (the lone stream)"
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop of this process (auto: uvloop when installed, like the server)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    if args.max_tokens < 1 or args.runs < 1:
        parser.error("--max-tokens and --runs must be >= 1")

    from llama_cpp import Llama

    started = time.perf_counter()
    model_path = bundled_model_path()
    console.print(f"model: {model_path.name}; loading the baseline llama.cpp instance")
    llama = Llama(model_path=str(model_path), n_ctx=N_CTX, verbose=False)
    config = {
        "max_tokens": args.max_tokens,
        "runs": args.runs,
        "seed": args.seed,
        "concurrency_runs": args.concurrency_runs,
        "prompt": PROMPT,
        "model": model_path.name,
        "n_ctx": N_CTX,
        "n_threads": llama.context_params.n_threads,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    results: dict[str, Any] = {"config": config}
    try:
        with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
            results["throughput"] = runner.run(
                throughput(llama, args.max_tokens, args.seed, args.runs)
            )
            console.print("measuring event-loop stalls in-process (1 ms ticker)")
            stall = runner.run(measure_stall(llama, args.max_tokens, args.seed, args.runs))
            if not args.skip_concurrency:
                console.print("measuring concurrent streams (continuous batching)")
                results["concurrency"] = runner.run(
                    concurrency(args.max_tokens, args.seed, args.concurrency_runs)
                )
                console.print("measuring a long prompt arriving while 3 streams decode")
                results["long_prompt"] = runner.run(
                    long_prompt(args.max_tokens, args.seed, args.prefill_chunk)
                )
    finally:
        llama.close()
    reference = results["throughput"]["reference_text"]
    stall["provider_same_text"] = all(text == reference for text in stall.pop("provider_texts"))
    results["stall"] = stall
    summary = results["throughput"]["summary"]
    results["targets"] = {
        "ratio_sse": ratio(summary, "sse"),
        "ratio_websocket": ratio(summary, "websocket"),
        "ratio_target": RATIO_TARGET,
        "stall_max_ms": stall["generating"]["max_ms"],
        "stall_target_ms": STALL_TARGET_MS,
    }
    results["elapsed_s"] = time.perf_counter() - started
    report(results)
    console.print(f"total {results['elapsed_s']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(json_safe(results), indent=2) + "\n")
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
