"""Past one process: ``tokenwire serve --workers N`` on a Redis stream log, against one worker.

Each configuration is a real ``tokenwire serve`` (uvicorn's supervisor and its workers, the
provider :class:`transport.servers.ScheduledScriptedProvider`, the benchmark's settings
:data:`transport.harness.TOKENWIRE_ENV`) on a free loopback port, sharing a redis-server of
this run's own (no persistence) as its stream log; ``memory`` runs one worker on the in-process
log, for the Redis log's own cost. The load generator (:mod:`transport.loadgen`, the latency
phase: ``--streams`` streams at ``--rate`` tokens/s, one per connection) reads, over a window
of ``--window`` seconds:

- tokens/s delivered and the added inter-token latency (p50/p99);
- CPU per delivered token of the whole server (every worker, and the supervisor) and each
  worker's CPU share (``busy``: CPU seconds per second);
- Redis, from the server's own ``INFO commandstats`` and ``INFO stats``: commands per token,
  by command, and network bytes per token, into and out of Redis.

From the measured commands and bytes per token it prints the sizing model of the README
(Redis operations per second and network bytes per second per 1,000 streams at 20 tokens/s).
Results: ``results.json`` in ``--out`` (default: ``$XDG_DATA_HOME/tokenwire/bench/scale-<UTC>``).
It asserts nothing.

Run (from the repository root, with the dev extra installed and redis-server on PATH)::

    .venv/bin/python benchmarks/scale.py                          # memory, 1 and 2 workers
    .venv/bin/python benchmarks/scale.py --streams 200 --window 3  # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import child_env, free_port, http_ready, launched, redis_server  # noqa: E402
from transport.__main__ import default_out  # noqa: E402
from transport.harness import TOKENWIRE_ENV, run_loadgen  # noqa: E402

PROVIDER = "transport.servers:ScheduledScriptedProvider"
CLIENT = {"sse": "tokenwire-sse", "ws": "tokenwire-ws"}  # the load generator's client kinds
MODEL_STREAMS, MODEL_RATE = 1000, 20.0  # the sizing model's unit: 1,000 streams x 20 tokens/s


@contextlib.contextmanager
def tokenwire_serve(
    workers: int, stream_log: str, log: Path
) -> Iterator[tuple[list[int], int]]:  # fmt: skip
    """``tokenwire serve --workers N --stream-log <stream_log>`` on a free port; yields (its
    pids: with N > 1 uvicorn's supervisor, then its workers; the port) once ``GET /healthz``
    answers and every worker has started."""
    executable = shutil.which("tokenwire", path=str(Path(sys.executable).parent))
    if executable is None:
        raise RuntimeError("tokenwire is not installed in this environment (pip install -e .)")
    port = free_port()
    command = [executable, "serve", "--port", str(port), "--workers", str(workers)]
    command += ["--stream-log", stream_log, "--provider", PROVIDER, "--log-level", "warning"]
    env = {**child_env(), **TOKENWIRE_ENV}
    with launched(command, log, http_ready(port), env=env, name="tokenwire serve") as process:
        import psutil

        def spawned() -> list[int]:  # uvicorn's workers (not multiprocessing's tracker)
            children = psutil.Process(process.pid).children()
            return [c.pid for c in children if "spawn_main" in " ".join(c.cmdline())]

        deadline = time.monotonic() + 30
        while workers > 1 and len(spawned()) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"tokenwire serve did not start {workers} workers; see {log}")
            time.sleep(0.1)
        time.sleep(1.0)  # every worker past its start-up (imports, Redis connections)
        yield [process.pid, *(spawned() if workers > 1 else [])], port


def measure(
    label: str, workers: int, stream_log: str, redis_port: int | None, args: argparse.Namespace,
    out: Path,
) -> dict[str, Any]:  # fmt: skip
    """One configuration's latency phase; its step's numbers."""
    spec = {
        "name": "latency",
        "streams": [args.streams],
        "window": args.window,
        "settle": args.settle,
        "spread": args.spread,
    }
    with tokenwire_serve(workers, stream_log, out / "logs" / f"{label}.log") as (pids, port):
        job = {
            "server": CLIENT[args.transport],
            "port": port,
            "server_pid": pids[0],
            "server_pids": pids,
            "rate": args.rate,
            "phases": [spec],
        }
        if redis_port is not None:
            job["redis_port"] = redis_port
        result = run_loadgen(job, lambda message: None, out / "logs")
    latency = result["phases"]["latency"]
    step = latency["steps"][0]
    step["failures"] = latency["failures"]
    step["workers"] = workers
    step["stream_log"] = "memory" if redis_port is None else "redis"
    return step


def model(per_token: dict[str, float]) -> dict[str, float]:
    """Redis load of :data:`MODEL_STREAMS` streams at :data:`MODEL_RATE` tokens/s from the
    measured per-token figures: operations/s, network bytes/s into and out of Redis, and the
    share of a core Redis spends running the commands (its own ``usec`` counts)."""
    tokens_per_s = MODEL_STREAMS * MODEL_RATE
    return {
        "tokens_per_s": tokens_per_s,
        "redis_ops_per_s": tokens_per_s * per_token["commands"],
        "redis_in_bytes_per_s": tokens_per_s * per_token["net_input_bytes"],
        "redis_out_bytes_per_s": tokens_per_s * per_token["net_output_bytes"],
        "redis_busy": tokens_per_s * per_token["command_usec"] / 1e6,
    }


def report(console: Console, results: dict[str, Any]) -> None:
    runs = results["runs"]
    table = Table(
        title=f"tokenwire serve, {results['streams']} {results['transport']} streams x "
        f"{results['rate']:g} tokens/s, {results['window']:g} s window"
    )
    for header in ("log x\nworkers", "tokens/s", "ITL ms\np50 / p99", "CPU µs\n/token",
                   "busy per\nworker", "Redis\ncmd/token", "Redis B/token\nin / out",
                   "failed"):  # fmt: skip
        table.add_column(header, justify="right", no_wrap=True)
    for label, step in runs.items():
        workers = (step.get("process_cpu_s") or [0.0, step["server_cpu_s"]])[1:]  # not uvicorn's
        # supervisor (its CPU, near nothing, counts in CPU per token)
        busy = ", ".join(f"{cpu / step['window_s']:.2f}" for cpu in workers)
        per_token = step.get("redis_per_token") or {}
        commands = per_token.get("commands")
        table.add_row(
            label,
            f"{step['tokens_per_s']:,.0f}",
            f"{step['itl_ms']['p50']:.1f} / {step['itl_ms']['p99']:.1f}",
            f"{step['server_cpu_us_per_token']:.1f}",
            busy,
            "n/a" if commands is None else f"{commands:.3f}",
            "n/a" if commands is None else
            f"{per_token['net_input_bytes']:.0f} / {per_token['net_output_bytes']:.0f}",
            str(step["failures"]),
        )  # fmt: skip
    console.print(table)
    for label, step in runs.items():
        by_command = {
            key.removeprefix("cmd:"): value
            for key, value in (step.get("redis_per_token") or {}).items()
            if key.startswith("cmd:")
        }
        if by_command:
            shown = ", ".join(f"{name} {value:.3f}" for name, value in sorted(by_command.items()))
            console.print(f"{label}: Redis commands per token by command: {shown}")
    for label, sizing in results["model"].items():
        console.print(
            f"model from {label}: {MODEL_STREAMS:,} streams x {MODEL_RATE:g} tokens/s = "
            f"{sizing['tokens_per_s']:,.0f} tokens/s -> {sizing['redis_ops_per_s']:,.0f} Redis "
            f"ops/s, {sizing['redis_in_bytes_per_s'] / 1e6:.2f} MB/s into Redis, "
            f"{sizing['redis_out_bytes_per_s'] / 1e6:.2f} MB/s out, Redis busy "
            f"{sizing['redis_busy']:.2f} of a core"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts on Redis (default 1,2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory-log run")
    parser.add_argument("--transport", choices=sorted(CLIENT), default="sse")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="tokens/s per stream")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--spread", type=float, default=2.0, help="seconds to open the streams")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    out = args.out or default_out("scale", datetime.datetime.now(datetime.UTC))
    out.mkdir(parents=True, exist_ok=True)
    console = Console(width=max(Console().width, 110))  # the table's 8 columns whole
    began = time.monotonic()
    runs: dict[str, Any] = {}
    if not args.no_memory:
        console.print("memory log, 1 worker ...")
        runs["memory x1"] = measure("memory-1", 1, "memory", None, args, out)
    with redis_server(out / "logs" / "redis.log") as redis_port:
        url = f"redis://127.0.0.1:{redis_port}/0"
        for workers in counts:
            label = f"redis x{workers}"
            console.print(f"redis log, {workers} worker(s) ...")
            runs[label] = measure(f"redis-{workers}", workers, url, redis_port, args, out)
    results = {
        "schema": "tokenwire.bench.scale/1",
        "command": " ".join(sys.argv),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "transport": args.transport,
        "streams": args.streams,
        "rate": args.rate,
        "window": args.window,
        "runs": runs,
        "model": {
            label: model(step["redis_per_token"])
            for label, step in runs.items()
            if step.get("redis_per_token")
        },
        "duration_s": time.monotonic() - began,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    report(console, results)
    console.print(f"results: {out}", soft_wrap=True)


if __name__ == "__main__":
    main()
