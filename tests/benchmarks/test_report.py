"""The transport benchmark's report, from a committed run's results.json (no benchmark runs):
where results go by default, the console tables at 80 columns, pass/fail beside each target,
the plots' titles, labels, legends and thresholds (read from the matplotlib Figures), and
``--report-only``."""

from __future__ import annotations

import copy
import datetime
import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rich.console import Console

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "benchmarks" / "results" / "default-20261121T173653Z"
SERVERS = [
    "tokenwire-sse",
    "tokenwire-ws",
    "baseline-streaming",
    "baseline-sse-starlette",
    "baseline-websocket",
]
PLOTS = ("latency_cdf.png", "cpu_per_token.png", "memory.png", "ramp.png", "control.png")


@pytest.fixture
def transport(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    yield importlib.import_module("transport")


@pytest.fixture
def results() -> dict[str, Any]:
    """The committed run, on a machine and a day of its own (so that a title showing them
    shows what the run recorded, not what this machine is)."""
    data: dict[str, Any] = json.loads((RUN / "results.json").read_text())
    data["machine"].update(cpu="Example CPU 9000", cpus=7)
    data["started"] = "2031-02-03T04:05:06+00:00"
    return data


def scale_cpu(results: dict[str, Any], server: str, factor: float) -> None:
    """Multiply ``server``'s latency-phase server CPU per token by ``factor`` in every round."""
    entry = results["servers"][server]
    for phases in [entry["phases"], *entry.get("repeats", [])]:
        phases["latency"]["steps"][0]["server_cpu_us_per_token"] *= factor


def render(*renderables: Any, width: int = 80) -> str:
    console = Console(width=width, record=True, color_system=None)
    for renderable in renderables:
        console.print(renderable)
    return console.export_text()


# -- where results go ---------------------------------------------------------------------------


def test_default_out_is_in_the_user_s_data_folder_not_the_checkout(transport: ModuleType) -> None:
    main = importlib.import_module("transport.__main__")
    now = datetime.datetime(2031, 2, 3, 4, 5, 6, tzinfo=datetime.UTC)
    xdg = Path("/data/xdg")
    assert main.default_out("quick", now, {"XDG_DATA_HOME": str(xdg)}) == (
        xdg / "tokenwire" / "bench" / "quick-20310203T040506Z"
    )
    for environ in ({}, {"XDG_DATA_HOME": ""}):
        out = main.default_out("default", now, environ)
        assert out == Path.home() / ".local/share/tokenwire/bench/default-20310203T040506Z"
        assert not out.is_relative_to(REPO)


def test_report_only_renders_beside_the_results_and_leaves_them_as_they_were(
    transport: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main = importlib.import_module("transport.__main__")
    source = (RUN / "results.json").read_text()
    (tmp_path / "results.json").write_text(source)
    assert main.main(["--report-only", str(tmp_path)]) == 0
    assert (tmp_path / "results.json").read_text() == source
    assert (
        "| ratio (same run) | target | measured | result |" in (tmp_path / "results.md").read_text()
    )
    for plot in PLOTS:
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG", plot
    printed = capsys.readouterr().out
    assert "✗ FAIL" in printed and f"results: {tmp_path}" in printed

    other = tmp_path / "elsewhere"
    assert main.main(["--report-only", str(tmp_path / "results.json"), "--out", str(other)]) == 0
    assert {p.name for p in other.iterdir()} == {"results.md", *PLOTS}
    assert main.main(["--report-only", str(tmp_path / "missing")]) == 2


# -- console tables ---------------------------------------------------------------------------


def test_console_tables_fit_80_columns_with_every_cell_whole(
    transport: ModuleType, results: dict[str, Any]
) -> None:
    from transport.report import tables

    chosen = tables(results)
    assert len(chosen) == 7  # latency, CPU, memory, cancel, slow consumers, resume, targets
    for table in chosen:
        text = render(table)
        lines = text.splitlines()
        assert max(len(line) for line in lines) <= 80, text
        assert "…" not in text, text
        names = [n for n in SERVERS if "Resume" not in str(table.title) or "tokenwire" in n]
        if "Targets" in str(table.title):
            names = []
        for name in names:  # one row per server, its name whole at the start of the line
            assert sum(line.lstrip().startswith(f"{name} ") for line in lines) == 1, text
    resume = render(chosen[5])
    assert "tokenwire-sse" in resume and "baseline" not in resume


def test_console_tables_fit_80_columns_with_large_numbers(
    transport: ModuleType, results: dict[str, Any]
) -> None:
    from transport.report import tables

    for server in SERVERS:
        scale_cpu(results, server, 1000.0)  # 30,800.0 µs/token
        entry = results["servers"][server]
        for phases in [entry["phases"], *entry["repeats"]]:
            latency = phases["latency"]
            latency["ttft_ms"] = {key: 123456.78 for key in latency["ttft_ms"]}
    text = render(*tables(results))
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "…" not in text and "123,457" in text and "30,750.0" in text


# -- pass / fail --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "target", "expected"),
    [
        (1.0, "<= 1.0", True),
        (1.01, "<= 1.0", False),
        (3.0, ">= 3.0", True),
        (2.9, ">= 3.0", False),
        (None, "<= 1.0", None),
    ],
)
def test_met_compares_a_value_with_its_target(
    transport: ModuleType, value: float | None, target: str, expected: bool | None
) -> None:
    from transport.report import met

    assert met(value, target) is expected


def test_every_target_is_marked_pass_or_fail_in_the_tables_and_markdown(
    transport: ModuleType, results: dict[str, Any]
) -> None:
    from transport.report import markdown, tables

    scale_cpu(results, "tokenwire-sse", 0.5)  # SSE / (a): 0.58, met; WS / (c) 1.15, missed
    del results["servers"]["baseline-websocket"]  # WS / (c): not measured
    *_, targets = tables(results)
    lines = render(targets).splitlines()
    (sse,) = [
        line for line in lines if "tokenwire-sse / baseline-streaming" in line and "<= 1.05" in line
    ]
    assert sse.rstrip().endswith("✓ pass"), sse
    (outpace,) = [line for line in lines if ">= 2.0" in line]
    assert outpace.rstrip().endswith("✗ FAIL"), outpace
    ws = [line for line in lines if "tokenwire-ws / baseline-websocket" in line]
    assert len(ws) == 2 and all(line.rstrip().endswith("n/a") for line in ws), ws
    # max streams: against the best baseline of the round (1000 streams, (a)'s), (c) gone
    sse_streams, ws_streams = [line for line in lines if "/ best baseline" in line]
    assert sse_streams.rstrip().endswith("1.00   ✓ pass"), sse_streams  # 1000 / 1000
    assert ws_streams.rstrip().endswith("0.50   ✗ FAIL"), ws_streams  # 500 / 1000

    table = markdown(results)
    rows = [line for line in table.splitlines() if line.startswith("| server CPU/token")]
    rows += [line for line in table.splitlines() if line.startswith("| outpace")]
    assert [row.rsplit("|", 2)[1].strip() for row in rows] == ["✓ pass", "n/a", "✗ FAIL"]


# -- plots --------------------------------------------------------------------------------------


def test_every_plot_is_titled_with_workload_machine_and_date_and_every_panel_labelled(
    transport: ModuleType, results: dict[str, Any]
) -> None:
    from transport.plots import figures
    from transport.report import summarize

    drawn = figures(results, summarize(results)["rows"])
    assert list(drawn) == list(PLOTS)
    workloads = {
        "latency_cdf.png": "1000 streams × 20 tokens/s",
        "cpu_per_token.png": "ramp 250 to 5000 streams",
        "memory.png": "up to 1000 idle connections",
        "ramp.png": "250 to 5000 streams × 20 tokens/s",
        "control.png": "200 healthy streams, 5 stalled consumers",
    }
    for name, fig in drawn.items():
        title = fig.get_suptitle()
        for part in (workloads[name], "7 CPUs (Example CPU 9000)", "2031-02-03", "default"):
            assert part in title, (name, title)
        assert "3 rounds" in title, (name, title)
        for ax in fig.axes:
            where = (name, ax.get_title())
            ticks = [tick.get_text() for tick in ax.get_xticklabels()]
            assert ax.get_xlabel() or ticks == list(results["servers"]), where
            assert ax.get_title() and ax.get_ylabel(), where
            legend = ax.get_legend()
            assert legend is not None and legend.get_texts(), where
            if ax.get_yscale() == "log" or ax.get_xscale() == "log":
                label = ax.get_ylabel() if ax.get_yscale() == "log" else ax.get_xlabel()
                assert "log scale" in label, where


@pytest.mark.parametrize(
    ("plot", "axes"),
    [
        ("cpu_per_token.png", (0, 1)),
        ("memory.png", (0, 1)),
        ("control.png", (0, 1)),
    ],
)
def test_magnitude_axes_start_at_zero(
    transport: ModuleType, results: dict[str, Any], plot: str, axes: tuple[int, ...]
) -> None:
    from transport.plots import PLOTS as DRAW
    from transport.report import summarize

    fig = DRAW[plot](results, summarize(results)["rows"])
    for index in axes:
        assert fig.axes[index].get_ylim()[0] == 0, (plot, index)
    if plot == "memory.png":
        assert all(ax.get_xlim()[0] == 0 for ax in fig.axes)


def test_thresholds_are_labelled_lines(transport: ModuleType, results: dict[str, Any]) -> None:
    from transport.plots import PLOTS as DRAW
    from transport.report import summarize

    results["settings"]["stop_p99_ms"] = 40.0
    rows = summarize(results)["rows"]
    (ramp,) = DRAW["ramp.png"](results, rows).axes
    (limit,) = [line for line in ramp.get_lines() if list(line.get_ydata()) == [40.0, 40.0]]
    assert limit.get_label() == "max-streams limit: p99 < 40 ms"
    assert limit.get_label() in [text.get_text() for text in ramp.get_legend().get_texts()]
    assert ramp.get_xlim()[0] == 0
    for ax in DRAW["latency_cdf.png"](results, rows).axes:
        (p99,) = [line for line in ax.get_lines() if line.get_label() == "p99"]
        assert list(p99.get_ydata()) == [0.99, 0.99]
        assert ax.get_ylim() == (0, 1.01)


def test_one_round_says_nothing_of_rounds(transport: ModuleType, results: dict[str, Any]) -> None:
    from transport.plots import figures
    from transport.report import summarize

    one = copy.deepcopy(results)
    one["repeat"] = 1
    for server in one["servers"].values():
        server.pop("repeats", None)
    for fig in figures(one, summarize(one)["rows"]).values():
        assert "round" not in fig.get_suptitle()
