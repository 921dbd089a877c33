"""The transport benchmark harness end to end, through ``tokenwire bench``: the smallest
profile runs all five servers and writes well-formed JSON, Markdown and PNG files. Its numbers
are not checked (timing targets belong in the benchmark's own output, not in tests)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOKENWIRE = Path(sys.executable).with_name("tokenwire")
SERVERS = [
    "tokenwire-sse",
    "tokenwire-ws",
    "baseline-streaming",
    "baseline-sse-starlette",
    "baseline-websocket",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def bench(*args: str, cwd: Path = REPO, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [str(TOKENWIRE), "bench", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_smoke_profile_writes_results_for_every_server(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = bench("--profile", "smoke", "--out", str(out))
    assert run.returncode == 0, run.stdout + run.stderr

    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == "tokenwire.bench.transport/1"
    assert results["profile"] == "smoke"
    assert {"cpu", "cpus", "python", "versions"} <= set(results["machine"])
    assert list(results["servers"]) == SERVERS
    for name, server in results["servers"].items():
        phases = server["phases"]
        assert set(phases) == {"memory", "latency", "ramp", "outpace"}, name
        for phase in phases.values():
            assert phase["failures"] == 0, (name, phase["failure_examples"])
            assert phase["text_mismatches"] == 0, name
        assert phases["latency"]["verified_streams"] > 0, name
        latency = phases["latency"]
        for key in ("ttft_ms", "itl_ms"):
            assert latency[key]["count"] > 0, (name, key)
            assert set(latency[key]) == {"count", "p50", "p99", "p999", "max"}
            assert latency["cdf"][key], (name, key)
        step = latency["steps"][0]
        for key in ("server_cpu_us_per_token", "client_cpu_us_per_token", "tokens_per_s"):
            assert isinstance(step[key], float), (name, key)
        assert phases["ramp"]["steps"] and isinstance(phases["ramp"]["max_streams"], int)
        memory = phases["memory"]
        points = results["settings"]["memory_steps"] + 1  # and the one before any was opened
        assert len(memory["points"]["idle"]) == len(memory["points"]["active"]) == points
        assert phases["outpace"]["tokens"] > 0, name
        row = results["summary"]["rows"][name]
        assert {"server_cpu_us_per_token", "max_streams", "idle_kib_per_connection"} <= set(row)
    assert len(results["summary"]["ratios"]) == 3

    table = (out / "results.md").read_text()
    for name in SERVERS:
        assert sum(line.startswith(f"| {name} |") for line in table.splitlines()) == 1, name
    assert "| ratio (same run) | target | measured |" in table

    for plot in ("latency_cdf.png", "cpu_per_token.png", "memory.png", "ramp.png"):
        data = (out / plot).read_bytes()
        assert data[:8] == PNG_SIGNATURE, plot
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
        assert width > 100 and height > 100, plot
    assert "client" in run.stdout and "µs/token" in run.stdout


def test_bench_outside_a_checkout_says_where_to_run_it(tmp_path: Path) -> None:
    run = bench("--quick", cwd=tmp_path, timeout=60)
    assert run.returncode == 2
    assert "benchmarks/transport not found" in run.stderr


def test_bench_rejects_an_unknown_server_by_name() -> None:
    run = bench("--servers", "tokenwire-sse,nginx", timeout=60)
    assert run.returncode == 2
    assert "--servers: unknown ['nginx']" in run.stderr
