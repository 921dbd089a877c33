"""The baselines of ``tokenwire bench`` on their own: baseline (d), FastAPI's native SSE, served
by a real uvicorn and read by httpx (its frames, its usage event, its 400), then measured by
the load generator, which counts its tokens from the deltas' text and checks them against the
server's usage event."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx

from tests.benchmarks.test_harness import STATS, bench, check_cancel
from tests.helpers import serve
from tokenwire.providers.scripted import scripted_text

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from transport.servers import baseline_fastapi_sse  # noqa: E402
from transport.source import Schedule, request_fields  # noqa: E402


def sse_events(body: str) -> list[dict[str, str]]:
    """The events of an SSE body (``\\n`` line ends), each as its fields."""
    events = []
    for block in body.split("\n\n"):
        if block:
            events.append(dict(line.split(": ", 1) for line in block.split("\n")))
    return events


def test_fastapi_baseline_streams_a_json_delta_per_token_then_its_usage() -> None:
    schedule = Schedule(time.monotonic(), tokens=6, ttft=0.0, interval=0.001)
    with serve(baseline_fastapi_sse()) as server:
        response = httpx.post(f"{server.base_url}/fastapi-sse", json=request_fields(schedule))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    *deltas, usage = sse_events(response.text)
    assert [set(event) for event in deltas] == [{"data"}] * 6  # one frame per token
    assert "".join(json.loads(event["data"])["delta"] for event in deltas) == scripted_text(6)
    assert usage["event"] == "usage"
    assert json.loads(usage["data"]) == {"completion_tokens": 6}


def test_fastapi_baseline_refuses_a_request_without_a_schedule() -> None:
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
    with serve(baseline_fastapi_sse()) as server:
        response = httpx.post(f"{server.base_url}/fastapi-sse", json=body)
        health = httpx.get(f"{server.base_url}/healthz")
    assert response.status_code == 400
    assert "not a benchmark schedule" in response.json()["detail"]
    assert health.status_code == 200


def test_bench_measures_the_fastapi_baseline_counting_tokens_from_its_usage(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results"
    run = bench(
        "--quick", "--phases", "memory,latency,cancel", "--servers", "baseline-fastapi-sse",
        "--out", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr

    results = json.loads((out / "results.json").read_text())
    server = results["servers"]["baseline-fastapi-sse"]
    assert "FastAPI" in server["description"]
    assert "fastapi" in results["machine"]["versions"]
    phases = server["phases"]
    for name, phase in phases.items():
        assert phase["failures"] == 0, (name, phase["failure_examples"])
        assert phase["text_mismatches"] == 0, name
    # the memory phase's warm-up streams run to their end: each checked against its usage
    assert phases["memory"]["verified_streams"] > 0
    step = phases["latency"]["steps"][0]
    assert step["tokens"] > 0 and isinstance(step["server_cpu_us_per_token"], float)
    assert set(phases["latency"]["itl_ms"]) == STATS
    check_cancel("baseline-fastapi-sse", phases["cancel"], results["settings"])
    assert "| baseline-fastapi-sse |" in (out / "results.md").read_text()
