"""Results of a run: ``results.json`` (everything measured), ``results.md`` (the table, the
target ratios and the machine) and PNG plots drawn with matplotlib's Agg backend:

- ``latency_cdf.png``: CDFs of added TTFT and added inter-token latency (latency phase);
- ``cpu_per_token.png``: server and client CPU microseconds per delivered token (latency
  phase), and server CPU per token at each ramp step;
- ``memory.png``: server RSS against idle connections and against active streams;
- ``ramp.png``: added inter-token p99 at each ramp step, with the 50 ms line;
- ``control.png``: cancel latency (client cancel -> generator stopped, p50 and p99) and the
  healthy streams' added inter-token p99 without and with stalled consumers.

A run of several rounds (``--repeat``): the table, the bars and the ratios are medians over the
rounds (:func:`summary_row`, :func:`ratios`); the curves (CDFs, ramp, memory) are the first
round's.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

KIB = 1024

PLOTS = ("latency_cdf.png", "cpu_per_token.png", "memory.png", "ramp.png", "control.png")

# The targets, as ratios of two rows measured in the same run.
RATIOS = [
    (
        "server CPU/token: tokenwire-sse / baseline-streaming",
        "tokenwire-sse",
        "baseline-streaming",
        "cpu",
        "<= 1.0",
    ),
    (
        "server CPU/token: tokenwire-ws / baseline-websocket",
        "tokenwire-ws",
        "baseline-websocket",
        "cpu",
        "<= 1.0",
    ),
    (
        "outpace tokens per CPU-s: tokenwire-sse / baseline-streaming",
        "tokenwire-sse",
        "baseline-streaming",
        "outpace",
        ">= 3.0",
    ),
]


def row(name: str, server: dict[str, Any]) -> dict[str, Any]:
    """The table's numbers for one server (None where not measured)."""
    phases = server["phases"]
    latency = phases.get("latency", {})
    step = (latency.get("steps") or [{}])[0]
    memory = phases.get("memory", {})
    outpace = phases.get("outpace", {})
    cancel = phases.get("cancel", {})
    message = cancel.get("cancel") or {}
    isolation = phases.get("isolation", {})
    resume = phases.get("resume")
    per_stalled = isolation.get("rss_bytes_per_stalled")
    idle, active = (
        memory.get("idle_bytes_per_connection"),
        memory.get("active_bytes_per_connection"),
    )
    server_cpu, client_cpu = (
        step.get("server_cpu_us_per_token"),
        step.get("client_cpu_us_per_token"),
    )
    return {
        "server": name,
        "ttft_ms": latency.get("ttft_ms", {}),
        "itl_ms": latency.get("itl_ms", {}),
        "streams": step.get("streams"),
        "server_cpu_us_per_token": server_cpu,
        "client_cpu_us_per_token": client_cpu,
        "client_cheaper": (client_cpu < server_cpu) if server_cpu and client_cpu else None,
        "client_busy": step.get("client_busy"),
        "max_streams": phases.get("ramp", {}).get("max_streams"),
        "idle_kib_per_connection": idle / KIB if idle is not None else None,
        "active_kib_per_connection": active / KIB if active is not None else None,
        "outpace_tokens_per_cpu_s": outpace.get("tokens_per_server_cpu_s"),
        "outpace_tokens_per_s": outpace.get("tokens_per_s"),
        "disconnect_stop_ms": cancel.get("disconnect", {}).get("stop_ms", {}),
        "not_stopped": sum(
            (cancel.get(kind) or {}).get("not_stopped", 0) for kind in ("disconnect", "cancel")
        ),
        "cancel_end_ms": message.get("end_ms", {}),
        "cancel_stop_ms": message.get("stop_ms", {}),
        "isolation_alone_itl_ms": isolation.get("alone", {}).get("itl_ms", {}),
        "isolation_fill_itl_ms": isolation.get("fill", {}).get("itl_ms", {}),
        "isolation_stalled_itl_ms": isolation.get("stalled", {}).get("itl_ms", {}),
        "isolation_p99_ratio": isolation.get("p99_ratio"),
        "isolation_fill_p99_ratio": isolation.get("fill_p99_ratio"),
        "isolation_fill_s": isolation.get("fill", {}).get("fill_s"),
        "isolation_kib_per_stalled": per_stalled / KIB if per_stalled is not None else None,
        "resume_gap_ms": (resume or {}).get("gap_ms", {}),
        "resume_added_gap_ms": (resume or {}).get("added_gap_ms", {}),
        "resume_lost_tokens": resume["lost_tokens"] if resume else None,
        "resume_duplicated_tokens": resume["duplicated_tokens"] if resume else None,
        "failures": sum(p.get("failures", 0) for p in phases.values()),
        "text_mismatches": sum(p.get("text_mismatches", 0) for p in phases.values()),
        "warnings": [f"{n}: {w}" for n, p in phases.items() for w in p.get("warnings", [])],
    }


def rounds(server: dict[str, Any]) -> list[dict[str, Any]]:
    """The phases of every round a server ran, first to last (``phases`` is the first round,
    ``repeats`` the others; see ``tokenwire bench --repeat``)."""
    return [server["phases"], *server.get("repeats", [])]


# Counts of things that went wrong: a round's trouble must show, so these add up over rounds.
SUMMED = frozenset(
    {"failures", "text_mismatches", "not_stopped", "resume_lost_tokens", "resume_duplicated_tokens"}
)


def summary_row(name: str, server: dict[str, Any]) -> dict[str, Any]:
    """:func:`row` over every round: each number the median of the rounds' (whole numbers,
    such as max streams: the lower median, one of the rounds' values; counts of failures,
    mismatches, lost and duplicated tokens: their sum), warnings from every round."""
    rows = [row(name, {"phases": phases}) for phases in rounds(server)]
    if len(rows) == 1:
        return rows[0]
    merged = _merge(rows)
    server_cpu, client_cpu = merged["server_cpu_us_per_token"], merged["client_cpu_us_per_token"]
    merged["client_cheaper"] = client_cpu < server_cpu if server_cpu and client_cpu else None
    merged["rounds"] = len(rows)
    return merged


def _merge(values: list[Any], key: str = "") -> Any:
    """One value for the same field of several rounds (see :func:`summary_row`)."""
    first = values[0]
    if isinstance(first, dict):
        keys = dict.fromkeys(k for value in values for k in value)
        return {k: _merge([value.get(k) for value in values], k) for k in keys}
    if isinstance(first, list):  # warnings: each once, in the order first seen
        return list(dict.fromkeys(item for value in values for item in value or []))
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return first
    if key in SUMMED:
        return sum(numbers)
    if all(isinstance(v, int) for v in numbers):  # a count (streams): one of the rounds' values
        return statistics.median_low(numbers)
    return statistics.median(numbers)


def ratios(servers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The target ratios (:data:`RATIOS`): each one's value in every round (two rows of the
    same round, measured minutes apart at most), and their median as ``value``."""
    per_round: list[dict[str, dict[str, Any]]] = []
    for name, server in servers.items():
        for number, phases in enumerate(rounds(server)):
            if number == len(per_round):
                per_round.append({})
            per_round[number][name] = row(name, {"phases": phases})
    out = []
    for label, top, bottom, metric, target in RATIOS:
        key = "server_cpu_us_per_token" if metric == "cpu" else "outpace_tokens_per_cpu_s"
        values = []
        for rows in per_round:
            a, b = rows.get(top, {}).get(key), rows.get(bottom, {}).get(key)
            values.append(a / b if a and b else None)
        known = [v for v in values if v is not None]
        value = statistics.median(known) if known else None
        out.append({"label": label, "target": target, "value": value, "rounds": values})
    return out


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """``{"rows": {server: summary_row}, "ratios": ratios}``, what the table and plots show."""
    servers = results["servers"]
    rows = {name: summary_row(name, server) for name, server in servers.items()}
    return {"rows": rows, "ratios": ratios(servers)}


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ms(stats: dict[str, Any], *keys: str) -> str:
    return " / ".join(_num(stats.get(k), 2) for k in keys)


def markdown(results: dict[str, Any]) -> str:
    summary = results.get("summary") or summarize(results)
    rows = list(summary["rows"].values())
    settings = results["settings"]
    repeat = results.get("repeat", 1)
    m = results["machine"]
    lines = [
        f"# Transport benchmark ({results['profile']} profile)",
        "",
        f"{m['cpus']} CPUs ({m['cpu']}), Python {m['python']}, {m['platform']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['load_average'])}; "
        f"{results['started']}; {results.get('duration_s', 0):.0f} s.",
        "",
        f"Latency and CPU at {settings['latency_streams']} concurrent streams x "
        f"{settings['rate']:g} tokens/s; added = observed - the provider's schedule "
        "(milliseconds). Max streams: largest ramp step "
        f"({', '.join(str(s) for s in settings['ramp'])}) with added inter-token p99 < "
        f"{settings['stop_p99_ms']:g} ms. Outpace: {settings['outpace_streams']} streams whose "
        "tokens are all due at once, each socket read at most every "
        f"{settings['outpace_read_every'] * 1e3:g} ms.",
        "",
        *(
            [
                f"Every phase ran {repeat} times (rounds), the servers one after another within "
                "each; each number below is the median of the rounds' (failure counts: their "
                "sum), each ratio the median of the rounds' ratios, with every round's value.",
                "",
            ]
            if repeat > 1
            else []
        ),
        "| server | added TTFT p50 / p99 ms | added inter-token p50 / p99 / p99.9 ms "
        "| server CPU µs/token | client CPU µs/token | max streams (p99 < 50 ms) "
        "| idle KiB/conn | active KiB/conn | outpace tokens/CPU-s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['server']} | {_ms(r['ttft_ms'], 'p50', 'p99')} "
            f"| {_ms(r['itl_ms'], 'p50', 'p99', 'p999')} "
            f"| {_num(r['server_cpu_us_per_token'])} | {_num(r['client_cpu_us_per_token'])} "
            f"| {r['max_streams'] if r['max_streams'] is not None else 'n/a'} "
            f"| {_num(r['idle_kib_per_connection'])} | {_num(r['active_kib_per_connection'])} "
            f"| {_num(r['outpace_tokens_per_cpu_s'], 0)} |"
        )
    lines += ["", *control_table(results, rows)]
    lines += ["", "| ratio (same run) | target | measured |", "|---|---|---|"]
    for ratio in summary["ratios"]:
        measured = _num(ratio["value"], 2)
        if len(ratio["rounds"]) > 1:
            measured += f" (rounds: {', '.join(_num(v, 2) for v in ratio['rounds'])})"
        lines.append(f"| {ratio['label']} | {ratio['target']} | {measured} |")
    problems = [r for r in rows if r["failures"] or r["text_mismatches"]]
    costly = [r["server"] for r in rows if r["client_cheaper"] is False]
    lines.append("")
    for r in problems:
        lines.append(
            f"- {r['server']}: {r['failures']} failed streams, {r['text_mismatches']} streams "
            "whose text differed (see results.json)"
        )
    for r in rows:
        if r["not_stopped"]:
            lines.append(
                f"- {r['server']}: {r['not_stopped']} cancelled streams whose generator was not "
                f"seen to stop within {settings['cancel_within']:g} s"
            )
        for warning in r["warnings"]:
            lines.append(f"- {r['server']}, {warning}")
    if costly:
        lines.append(f"- the client cost more CPU per token than the server for: {costly}")
    lines.append("")
    lines.append("Plots: " + ", ".join(f"[{p}]({p})" for p in PLOTS))
    return "\n".join(lines) + "\n"


def control_table(results: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """The Markdown lines of the cancel, slow-consumer and resume table ("n/a": the server has
    no such thing, or it was not measured; none for results from before these phases)."""
    settings = results["settings"]
    if "cancels" not in settings:
        return []
    lines = [
        f"Cancel: {settings['cancels']} cancels of each kind, {settings['cancel_concurrency']} "
        "at a time, timed from the client's cancel to the server's token generator stopped "
        "(disconnect: every server; cancel: tokenwire's explicit cancel, also to `stream.end`). "
        f"Slow consumers: {settings['isolation_healthy']} healthy streams x {settings['rate']:g} "
        f"tokens/s, added inter-token p99 alone, then with {settings['isolation_stalled']} "
        "stalled consumers (never read; provider outpacing them) while the server fills their "
        "buffers (fill: seconds until its CPU is back to the alone level) and after (steady); "
        "the server's RSS growth per stalled consumer. Resume (tokenwire): "
        f"{settings['resume_streams']} streams x "
        f"{settings['resume_disconnects']} forced disconnects; gap = disconnect -> first token "
        "not seen before (added: from its due time if later). Milliseconds.",
        "",
        "| server | disconnect -> stopped p50 / p99 | cancel -> stream.end p50 / p99 "
        "| cancel -> stopped p50 / p99 | healthy p99 alone / fill / steady "
        "| p99 ratio fill / steady | fill s | KiB per stalled | resume gap p50 / p99 "
        "| added gap p50 / p99 | lost / duplicated |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lost, duplicated = r["resume_lost_tokens"], r["resume_duplicated_tokens"]
        p99s = (r[f"isolation_{k}_itl_ms"].get("p99") for k in ("alone", "fill", "stalled"))
        fill = _num(r["isolation_fill_s"], 2)
        if r["isolation_fill_s"] is None and r["isolation_fill_itl_ms"]:  # not calm in time
            fill = f"> {settings['isolation_fill_within']:g}"
        lines.append(
            f"| {r['server']} | {_ms(r['disconnect_stop_ms'], 'p50', 'p99')} "
            f"| {_ms(r['cancel_end_ms'], 'p50', 'p99')} | {_ms(r['cancel_stop_ms'], 'p50', 'p99')} "
            f"| {' / '.join(_num(p99, 2) for p99 in p99s)} "
            f"| {_num(r['isolation_fill_p99_ratio'], 2)} / {_num(r['isolation_p99_ratio'], 2)} "
            f"| {fill} | {_num(r['isolation_kib_per_stalled'])} "
            f"| {_ms(r['resume_gap_ms'], 'p50', 'p99')} "
            f"| {_ms(r['resume_added_gap_ms'], 'p50', 'p99')} "
            f"| {'n/a' if lost is None else f'{lost} / {duplicated}'} |"
        )
    return lines


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = results["servers"]
    names = list(servers)
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in zip(
        axes, ("ttft_ms", "itl_ms"), ("added TTFT", "added inter-token latency"), strict=True
    ):
        for name in names:
            points = servers[name]["phases"].get("latency", {}).get("cdf", {}).get(key, [])
            if points:
                ax.plot([max(p[0], 1e-3) for p in points], [p[1] for p in points], label=name)
        ax.set_xscale("log")
        ax.set_xlabel("milliseconds")
        ax.set_ylabel("fraction of tokens")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8)
    paths.append(_save(fig, out / "latency_cdf.png"))

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    summary = results.get("summary") or summarize(results)
    rows = [summary["rows"][name] for name in names]
    xs = range(len(rows))
    axes[0].bar(
        [x - 0.2 for x in xs],
        [r["server_cpu_us_per_token"] or 0 for r in rows],
        0.4,
        label="server",
    )
    axes[0].bar(
        [x + 0.2 for x in xs],
        [r["client_cpu_us_per_token"] or 0 for r in rows],
        0.4,
        label="client (load generator)",
    )
    axes[0].set_xticks(list(xs), [r["server"] for r in rows], rotation=20, fontsize=8)
    axes[0].set_ylabel("CPU µs per delivered token")
    axes[0].set_title("CPU per token (latency phase)")
    axes[0].legend(fontsize=8)
    for name in names:
        steps = servers[name]["phases"].get("ramp", {}).get("steps", [])
        axes[1].plot(
            [s["streams"] for s in steps],
            [s["server_cpu_us_per_token"] or 0 for s in steps],
            marker="o",
            label=name,
        )
    axes[1].set_xlabel("concurrent streams")
    axes[1].set_ylabel("server CPU µs per token")
    axes[1].set_title("server CPU per token (ramp)")
    axes[1].legend(fontsize=8)
    paths.append(_save(fig, out / "cpu_per_token.png"))

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, mode in zip(axes, ("idle", "active"), strict=True):
        for name in names:
            points = servers[name]["phases"].get("memory", {}).get("points", {}).get(mode, [])
            ax.plot(
                [p[0] for p in points], [p[1] / KIB / KIB for p in points], marker="o", label=name
            )
        ax.set_xlabel(f"{mode} connections" if mode == "idle" else "active streams (on top)")
        ax.set_ylabel("server RSS (MiB)")
        ax.set_title(f"memory vs {mode} connections")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    paths.append(_save(fig, out / "memory.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        steps = servers[name]["phases"].get("ramp", {}).get("steps", [])
        ax.plot(
            [s["streams"] for s in steps],
            [s["itl_ms"]["p99"] or 0 for s in steps],
            marker="o",
            label=name,
        )
    ax.axhline(results["settings"]["stop_p99_ms"], color="grey", linestyle="--")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("added inter-token p99 (ms)")
    ax.set_title("ramp")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "ramp.png"))

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for offset, key, label in ((-0.2, "p50", "p50"), (0.2, "p99", "p99")):
        axes[0].bar(
            [x + offset for x in xs],
            [r["disconnect_stop_ms"].get(key) or 0 for r in rows],
            0.4,
            label=f"disconnect -> stopped {label}",
        )
    axes[0].set_xticks(list(xs), [r["server"] for r in rows], rotation=20, fontsize=8)
    axes[0].set_ylabel("milliseconds")
    axes[0].set_title("cancel latency (client disconnect -> generator stopped)")
    axes[0].legend(fontsize=8)
    bars = (
        (-0.27, "isolation_alone_itl_ms", "alone"),
        (0.0, "isolation_fill_itl_ms", "stalled consumers filling"),
        (0.27, "isolation_stalled_itl_ms", "stalled consumers, steady"),
    )
    for offset, key, label in bars:
        p99s = [max(r[key].get("p99") or 0, 1e-2) for r in rows]  # log scale: floor 0.01 ms
        axes[1].bar([x + offset for x in xs], p99s, 0.27, label=label)
    axes[1].set_yscale("log")
    axes[1].set_xticks(list(xs), [r["server"] for r in rows], rotation=20, fontsize=8)
    axes[1].set_ylabel("healthy streams' added inter-token p99 (ms)")
    axes[1].set_title("slow-consumer isolation")
    axes[1].legend(fontsize=8)
    paths.append(_save(fig, out / "control.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write(results: dict[str, Any], out: Path) -> None:
    """Write results.json, results.md and the PNG plots into ``out``."""
    results["summary"] = summarize(results)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(markdown(results))
    plots(results, out)


def hot_spots(raw: Path, title: str, top: int = 25) -> str:
    """A Markdown summary of py-spy's collapsed stacks (``frame;frame;... count`` lines): the
    functions with the most samples on top of the stack (self) and in the stack (inclusive),
    as percentages of all samples. py-spy records busy samples only (no --idle), so these are
    shares of the time the server was running Python."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + samples
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + samples
    lines = [f"# py-spy hot spots: {title}", "", f"{total} samples.", ""]
    for label, table in (("self", own), ("inclusive", inclusive)):
        lines += [f"| {label} % | function (file:line) |", "|---|---|"]
        ranked = sorted(table.items(), key=lambda item: -item[1])
        if label == "inclusive":  # the outer frames (uvicorn's main, the loop) are ~100 %
            ranked = [item for item in ranked if item[1] < 0.95 * total]
        for frame, samples in ranked[:top]:
            lines.append(f"| {100 * samples / max(total, 1):.1f} | `{frame}` |")
        lines.append("")
    return "\n".join(lines)
