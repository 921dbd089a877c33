"""The run's plots, as matplotlib :class:`~matplotlib.figure.Figure` objects (no pyplot, no
global state), made to be shown outside the results folder: every figure's title names what
ran (the workload), where (CPU model and count) and when (the run's UTC date); every panel has
axis labels and a legend; thresholds are drawn as labelled lines; axes whose magnitude is the
point (bars, RSS, CPU per token, connection counts) start at 0, and a log axis says so.

:func:`figures` builds them (one per file name of :data:`PLOTS`), :func:`save` writes PNGs:

- ``latency_cdf.png``: CDFs of added TTFT and added inter-token latency (latency phase);
- ``cpu_per_token.png``: server and client CPU microseconds per delivered token (latency
  phase), and server CPU per token at each ramp step;
- ``memory.png``: server RSS against idle connections and against active streams;
- ``ramp.png``: added inter-token p99 at each ramp step, with the max-streams limit;
- ``control.png``: cancel latency (client disconnect -> generator stopped, p50 and p99) and the
  healthy streams' added inter-token p99 alone, while stalled consumers fill, and after.

Bars are the summary's (medians over ``--repeat`` rounds); curves are the first round's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn, not with the report
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MIB = 1024 * 1024
LEGEND = {"fontsize": 8}
PANEL = (12.0, 5.0)  # inches: two panels side by side; saved at 100 dpi


def machine_line(results: dict[str, Any]) -> str:
    """Where and when: ``2 CPUs (AMD EPYC) · Python 3.11.7 · 2026-11-21`` (from the run's own
    ``machine`` record, so a plot says which machine drew it)."""
    m = results["machine"]
    return f"{m['cpus']} CPUs ({m['cpu']}) · Python {m['python']} · {results['started'][:10]}"


def _rounds(results: dict[str, Any], bars: bool) -> str:
    repeat = results.get("repeat", 1)
    if repeat == 1:
        return ""
    return f" · bars: median of {repeat} rounds" if bars else f" · first of {repeat} rounds"


def _figure(
    results: dict[str, Any], title: str, workload: str, *, bars: bool, panels: int
) -> Figure:
    from matplotlib.figure import Figure

    size = PANEL if panels == 2 else (7.5, 5.0)
    fig = Figure(figsize=size, layout="constrained")
    fig.subplots(1, panels, squeeze=False)
    profile = results["profile"]
    fig.suptitle(
        f"{title}\n{workload} ({profile} profile)\n{machine_line(results)}{_rounds(results, bars)}",
        fontsize=10,
    )
    return fig


def _colors(results: dict[str, Any]) -> dict[str, str]:
    """One colour per server, the same in every figure."""
    return {name: f"C{i}" for i, name in enumerate(results["servers"])}


def _server_ticks(ax: Axes, names: list[str]) -> None:
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)


def latency_cdf(results: dict[str, Any], rows: dict[str, dict[str, Any]]) -> Figure:
    s = results["settings"]
    workload = f"{s['latency_streams']} streams × {s['rate']:g} tokens/s, {s['latency_window']:g} s"
    fig = _figure(results, "Added latency (observed - due)", workload, bars=False, panels=2)
    colors = _colors(results)
    for ax, key, title in zip(
        fig.axes,
        ("ttft_ms", "itl_ms"),
        ("added time to first token", "added inter-token latency"),
        strict=True,
    ):
        for name, server in results["servers"].items():
            points = server["phases"].get("latency", {}).get("cdf", {}).get(key, [])
            if points:  # a log axis: a 0 ms sample is drawn at 1 µs
                xs = [max(p[0], 1e-3) for p in points]
                ax.plot(xs, [p[1] for p in points], label=name, color=colors[name])
        ax.axhline(0.99, color="grey", linestyle=":", linewidth=1, label="p99")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("added latency (ms, log scale)")
        ax.set_ylabel("fraction of tokens")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(**LEGEND)
    return fig


def cpu_per_token(results: dict[str, Any], rows: dict[str, dict[str, Any]]) -> Figure:
    s = results["settings"]
    workload = (
        f"{s['latency_streams']} streams × {s['rate']:g} tokens/s; ramp "
        f"{s['ramp'][0]} to {s['ramp'][-1]} streams"
    )
    fig = _figure(results, "CPU per delivered token", workload, bars=True, panels=2)
    bars, ramp = fig.axes
    names = list(rows)
    for offset, key, label in (
        (-0.2, "server_cpu_us_per_token", "server"),
        (0.2, "client_cpu_us_per_token", "client (load generator)"),
    ):
        values = [rows[name][key] or 0 for name in names]
        drawn = bars.bar([x + offset for x in range(len(names))], values, 0.4, label=label)
        bars.bar_label(drawn, fmt="%.0f", fontsize=7)
    _server_ticks(bars, names)
    bars.margins(y=0.2)  # room for the legend above the bars (bars keep 0 at the bottom)
    bars.set_ylabel("CPU µs per delivered token")
    bars.set_title(f"latency phase ({s['latency_streams']} streams)")
    bars.legend(**LEGEND)
    colors = _colors(results)
    for name, server in results["servers"].items():
        steps = server["phases"].get("ramp", {}).get("steps", [])
        ramp.plot(
            [step["streams"] for step in steps],
            [step["server_cpu_us_per_token"] or 0 for step in steps],
            marker="o",
            label=name,
            color=colors[name],
        )
    ramp.set_xlim(left=0)
    ramp.set_ylim(bottom=0)
    ramp.set_xlabel("concurrent streams")
    ramp.set_ylabel("server CPU µs per delivered token")
    ramp.set_title("server, at each ramp step")
    ramp.grid(True, alpha=0.3)
    ramp.legend(**LEGEND)
    return fig


def memory(results: dict[str, Any], rows: dict[str, dict[str, Any]]) -> Figure:
    s = results["settings"]
    workload = (
        f"up to {s['memory_connections']} idle connections, then as many streams × "
        f"{s['memory_rate']:g} tokens/s"
    )
    fig = _figure(results, "Server memory (RSS)", workload, bars=False, panels=2)
    colors = _colors(results)
    for ax, mode, what in zip(fig.axes, ("idle", "active"), ("idle connections", "active streams"),
                              strict=True):  # fmt: skip
        for name, server in results["servers"].items():
            points = server["phases"].get("memory", {}).get("points", {}).get(mode, [])
            ax.plot(
                [p[0] for p in points],
                [p[1] / MIB for p in points],
                marker="o",
                label=name,
                color=colors[name],
            )
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.set_xlabel(what if mode == "idle" else f"{what} (on top of the idle connections)")
        ax.set_ylabel("server RSS (MiB)")
        ax.set_title(f"RSS against {what}")
        ax.grid(True, alpha=0.3)
        ax.legend(**LEGEND)
    return fig


def ramp(results: dict[str, Any], rows: dict[str, dict[str, Any]]) -> Figure:
    s = results["settings"]
    workload = (
        f"{s['ramp'][0]} to {s['ramp'][-1]} streams × {s['rate']:g} tokens/s, "
        f"{s['ramp_window']:g} s per step"
    )
    fig = _figure(results, "Ramp: added inter-token p99", workload, bars=False, panels=1)
    (ax,) = fig.axes
    colors = _colors(results)
    for name, server in results["servers"].items():
        steps = server["phases"].get("ramp", {}).get("steps", [])
        ax.plot(
            [step["streams"] for step in steps],
            [step["itl_ms"]["p99"] or 0 for step in steps],
            marker="o",
            label=name,
            color=colors[name],
        )
    limit = s["stop_p99_ms"]
    ax.axhline(limit, color="grey", linestyle="--", label=f"max-streams limit: p99 < {limit:g} ms")
    ax.set_yscale("log")
    ax.set_xlim(left=0)
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("added inter-token p99 (ms, log scale)")
    ax.set_title("the largest step under the limit is a server's max streams", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(**LEGEND)
    return fig


def control(results: dict[str, Any], rows: dict[str, dict[str, Any]]) -> Figure:
    s = results["settings"]
    workload = (
        f"{s['cancels']} disconnects, {s['cancel_concurrency']} at a time; "
        f"{s['isolation_healthy']} healthy streams, {s['isolation_stalled']} stalled consumers"
    )
    fig = _figure(results, "Cancel latency and slow-consumer isolation", workload, bars=True,
                  panels=2)  # fmt: skip
    cancel, isolation = fig.axes
    names = list(rows)
    xs = range(len(names))
    for offset, key in ((-0.2, "p50"), (0.2, "p99")):
        values = [rows[name]["disconnect_stop_ms"].get(key) or 0 for name in names]
        drawn = cancel.bar([x + offset for x in xs], values, 0.4, label=key)
        cancel.bar_label(drawn, fmt="%.1f", fontsize=7)
    _server_ticks(cancel, names)
    cancel.margins(y=0.2)
    cancel.set_ylabel("client disconnect -> generator stopped (ms)")
    cancel.set_title("cancel latency")
    cancel.legend(**LEGEND)
    for offset, key, label in (
        (-0.27, "isolation_alone_itl_ms", "alone"),
        (0.0, "isolation_fill_itl_ms", "while stalled consumers fill"),
        (0.27, "isolation_stalled_itl_ms", "stalled consumers, steady"),
    ):
        values = [rows[name][key].get("p99") or 0 for name in names]
        isolation.bar([x + offset for x in xs], values, 0.27, label=label)
    _server_ticks(isolation, names)
    isolation.set_ylabel("healthy streams' added inter-token p99 (ms)")
    isolation.set_title("slow-consumer isolation")
    isolation.legend(**LEGEND)
    return fig


PLOTS: dict[str, Callable[[dict[str, Any], dict[str, dict[str, Any]]], Figure]] = {
    "latency_cdf.png": latency_cdf,
    "cpu_per_token.png": cpu_per_token,
    "memory.png": memory,
    "ramp.png": ramp,
    "control.png": control,
}


def figures(results: dict[str, Any], rows: dict[str, dict[str, Any]]) -> dict[str, Figure]:
    """Every plot of a run, by file name. ``rows``: the summary's rows by server
    (:func:`transport.report.summarize`)."""
    return {name: draw(results, rows) for name, draw in PLOTS.items()}


def save(results: dict[str, Any], rows: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    """Write every plot into ``out`` as PNG (100 dpi); return the paths."""
    paths = []
    for name, fig in figures(results, rows).items():
        fig.savefig(out / name, dpi=100)
        paths.append(out / name)
    return paths
