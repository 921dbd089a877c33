"""The orchestrator: for each server under test, start it, run the load generator, stop it.

Every server runs alone in its own ``python -m uvicorn`` process (same flags for all, see
:data:`UVICORN_FLAGS`) on a free loopback port; the load generator (:mod:`transport.loadgen`)
runs in another process and reads the server's CPU time and RSS by its pid. Each phase gets a
fresh server process, so that nothing one phase left behind (streams a server still works on
after its clients left, memory it did not return) is charged to the next. Servers run one
after another, never two at once, and take turns phase by phase (every server's memory
phase, then every server's latency phase, ...); ``--repeat N`` runs all of it N times.
Results go to ``<out>/results.json``, ``results.md`` and PNG plots (:mod:`transport.report`),
server and load generator logs to ``<out>/logs/``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from common import child_env, redis_server, tokenwire_server

SCHEMA = "tokenwire.bench.transport/1"

# The options beyond the profile, and their defaults (see :func:`run`).
OPTIONS: dict[str, Any] = {"resume_log": "memory", "cancel_stall": False}


@dataclass(frozen=True)
class ServerUnderTest:
    """``name`` (the row of the table), the uvicorn app factory, and what it is; ``features``:
    what it offers beyond a stream per connection (``cancel``: an explicit cancel;
    ``resume``: resume after the last seq seen), which phases that need it (a spec's
    ``needs``) run on it."""

    name: str
    factory: str
    description: str
    features: frozenset[str] = frozenset()


TOKENWIRE_FEATURES = frozenset({"cancel", "resume"})


SERVERS = [
    ServerUnderTest(
        "tokenwire-sse",
        "transport.servers:tokenwire_app",
        "tokenwire, POST /v1/streams (SSE)",
        TOKENWIRE_FEATURES,
    ),
    ServerUnderTest(
        "tokenwire-ws",
        "transport.servers:tokenwire_app",
        "tokenwire, WebSocket /v1/ws",
        TOKENWIRE_FEATURES,
    ),
    ServerUnderTest(
        "baseline-streaming",
        "transport.servers:baseline_streaming",
        "(a) Starlette StreamingResponse, `data: {token}` per token",
    ),
    ServerUnderTest(
        "baseline-sse-starlette",
        "transport.servers:baseline_sse_starlette",
        "(b) sse-starlette EventSourceResponse",
    ),
    ServerUnderTest(
        "baseline-websocket",
        "transport.servers:baseline_websocket",
        "(c) Starlette WebSocket, one send_text per token",
    ),
    ServerUnderTest(
        "baseline-fastapi-sse",
        "transport.servers:baseline_fastapi_sse",
        "(d) FastAPI EventSourceResponse, a pydantic model per token",
    ),
]

UVICORN_FLAGS = [
    "--loop", "uvloop",
    "--http", "httptools",
    "--ws", "auto",  # what `tokenwire serve` uses: websockets (sans-I/O) when installed
    "--ws-per-message-deflate", "false",
    "--no-access-log",
    "--log-level", "warning",
    "--backlog", "8192",
    "--timeout-graceful-shutdown", "1",
]  # fmt: skip

# tokenwire's settings for the benchmark; everything else is its default. Its protective limits
# (live streams and WebSockets per process and per key) are lifted: the baselines have none,
# and the ramp must find where latency, not a limit, stops a server.
TOKENWIRE_ENV = {
    "TOKENWIRE_PROVIDER": "scripted",
    "TOKENWIRE_LOG_LEVEL": "warning",
    "TOKENWIRE_AUTH": "off",
    "TOKENWIRE_MAX_TOKENS_LIMIT": "100000000",
    "TOKENWIRE_MAX_STREAMS": "1000000",
    "TOKENWIRE_MAX_STREAMS_PER_KEY": "1000000",
    "TOKENWIRE_MAX_WS_CONNECTIONS": "1000000",
    "TOKENWIRE_MAX_WS_CONNECTIONS_PER_KEY": "1000000",
    "TOKENWIRE_WS_MESSAGES_PER_MINUTE": "1000000",
}


@dataclass(frozen=True)
class Profile:
    """How much load, for how long. Durations in seconds, rate in tokens/s per stream."""

    rate: float = 20.0
    memory_connections: int = 1000
    memory_steps: int = 4
    memory_rate: float = 2.0
    latency_streams: int = 1000
    latency_window: float = 10.0
    ramp: list[int] = field(default_factory=lambda: [250, 500, 1000, 1500, 2000, 3000, 4000, 5000])
    ramp_window: float = 5.0
    stop_p99_ms: float = 50.0
    spread: float = 2.0
    settle: float = 1.0
    outpace_streams: int = 50
    outpace_window: float = 5.0
    outpace_read_every: float = 0.01
    cancels: int = 100  # per kind of cancel
    cancel_concurrency: int = 10
    cancel_after_tokens: int = 2
    cancel_within: float = 5.0  # a stream not stopped by then counts as not stopped
    isolation_healthy: int = 200
    isolation_stalled: int = 5
    isolation_spread: float = 1.0
    isolation_window: float = 1.0
    isolation_fill_within: float = 5.0  # the stalled consumers' fill, at most (then a warning)
    isolation_rcvbuf: int = 4096  # bytes: SO_RCVBUF of a stalled consumer's socket
    isolation_mss: int = 1448  # bytes: its TCP_MAXSEG, an Ethernet path's (not loopback's 64 KiB)
    isolation_stalled_tokens: int = 100_000_000
    resume_streams: int = 40
    resume_tokens: int = 80
    resume_disconnects: int = 4  # per stream
    quiesce_within: float = 5.0  # after each phase, wait at most this long for an idle server
    # The workload: TOKENWIRE_* settings this profile adds for tokenwire's servers (under
    # --tokenwire-env), e.g. RICH_WORKLOAD's reasoning and tool-call deltas.
    tokenwire_env: dict[str, str] = field(default_factory=dict)

    def phases(self) -> list[dict[str, Any]]:
        """The load generator's phase specs (see :mod:`transport.loadgen`)."""
        return [
            {
                "name": "memory",
                "connections": self.memory_connections,
                "steps": self.memory_steps,
                "rate": self.memory_rate,
                "settle": self.settle,
            },
            {
                "name": "latency",
                "streams": [self.latency_streams],
                "window": self.latency_window,
                "settle": self.settle,
                "spread": self.spread,
            },
            {
                "name": "ramp",
                "streams": self.ramp,
                "window": self.ramp_window,
                "settle": self.settle,
                "spread": self.spread,
                "stop_p99_ms": self.stop_p99_ms,
            },
            {
                "name": "outpace",
                "streams": self.outpace_streams,
                "tokens": 100_000_000,
                "window": self.outpace_window,
                "settle": self.settle,
                "read_every": self.outpace_read_every,
            },
            {
                "name": "cancel",
                "cancels": self.cancels,
                "concurrency": self.cancel_concurrency,
                "after_tokens": self.cancel_after_tokens,
                "within": self.cancel_within,
                "settle": self.settle,
            },
            {
                "name": "isolation",
                "healthy": self.isolation_healthy,
                "stalled": self.isolation_stalled,
                "window": self.isolation_window,
                "fill_within": self.isolation_fill_within,
                "settle": self.settle,
                "spread": self.isolation_spread,
                "rcvbuf": self.isolation_rcvbuf,
                "mss": self.isolation_mss,
                "stalled_tokens": self.isolation_stalled_tokens,
            },
            {
                "name": "resume",
                "needs": "resume",
                "streams": self.resume_streams,
                "tokens": self.resume_tokens,
                "disconnects": self.resume_disconnects,
                "spread": self.spread,
                "within": self.cancel_within,
                "settle": self.settle,
            },
        ]

    def phases_for(
        self, server: ServerUnderTest, only: frozenset[str] | None = None
    ) -> list[dict[str, Any]]:
        """The phases that apply to ``server`` (a spec's ``needs`` is one of its features),
        of those named in ``only`` if given."""
        return [
            spec
            for spec in self.phases()
            if spec.get("needs", "") in {"", *server.features}
            and (only is None or spec["name"] in only)
        ]

    def progress_steps(
        self, server: ServerUnderTest | None = None, only: frozenset[str] | None = None
    ) -> int:
        """Progress lines the load generator writes for ``server`` (None: a baseline) in the
        phases named in ``only`` (None: all)."""
        features = server.features if server is not None else frozenset()
        lines = {
            "memory": 2 * self.memory_steps,
            "latency": 1,
            "ramp": len(self.ramp),
            "outpace": 1,
            "cancel": 1 + ("cancel" in features),  # one line per kind
            "isolation": 2,  # alone, with stalled consumers (steady)
            "resume": int("resume" in features),
        }
        return sum(count for name, count in lines.items() if only is None or name in only)


RICH_WORKLOAD = {
    "TOKENWIRE_SCRIPTED_REASONING_TOKENS": "8",
    "TOKENWIRE_SCRIPTED_TOOL_CALLS": "2",
    "TOKENWIRE_SCRIPTED_TOOL_CALL_PIECES": "8",
    "TOKENWIRE_SCRIPTED_INTERLEAVE_TOOL_CALLS": "true",
}
"""The rich workload (profiles ``rich`` and ``quick-rich``): per stream, 8 reasoning deltas
beside its first text tokens, then 2 parallel tool calls of 8 interleaved argument deltas each
(see :class:`transport.servers.ScheduledScriptedProvider`). The load generator still counts
and times the text tokens, so CPU per token is per text token, reasoning and calls included."""

PROFILES = {
    "default": Profile(),
    "quick": Profile(  # under 2 minutes on 2 cores; what CI runs (tests/benchmarks)
        memory_connections=200,
        memory_steps=2,
        latency_streams=200,
        latency_window=0.8,
        ramp=[500, 1000],
        ramp_window=0.6,
        spread=0.4,
        settle=0.3,
        outpace_streams=20,
        outpace_window=0.6,
        cancels=8,
        cancel_concurrency=4,
        cancel_after_tokens=1,
        isolation_healthy=50,
        isolation_stalled=2,
        isolation_spread=0.3,
        isolation_window=0.25,
        isolation_fill_within=2.0,
        resume_streams=8,
        resume_tokens=20,
        resume_disconnects=2,
        quiesce_within=0.5,
    ),
}
PROFILES["rich"] = replace(PROFILES["default"], tokenwire_env=RICH_WORKLOAD)
PROFILES["quick-rich"] = replace(PROFILES["quick"], tokenwire_env=RICH_WORKLOAD)


@contextlib.contextmanager
def running_server(
    server: ServerUnderTest, log_dir: Path, tokenwire_env: dict[str, str], name: str = ""
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start ``server`` under uvicorn on a free port and wait for ``GET /healthz``; stop it
    (SIGINT, then SIGKILL after 5 s) on exit. ``name``: its log's (default: the server's).
    Raises RuntimeError if it does not start."""
    env = {**TOKENWIRE_ENV, **tokenwire_env}
    name = name or server.name
    log = log_dir / f"{name}.log"
    with tokenwire_server(
        log, env, factory=server.factory, flags=UVICORN_FLAGS, name=name
    ) as started:
        yield started


def run_loadgen(
    job: dict[str, Any], on_progress: Any, log_dir: Path, on_window: Any = None
) -> dict[str, Any]:
    """Run :mod:`transport.loadgen` with ``job``; call ``on_progress(message)`` per progress
    line and ``on_window(message)`` when a measurement window opens; return the result
    message. Raises RuntimeError if it fails."""
    stderr = (log_dir / f"loadgen-{job['server']}.log").open("wb")
    with (
        stderr,
        subprocess.Popen(
            [sys.executable, "-m", "transport.loadgen"],
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        ) as process,
    ):
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(job))
        process.stdin.close()
        result = None
        for line in process.stdout:
            message = json.loads(line)
            if message["type"] == "progress":
                on_progress(message)
            elif message["type"] == "window" and on_window is not None:
                on_window(message)
            elif message["type"] == "result":
                result = message
    if process.returncode != 0 or result is None:
        raise RuntimeError(
            f"load generator failed for {job['server']} (exit {process.returncode}); "
            f"see {stderr.name}"
        )
    return result


class PySpy:
    """Samples one server with py-spy (``py-spy record --nonblocking``, 100 Hz) while the
    latency phase's window is open; writes ``<path>.txt`` (collapsed stacks) and
    ``<path>.md`` (the hot spots, :func:`transport.report.hot_spots`). py-spy must be on PATH
    or next to this Python (``pip install py-spy``)."""

    def __init__(self, pid: int, path: Path) -> None:
        self.pid = pid
        self.path = path
        self.process: subprocess.Popen[bytes] | None = None
        found = shutil.which("py-spy") or shutil.which(
            "py-spy", path=str(Path(sys.executable).parent)
        )
        if found is None:
            raise RuntimeError("--py-spy needs py-spy: pip install py-spy")
        self.executable = found

    def on_window(self, message: dict[str, Any]) -> None:
        if message["phase"] != "latency" or self.process is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        command = [self.executable, "record", "--pid", str(self.pid), "--nonblocking"]
        command += ["--duration", str(max(1, int(message["seconds"]))), "--format", "raw"]
        command += ["--output", str(self.path.with_suffix(".txt"))]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def finish(self) -> None:
        from transport.report import hot_spots

        if self.process is None:
            return
        _, stderr = self.process.communicate(timeout=120)
        raw = self.path.with_suffix(".txt")
        if self.process.returncode != 0 or not raw.exists():
            raise RuntimeError(f"py-spy failed: {stderr.decode(errors='replace')[-500:]}")
        self.path.with_suffix(".md").write_text(hot_spots(raw, self.path.name))


def machine() -> dict[str, Any]:
    """Where the numbers came from."""
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("tokenwire", "starlette", "uvicorn", "uvloop", "httptools", "websockets",
                    "sse-starlette", "fastapi"):  # fmt: skip
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def run(
    profile_name: str,
    out: Path,
    servers: list[str] | None = None,
    tokenwire_env: dict[str, str] | None = None,
    console: Console | None = None,
    command: str = "",
    py_spy: bool = False,
    repeat: int = 1,
    only: frozenset[str] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; write results.json, results.md and the plots into ``out``; return
    the results. With ``py_spy``, also profile each server during the latency phase's window
    (see :class:`PySpy`; the first round's). Raises RuntimeError when a server or the load
    generator fails, ValueError when ``repeat`` < 1.

    Phase by phase, every server runs a phase before any runs the next, so that the two rows
    of a ratio are measured minutes apart at most, not a whole server's run apart: a shared
    machine's speed drifts over minutes. ``repeat`` rounds run it all that many times; each
    server's first round is its ``phases``, the others its ``repeats`` (the report takes
    medians, :func:`transport.report.summary_row`). ``only`` names the phases to run (None:
    all of them). ``options`` (:data:`OPTIONS`, recorded in the results when given):
    ``resume_log="redis"`` runs the resume phase on two servers that share a Redis stream log
    (a redis-server of the run's own) and counts Redis commands per token;
    ``cancel_stall=True`` adds the cancel phase's ``stall`` kind (tokenwire)."""
    from transport import report

    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    console = console or Console()
    profile = PROFILES[profile_name]
    tokenwire_env = {**profile.tokenwire_env, **(tokenwire_env or {})}
    chosen = [s for s in SERVERS if servers is None or s.name in servers]
    out.mkdir(parents=True, exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the servers
    options = {key: value for key, value in (options or {}).items() if value != OPTIONS[key]}
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "profile": profile_name,
        "settings": asdict(profile),
        "repeat": repeat,
        "phases_run": [
            spec["name"] for spec in profile.phases() if only is None or spec["name"] in only
        ],
        "command": command,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "servers": {
            s.name: {"description": s.description, "phases": {}, "startup_s": {}, "elapsed_s": 0.0}
            for s in chosen
        },
    }
    if options:
        results["options"] = options
    rounds: dict[str, list[dict[str, Any]]] = {s.name: [] for s in chosen}
    began = time.monotonic()
    needs_redis = options.get("resume_log") == "redis" and any(
        any(spec["name"] == "resume" for spec in profile.phases_for(s, only)) for s in chosen
    )
    stack = contextlib.ExitStack()
    if needs_redis:
        redis_port = stack.enter_context(redis_server(out / "logs" / "redis.log"))
        options = {**options, "redis_port": redis_port}
    columns = [
        TextColumn("[bold]{task.fields[server]:<24}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    ]
    with stack, Progress(*columns, console=console, transient=False) as progress:
        tasks = {
            s.name: progress.add_task(
                "waiting", total=repeat * profile.progress_steps(s, only), server=s.name
            )
            for s in chosen
        }
        for number in range(repeat):
            for server in chosen:
                rounds[server.name].append({})
            for spec in profile.phases():
                for server in chosen:
                    if spec not in profile.phases_for(server, only):
                        continue
                    entry = results["servers"][server.name]
                    spy = py_spy and number == 0
                    result = _run_phase(
                        server,
                        spec,
                        profile,
                        out,
                        tokenwire_env,
                        spy,
                        progress,
                        tasks[server.name],
                        entry,
                        options,
                    )
                    rounds[server.name][number].update(result["phases"])
        for server in chosen:
            entry = results["servers"][server.name]
            entry["phases"], *repeats = rounds[server.name]
            if repeats:
                entry["repeats"] = repeats
            progress.update(
                tasks[server.name],
                completed=repeat * profile.progress_steps(server, only),
                description="done",
            )
    results["duration_s"] = time.monotonic() - began
    report.write(results, out)
    return results


def _run_phase(
    server: ServerUnderTest,
    spec: dict[str, Any],
    profile: Profile,
    out: Path,
    tokenwire_env: dict[str, str] | None,
    py_spy: bool,
    progress: Progress,
    task: Any,
    entry: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, Any]:
    """One phase of one server, in a fresh server process; the load generator's result.
    Records in ``entry`` the server's start-up time before this phase (``startup_s``, the
    longest over the rounds) and adds the phase's time to ``elapsed_s``. With a
    ``redis_port`` in ``options``, the resume phase runs on two processes of the server that
    share that Redis as their stream log."""
    progress.update(task, description=f"starting ({spec['name']})")

    def on_progress(message: dict[str, Any]) -> None:
        progress.update(task, advance=1, description=message.get("detail", ""))

    began = time.monotonic()
    env = dict(tokenwire_env or {})
    redis_port = options.get("redis_port") if spec["name"] == "resume" else None
    if redis_port:
        env["TOKENWIRE_STREAM_LOG"] = f"redis://127.0.0.1:{redis_port}/0"
    with (
        running_server(server, out / "logs", env) as (process, port),
        contextlib.ExitStack() as others,
    ):
        startup = time.monotonic() - began
        entry["startup_s"][spec["name"]] = max(entry["startup_s"].get(spec["name"], 0), startup)
        job = {
            "server": server.name,
            "port": port,
            "server_pid": process.pid,
            "rate": profile.rate,
            "features": sorted(server.features),
            "quiesce_within": profile.quiesce_within,
            "phases": [spec],
        }
        if spec["name"] == "cancel" and options.get("cancel_stall"):
            job["cancel_stall"] = True
        if redis_port:
            second = running_server(server, out / "logs", env, f"{server.name}-b")
            _, other = others.enter_context(second)
            job.update(resume_ports=[port, other], redis_port=redis_port)
        spy = PySpy(process.pid, out / "profiles" / server.name) if py_spy else None
        result = run_loadgen(job, on_progress, out / "logs", spy.on_window if spy else None)
        if spy is not None:
            spy.finish()
    entry["elapsed_s"] += time.monotonic() - began
    return result
