"""Results of a run: ``results.json`` (everything measured), ``results.md`` (the tables, the
targets with pass/fail, the machine), the console's tables (:func:`tables`, rich, each fitting
80 columns) and the PNG plots (:mod:`transport.plots`). :func:`write` writes a finished run;
:func:`render` re-renders results.md and the plots from a results.json
(``tokenwire bench --report-only``).

A run of several rounds (``--repeat``): the table, the bars and the ratios are medians over the
rounds (:func:`summary_row`, :func:`ratios`); the curves (CDFs, ramp, memory) are the first
round's.
"""

from __future__ import annotations

import json
import operator
import statistics
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from transport.plots import PLOTS, save

KIB = 1024

# The targets, as ratios of rows measured in the same run: (label, top row, bottom row(s),
# metric, target as "<op> <bound>", see :func:`met`). A tuple of bottom rows stands for the best
# of them in each round (the highest value: for max streams, the best baseline).
BASELINES = (
    "baseline-streaming",
    "baseline-sse-starlette",
    "baseline-websocket",
    "baseline-fastapi-sse",
)
RATIOS: list[tuple[str, str, str | tuple[str, ...], str, str]] = [
    (
        "server CPU/token: tokenwire-sse / baseline-streaming",
        "tokenwire-sse",
        "baseline-streaming",
        "cpu",
        "<= 1.05",
    ),
    (
        "server CPU/token: tokenwire-ws / baseline-websocket",
        "tokenwire-ws",
        "baseline-websocket",
        "cpu",
        "<= 1.05",
    ),
    (
        "outpace tokens per CPU-s: tokenwire-sse / baseline-streaming",
        "tokenwire-sse",
        "baseline-streaming",
        "outpace",
        ">= 2.0",
    ),
    ("max streams: tokenwire-sse / best baseline", "tokenwire-sse", BASELINES, "streams", ">= 1.0"),
    ("max streams: tokenwire-ws / best baseline", "tokenwire-ws", BASELINES, "streams", ">= 1.0"),
    (
        "idle KiB/conn: tokenwire-sse / baseline-streaming",
        "tokenwire-sse",
        "baseline-streaming",
        "idle",
        "<= 1.15",
    ),
    (
        "idle KiB/conn: tokenwire-ws / baseline-websocket",
        "tokenwire-ws",
        "baseline-websocket",
        "idle",
        "<= 1.15",
    ),
]
METRICS = {
    "cpu": "server_cpu_us_per_token",
    "outpace": "outpace_tokens_per_cpu_s",
    "streams": "max_streams",
    "idle": "idle_kib_per_connection",
}


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
        key = METRICS[metric]
        values = []
        for rows in per_round:
            a = rows.get(top, {}).get(key)
            bottoms = (bottom,) if isinstance(bottom, str) else bottom
            known = [v for name in bottoms if (v := rows.get(name, {}).get(key)) is not None]
            b = max(known) if known else None
            values.append(a / b if a is not None and b else None)
        known = [v for v in values if v is not None]
        value = statistics.median(known) if known else None
        out.append(
            {
                "label": label,
                "target": target,
                "value": value,
                "met": met(value, target),
                "rounds": values,
            }
        )
    return out


COMPARISONS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


def met(value: float | None, target: str) -> bool | None:
    """Whether ``value`` meets ``target`` (``"<= 1.0"``: an operator of :data:`COMPARISONS`,
    a space, a number); None when there is no value (a row of the ratio did not run)."""
    if value is None:
        return None
    op, bound = target.split()
    return bool(COMPARISONS[op](value, float(bound)))


def verdict(ok: bool | None) -> str:
    """The pass/fail mark beside a target: readable without colour (NO_COLOR, Markdown)."""
    return {True: "✓ pass", False: "✗ FAIL", None: "n/a"}[ok]


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
    """results.md: what ran where, the tables, the targets with pass/fail, the warnings."""
    summary = summarize(results)
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
    lines += ["", "| ratio (same run) | target | measured | result |", "|---|---|---|---|"]
    for ratio in summary["ratios"]:
        measured = _num(ratio["value"], 2)
        if len(ratio["rounds"]) > 1:
            measured += f" (rounds: {', '.join(_num(v, 2) for v in ratio['rounds'])})"
        lines.append(
            f"| {ratio['label']} | {ratio['target']} | {measured} | {verdict(ratio['met'])} |"
        )
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


def _table(title: str, *headers: str) -> Table:
    """A console table: no cell wraps (the server's name whole, numbers right-aligned; headers
    break where they say, at a newline); only the title wraps, between words."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    table.add_column(headers[0], no_wrap=True)
    for header in headers[1:]:
        table.add_column(header, justify="right", no_wrap=True)
    return table


def _fit(value: float | None) -> str:
    """Milliseconds for a console cell: 2 decimals under 100, 1 under 1000, then none (at most
    9 characters below 10,000 s)."""
    if value is None:
        return "n/a"
    return _num(value, 2 if abs(value) < 100 else 1 if abs(value) < 1000 else 0)


def _pair(stats: dict[str, Any]) -> str:
    return f"{_fit(stats.get('p50'))} / {_fit(stats.get('p99'))}"


def tables(results: dict[str, Any]) -> list[Table]:
    """The console's view of results.md, split into tables that each fit 80 columns: added
    latency; CPU and capacity; memory; cancel; slow consumers; resume (servers that have it);
    the targets, each with its pass/fail mark (:func:`verdict`)."""
    summary = summarize(results)
    rows = list(summary["rows"].values())
    s = results["settings"]
    latency = _table(
        f"Added latency, ms: time to first token (TTFT) and inter-token (ITL), "
        f"{s['latency_streams']} streams × {s['rate']:g} tokens/s",
        "server", "TTFT\np50", "TTFT\np99", "ITL\np50", "ITL\np99", "ITL\np99.9",
    )  # fmt: skip
    cpu = _table(
        "CPU per delivered token (client: the load generator); max streams: the largest ramp "
        f"step with added ITL p99 < {s['stop_p99_ms']:g} ms; outpace: tokens per server "
        "CPU-second",
        "server", "server CPU\nµs/token", "client CPU\nµs/token", "client\nbusy",
        "max\nstreams", "outpace\ntokens",
    )  # fmt: skip
    memory = _table("Memory, KiB", "server", "per idle\nconnection", "per active\nstream",
                    "per stalled\nconsumer")  # fmt: skip
    cancel = _table(
        "Cancel, ms (p50 / p99)",
        "server", "disconnect\n-> stopped", "cancel\n-> stream.end", "cancel\n-> stopped",
    )  # fmt: skip
    isolation = _table(
        f"Slow consumers: {s.get('isolation_healthy')} healthy streams, "
        f"{s.get('isolation_stalled')} stalled",
        "server", "healthy p99, ms\nalone / fill / steady", "p99 ratio\nfill / steady",
        "fill s",
    )  # fmt: skip
    resume = _table("Resume, ms (p50 / p99)", "server", "gap", "added gap", "lost / duplicated")
    for r in rows:
        name = r["server"]
        itl = r["itl_ms"]
        latency.add_row(
            name, _fit(r["ttft_ms"].get("p50")), _fit(r["ttft_ms"].get("p99")),
            _fit(itl.get("p50")), _fit(itl.get("p99")), _fit(itl.get("p999")),
        )  # fmt: skip
        busy = r["client_busy"]
        cpu.add_row(
            name, _num(r["server_cpu_us_per_token"]), _num(r["client_cpu_us_per_token"]),
            "n/a" if busy is None else f"{100 * busy:.0f} %",
            "n/a" if r["max_streams"] is None else str(r["max_streams"]),
            _num(r["outpace_tokens_per_cpu_s"], 0),
        )  # fmt: skip
        memory.add_row(
            name, _num(r["idle_kib_per_connection"]), _num(r["active_kib_per_connection"]),
            _num(r["isolation_kib_per_stalled"]),
        )  # fmt: skip
        cancel.add_row(
            name, _pair(r["disconnect_stop_ms"]), _pair(r["cancel_end_ms"]),
            _pair(r["cancel_stop_ms"]),
        )  # fmt: skip
        p99s = (r[f"isolation_{k}_itl_ms"].get("p99") for k in ("alone", "fill", "stalled"))
        isolation.add_row(
            name, " / ".join(_fit(p99) for p99 in p99s),
            f"{_num(r['isolation_fill_p99_ratio'], 2)} / {_num(r['isolation_p99_ratio'], 2)}",
            _num(r["isolation_fill_s"], 2),
        )  # fmt: skip
        if r["resume_lost_tokens"] is not None:
            resume.add_row(
                name, _pair(r["resume_gap_ms"]), _pair(r["resume_added_gap_ms"]),
                f"{r['resume_lost_tokens']} / {r['resume_duplicated_tokens']}",
            )  # fmt: skip
    repeat = results.get("repeat", 1)
    targets = Table(
        title="Targets (ratios of two rows of the same run"
        + (f"; median of {repeat} rounds)" if repeat > 1 else ")"),
        box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False,
    )  # fmt: skip
    targets.add_column("ratio of", overflow="fold")  # words wrap; the rest stays whole
    targets.add_column("rows", no_wrap=True)
    targets.add_column("target", no_wrap=True)
    targets.add_column("measured", justify="right", no_wrap=True)
    targets.add_column("result", no_wrap=True)
    for ratio in summary["ratios"]:
        style = {True: "green", False: "bold red", None: "dim"}[ratio["met"]]
        measured = _num(ratio["value"], 2)
        metric, _, pair = ratio["label"].rpartition(": ")
        targets.add_row(
            metric, pair, ratio["target"], measured, f"[{style}]{verdict(ratio['met'])}[/]"
        )
    chosen = [latency, cpu, memory]
    if "cancels" in s:  # results from before the cancel, isolation and resume phases have none
        chosen += [cancel, isolation]
    if resume.row_count:
        chosen.append(resume)
    return [*chosen, targets]


def render(results: dict[str, Any], out: Path) -> list[Path]:
    """Write results.md and the PNG plots into ``out`` from ``results`` (a finished run's, or
    one read back from its results.json); return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown(results))
    return [out / "results.md", *save(results, summarize(results)["rows"], out)]


def write(results: dict[str, Any], out: Path) -> None:
    """Write results.json, results.md and the PNG plots into ``out``."""
    results["summary"] = summarize(results)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    render(results, out)


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
