"""The transport benchmark harness end to end, through ``tokenwire bench``: the quick profile
(under 2 minutes, the issue's CI run) runs all six servers and writes well-formed JSON,
Markdown and PNG files. Its numbers
are not checked (timing targets belong in the benchmark's own output, not in tests)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TOKENWIRE = Path(sys.executable).with_name("tokenwire")
SERVERS = [
    "tokenwire-sse",
    "tokenwire-ws",
    "baseline-streaming",
    "baseline-sse-starlette",
    "baseline-websocket",
    "baseline-fastapi-sse",
]
TOKENWIRE_SERVERS = {"tokenwire-sse", "tokenwire-ws"}  # servers with an explicit cancel and resume
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STATS = {"count", "p50", "p99", "p999", "max"}
PLOTS = ("latency_cdf.png", "cpu_per_token.png", "memory.png", "ramp.png", "control.png")


def bench(
    *args: str, cwd: Path = REPO, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TOKENWIRE), "bench", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow  # minutes: whole benchmark runs (still run by make test)
def test_quick_profile_writes_results_for_every_server(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = bench("--quick", "--out", str(out))
    assert run.returncode == 0, run.stdout + run.stderr

    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == "tokenwire.bench.transport/1"
    assert results["profile"] == "quick"
    assert {"cpu", "cpus", "python", "versions"} <= set(results["machine"])
    assert list(results["servers"]) == SERVERS
    assert "options" not in results  # the default run is the profile alone
    settings = results["settings"]
    for name, server in results["servers"].items():
        phases = server["phases"]
        expected = {"memory", "latency", "ramp", "outpace", "cancel", "isolation"}
        assert set(phases) == expected | ({"resume"} if name in TOKENWIRE_SERVERS else set()), name
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
        check_cancel(name, phases["cancel"], settings)
        check_isolation(name, phases["isolation"], settings)
        if name in TOKENWIRE_SERVERS:
            check_resume(name, phases["resume"], settings)
        row = results["summary"]["rows"][name]
        assert {"server_cpu_us_per_token", "max_streams", "idle_kib_per_connection"} <= set(row)
        assert {"disconnect_stop_ms", "isolation_p99_ratio", "resume_gap_ms"} <= set(row)
        assert (row["resume_lost_tokens"] is None) == (name not in TOKENWIRE_SERVERS), name
    assert len(results["summary"]["ratios"]) == 7

    table = (out / "results.md").read_text()
    main, control_table = table.split("| server | disconnect -> stopped", 1)
    for name in SERVERS:
        assert sum(line.startswith(f"| {name} |") for line in main.splitlines()) == 1, name
    assert "| ratio (same run) | target | measured | result |" in table
    control = control_table.split("| ratio (same run)", 1)[0].splitlines()
    for name in SERVERS:  # one row each in the cancel / slow-consumer / resume table
        (line,) = [line for line in control if line.startswith(f"| {name} |")]
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 11, line
        assert (cells[-1] == "n/a") == (name not in TOKENWIRE_SERVERS), line  # lost / duplicated

    for plot in PLOTS:
        data = (out / plot).read_bytes()
        assert data[:8] == PNG_SIGNATURE, plot
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
        assert width > 100 and height > 100, plot
    assert "client" in run.stdout and "µs/token" in run.stdout


def check_cancel(name: str, cancel: dict[str, Any], settings: dict[str, Any]) -> None:
    """Every server: client disconnect -> generator stopped, each sample timed; tokenwire:
    also its explicit cancel, each ending in stream.end (finish_reason cancelled)."""
    kinds = ["disconnect", "cancel"] if name in TOKENWIRE_SERVERS else ["disconnect"]
    for kind in kinds:
        result = cancel[kind]
        assert result["samples"] == settings["cancels"], (name, kind)
        assert set(result["stop_ms"]) == STATS, (name, kind)
        assert result["stop_ms"]["count"] + result["not_stopped"] == settings["cancels"]
        assert result["stop_ms"]["count"] > 0, (name, kind)
        assert result["stop_ms"]["p50"] >= 0, (name, kind)  # the stop follows the cancel
    if name in TOKENWIRE_SERVERS:
        assert cancel["cancel"]["end_ms"]["count"] == settings["cancels"], name
        assert cancel["cancel"]["not_cancelled"] == 0, name
    else:
        assert cancel["cancel"] is None, name
    assert cancel["active_polls"] > 0, name


def check_isolation(name: str, isolation: dict[str, Any], settings: dict[str, Any]) -> None:
    """Healthy streams measured alone and with stalled consumers; RSS per stalled consumer."""
    assert isolation["healthy_streams"] == settings["isolation_healthy"], name
    assert isolation["stalled_consumers"] == settings["isolation_stalled"], name
    for key in ("alone", "stalled"):
        window = isolation[key]
        assert set(window["itl_ms"]) == STATS and window["itl_ms"]["count"] > 0, (name, key)
        assert window["healthy_open"] == settings["isolation_healthy"], (name, key)
        assert isinstance(window["rss_bytes"], int) and window["rss_bytes"] > 0, (name, key)
    fill = isolation["fill"]
    assert set(fill["itl_ms"]) == STATS and fill["window_s"] > 0, name
    assert fill["fill_s"] is None or 0 <= fill["fill_s"] <= settings["isolation_fill_within"]
    for key in ("p99_ratio", "fill_p99_ratio"):
        assert isinstance(isolation[key], float) and isolation[key] > 0, (name, key)
    assert isinstance(isolation["rss_bytes_per_stalled"], float), name


def check_resume(name: str, resume: dict[str, Any], settings: dict[str, Any]) -> None:
    """Every forced disconnect resumed, nothing lost or duplicated, every text exact."""
    assert resume["streams"] == settings["resume_streams"], name
    assert resume["resumes"] == settings["resume_streams"] * settings["resume_disconnects"]
    for key in ("gap_ms", "added_gap_ms"):
        assert set(resume[key]) == STATS and resume[key]["count"] == resume["resumes"], name
        assert resume[key]["p50"] >= 0, (name, key)
    assert resume["lost_tokens"] == resume["duplicated_tokens"] == 0, name
    assert resume["inexact_streams"] == resume["unfinished_streams"] == 0, name
    assert sum(resume["finish_reasons"].values()) == settings["resume_streams"], name


def test_bench_outside_a_checkout_says_where_to_run_it(tmp_path: Path) -> None:
    run = bench("--quick", cwd=tmp_path, timeout=60)
    assert run.returncode == 2
    assert "benchmarks/transport not found" in run.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--servers", "tokenwire-sse,nginx"), "--servers: unknown ['nginx']"),
        (("--phases", "latency,warmup"), "--phases: unknown ['warmup']"),
        (("--repeat", "0"), "--repeat must be at least 1"),
    ],
)
def test_bench_rejects_a_bad_option_naming_it(args: tuple[str, ...], message: str) -> None:
    run = bench(*args, timeout=60)
    assert run.returncode == 2
    assert message in run.stderr


@pytest.mark.slow  # minutes: whole benchmark runs (still run by make test)
def test_repeat_runs_every_phase_in_rounds_and_reports_medians(tmp_path: Path) -> None:
    out = tmp_path / "results"
    servers = ["tokenwire-sse", "baseline-streaming"]
    run = bench("--quick", "--repeat", "2", "--servers", ",".join(servers), "--out", str(out))
    assert run.returncode == 0, run.stdout + run.stderr

    results = json.loads((out / "results.json").read_text())
    assert results["repeat"] == 2
    assert list(results["servers"]) == servers
    for name, server in results["servers"].items():
        (repeat,) = server["repeats"]
        assert set(repeat) == set(server["phases"]), name
        cpus = [
            p["latency"]["steps"][0]["server_cpu_us_per_token"] for p in (server["phases"], repeat)
        ]
        row = results["summary"]["rows"][name]
        assert row["rounds"] == 2
        assert row["server_cpu_us_per_token"] == pytest.approx(sum(cpus) / 2), name
        assert row["failures"] == 0, name
    cpu_ratio = results["summary"]["ratios"][0]
    rounds = [
        {name: s["phases"] if n == 0 else s["repeats"][0] for name, s in results["servers"].items()}
        for n in range(2)
    ]
    expected = [
        r["tokenwire-sse"]["latency"]["steps"][0]["server_cpu_us_per_token"]
        / r["baseline-streaming"]["latency"]["steps"][0]["server_cpu_us_per_token"]
        for r in rounds
    ]
    assert cpu_ratio["rounds"] == pytest.approx(expected)
    assert cpu_ratio["value"] == pytest.approx(sum(expected) / 2)
    assert results["summary"]["ratios"][1]["value"] is None  # no WebSocket servers ran
    table = (out / "results.md").read_text()
    assert "Every phase ran 2 times" in table
    assert f"(rounds: {expected[0]:.2f}, {expected[1]:.2f})" in table


def test_a_round_s_failures_add_up_rather_than_vanish_in_a_median(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from transport.report import summary_row

    def phases(cpu: float, failures: int, warning: str, streams: int) -> dict[str, Any]:
        step = {"server_cpu_us_per_token": cpu, "client_cpu_us_per_token": 1.0}
        latency = {"steps": [step], "failures": failures, "warnings": [warning]}
        return {
            "latency": latency,
            "outpace": {"tokens_per_server_cpu_s": cpu * 1000},
            "ramp": {"max_streams": streams},
        }

    server = {
        "phases": phases(10.0, 0, "slow start", 500),
        "repeats": [phases(30.0, 2, "slow start", 1000), phases(12.0, 0, "host busy", 1500)],
    }
    row = summary_row("tokenwire-sse", server)
    assert row["server_cpu_us_per_token"] == 12.0  # the median, not the mean (17.3)
    assert row["max_streams"] == 1000
    two_rounds = summary_row("tokenwire-sse", {**server, "repeats": server["repeats"][:1]})
    assert two_rounds["max_streams"] == 500  # a ramp step that ran, not 750
    assert two_rounds["server_cpu_us_per_token"] == 20.0
    assert row["outpace_tokens_per_cpu_s"] == 12_000.0
    assert row["failures"] == 2
    assert row["client_cheaper"] is True
    assert row["warnings"] == ["latency: slow start", "latency: host busy"]
    assert row["rounds"] == 3


def git_status() -> str:
    status = ["git", "status", "--porcelain", "--untracked-files=all"]
    return subprocess.run(status, cwd=REPO, capture_output=True, text=True, check=True).stdout


def test_phases_runs_only_the_named_phases_into_the_data_folder_not_the_checkout(
    tmp_path: Path,
) -> None:
    before = git_status()
    run = bench(
        "--quick", "--phases", "latency,outpace", "--servers", "tokenwire-ws",
        env={"XDG_DATA_HOME": str(tmp_path)},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    (out,) = (tmp_path / "tokenwire" / "bench").iterdir()  # no --out: the default folder
    assert out.name.startswith("quick-") and out.name.endswith("Z"), out
    assert f"results: {out}" in run.stdout
    assert "logs" in {p.name for p in out.iterdir()}
    assert git_status() == before  # nothing new in the source tree

    results = json.loads((out / "results.json").read_text())
    assert results["phases_run"] == ["latency", "outpace"]
    (server,) = results["servers"].values()
    assert set(server["phases"]) == {"latency", "outpace"}
    assert server["phases"]["latency"]["steps"][0]["server_cpu_us_per_token"] > 0
    row = results["summary"]["rows"]["tokenwire-ws"]
    assert row["max_streams"] is None and row["idle_kib_per_connection"] is None
    assert "| tokenwire-ws |" in (out / "results.md").read_text()


@pytest.mark.slow  # minutes: whole benchmark runs (still run by make test)
def test_resume_log_redis_resumes_on_either_server_and_counts_redis_commands(
    tmp_path: Path,
) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    out = tmp_path / "results"
    servers = ["tokenwire-sse", "tokenwire-ws"]
    run = bench(
        "--quick", "--phases", "resume", "--servers", ",".join(servers), "--resume-log", "redis",
        "--out", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr

    results = json.loads((out / "results.json").read_text())
    assert results["options"] == {"resume_log": "redis"}
    settings = results["settings"]
    for name, server in results["servers"].items():
        resume = server["phases"]["resume"]
        check_resume(name, resume, settings)
        assert resume["stream_log"] == "redis", name
        delivered = settings["resume_streams"] * settings["resume_tokens"]
        assert resume["tokens_delivered"] == delivered, name
        assert resume["redis_commands"] > 0, name
        per_token = resume["redis_commands"] / delivered
        assert resume["redis_commands_per_token"] == pytest.approx(per_token), name
        by_server = resume["gap_ms_by_server"]
        assert by_server["same"]["count"] + by_server["other"]["count"] == resume["resumes"]
        assert by_server["other"]["count"] > 0, name  # resumed where the stream does not run
        assert f"{name}: redis stream log" in run.stdout
    assert (out / "logs" / "redis.log").exists()
    assert (out / "logs" / "tokenwire-sse-b.log").exists()


def test_cancel_stall_stops_tokenwire_streams_still_waiting_for_their_first_token(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results"
    servers = ["tokenwire-ws", "baseline-websocket"]
    run = bench(
        "--quick", "--phases", "cancel", "--servers", ",".join(servers), "--cancel-stall",
        "--out", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr

    results = json.loads((out / "results.json").read_text())
    assert results["options"] == {"cancel_stall": True}
    settings = results["settings"]
    for name, server in results["servers"].items():
        cancel = server["phases"]["cancel"]
        check_cancel(name, cancel, settings)
        assert server["phases"]["cancel"]["failures"] == 0, name
        if name in TOKENWIRE_SERVERS:
            stall = cancel["stall"]
            assert stall["samples"] == settings["cancels"], name
            assert set(stall["stop_ms"]) == STATS, name
            assert stall["stop_ms"]["count"] + stall["not_stopped"] == settings["cancels"]
            assert stall["stop_ms"]["count"] > 0 and stall["stop_ms"]["p50"] >= 0, name
        else:
            assert "stall" not in cancel, name  # no stream.start to wait for
    assert "tokenwire-ws: stalled first token" in run.stdout
