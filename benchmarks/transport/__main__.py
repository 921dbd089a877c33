"""``python -m transport`` (with benchmarks/ on the path), or ``tokenwire bench``: run the
transport benchmark and write its results folder, outside the source tree unless ``--out``
says otherwise (:func:`default_out`); or, with ``--report-only``, re-render a results.json's
tables and plots. ``--help`` lists the options."""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from transport.harness import OPTIONS, PROFILES, SERVERS, run
from transport.report import _num, render, summary_row, tables

RESUME_LOG_HELP = (
    "the resume phase's stream log (default: memory); redis: two tokenwire processes share a "
    "redis-server of the run's own, resumes go to either, and the phase reports Redis "
    "commands per token (needs redis-server and pip install -e '.[redis]')"
)
CANCEL_STALL_HELP = (
    "the cancel phase also drops tokenwire streams whose first token is still far off "
    "(after stream.start): how soon a stalled provider is stopped"
)


def results_home(environ: Mapping[str, str] = os.environ) -> Path:
    """Where runs go by default: ``$XDG_DATA_HOME/tokenwire/bench`` (``~/.local/share`` when
    XDG_DATA_HOME is unset or empty), a user's data folder, outside any source checkout."""
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tokenwire" / "bench"


def default_out(
    profile: str, now: datetime.datetime, environ: Mapping[str, str] = os.environ
) -> Path:
    """A new run's folder: ``<results_home>/<profile>-<UTC time, 20261121T173653Z>``."""
    stamp = now.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return results_home(environ) / f"{profile}-{stamp}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tokenwire bench",
        description="SSE vs WebSocket vs the common baselines: latency, CPU per token, "
        "concurrency, memory, throughput. Writes results.json, results.md and PNG plots to "
        f"{results_home()}/<profile>-<UTC time> ($XDG_DATA_HOME/tokenwire/bench; --out to "
        "choose) and prints the tables with each target's pass/fail.",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="default")
    parser.add_argument(
        "--quick", action="store_const", const="quick", dest="profile",
        help="the quick profile (under 2 minutes on 2 cores)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=None,
        help="results folder (default: $XDG_DATA_HOME/tokenwire/bench/<profile>-<UTC time>, "
        "outside the source tree); with --report-only: where to write (default: beside "
        "the results.json)",
    )  # fmt: skip
    parser.add_argument(
        "--report-only", type=Path, default=None, metavar="RESULTS",
        help="run nothing: re-render results.md, the plots and the tables from RESULTS "
        "(a results.json, or the folder holding it)",
    )  # fmt: skip
    parser.add_argument(
        "--servers", default=None,
        help=f"comma-separated subset of: {', '.join(s.name for s in SERVERS)}",
    )  # fmt: skip
    parser.add_argument(
        "--tokenwire-env", action="append", default=[], metavar="KEY=VALUE",
        help="a TOKENWIRE_* setting for the tokenwire server (repeatable), "
        "e.g. TOKENWIRE_OVERFLOW=coalesce",
    )  # fmt: skip
    parser.add_argument(
        "--py-spy", action="store_true",
        help="profile each server with py-spy during the latency window "
        "(writes profiles/<server>.txt and .md; needs pip install py-spy)",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N",
        help="run every phase N times, the servers taking turns, and report medians "
        "(each ratio: the median of its N same-round values); N x the run time",
    )  # fmt: skip
    phase_names = [spec["name"] for spec in PROFILES["default"].phases()]
    parser.add_argument(
        "--phases", default=None,
        help=f"comma-separated subset of the phases: {', '.join(phase_names)}",
    )  # fmt: skip
    extra = parser.add_argument_group("beyond the profile (off by default)")
    extra.add_argument("--resume-log", choices=("memory", "redis"), help=RESUME_LOG_HELP)
    extra.add_argument("--cancel-stall", action="store_true", help=CANCEL_STALL_HELP)
    parser.set_defaults(**OPTIONS)
    args = parser.parse_args(argv)
    if args.phases is not None:
        args.phases = frozenset(name.strip() for name in args.phases.split(",") if name.strip())
        unknown = sorted(args.phases - set(phase_names))
        if unknown or not args.phases:
            parser.error(f"--phases: unknown {unknown}; choose from {phase_names}")
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    names = {s.name for s in SERVERS}
    if args.servers is not None:
        args.servers = [name.strip() for name in args.servers.split(",") if name.strip()]
        unknown = sorted(set(args.servers) - names)
        if unknown or not args.servers:
            parser.error(f"--servers: unknown {unknown}; choose from {sorted(names)}")
    env = {}
    for item in args.tokenwire_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("TOKENWIRE_"):
            parser.error(f"--tokenwire-env wants TOKENWIRE_NAME=VALUE, got {item!r}")
        env[key] = value
    args.tokenwire_env = env
    return args


def option_lines(results: dict[str, Any]) -> list[str]:
    """What ``--resume-log redis`` and ``--cancel-stall`` measured, a line per server (first
    round)."""
    lines = []
    for name, server in results["servers"].items():
        resume = server["phases"].get("resume") or {}
        if "redis_commands_per_token" in resume:
            per_token = resume["redis_commands_per_token"]
            gaps = resume["gap_ms_by_server"]
            lines.append(
                f"{name}: redis stream log, {resume['redis_commands']} Redis commands for "
                f"{resume['tokens_delivered']} tokens ({_num(per_token, 3)} per token); resume "
                f"gap p50 same server {_num(gaps['same']['p50'])} ms, other "
                f"{_num(gaps['other']['p50'])} ms"
            )
        stall = (server["phases"].get("cancel") or {}).get("stall")
        if stall:
            lines.append(
                f"{name}: stalled first token, disconnect -> stopped p50 "
                f"{_num(stall['stop_ms']['p50'])} / p99 {_num(stall['stop_ms']['p99'])} ms, "
                f"not stopped {stall['not_stopped']}"
            )
    return lines


def missing_packages() -> list[str]:
    """The bench extra's packages that cannot be imported."""
    missing = []
    for module, package in (("sse_starlette", "sse-starlette"), ("psutil", "psutil"),
                            ("matplotlib", "matplotlib"), ("uvloop", "uvloop"),
                            ("httptools", "httptools"),
                            ("fastapi.sse", "fastapi>=0.135")):  # fmt: skip
        if importlib.util.find_spec(module) is None:
            missing.append(package)
    return missing


def print_report(console: Console, results: dict[str, Any], out: Path) -> None:
    """The tables (each with its title; the targets with pass/fail), whether the load generator
    stayed cheaper per token than every server, the options' lines, and where the results
    are."""
    for table in tables(results):
        console.print(table)
    shares = {}  # the load generator's CPU per token over the server's
    for name, server in results["servers"].items():
        r = summary_row(name, server)
        server_cpu, client_cpu = r["server_cpu_us_per_token"], r["client_cpu_us_per_token"]
        if server_cpu and client_cpu:
            shares[name] = client_cpu / server_cpu
    if shares:
        costly = [name for name, share in shares.items() if share >= 1]
        spread = (
            f"client/server CPU per token {min(shares.values()):.2f} to {max(shares.values()):.2f}"
        )
        if costly:
            console.print(
                f"[bold red]CLIENT IS THE BOTTLENECK[/] for {', '.join(costly)} ({spread})"
            )
        else:
            console.print(f"load generator cheaper per token than every server ({spread}): ok")
    for line in option_lines(results):
        console.print(line)
    console.print(f"results: {out}", soft_wrap=True)


def report_only(source: Path, out: Path | None, console: Console) -> int:
    """Re-render results.md and the plots of the run in ``source`` (its results.json or its
    folder) into ``out`` (default: that folder), print its report; 2 if there is none."""
    path = source / "results.json" if source.is_dir() else source
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"tokenwire bench --report-only: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    out = out or path.parent
    render(results, out)
    print_report(console, results, out)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    console = Console()
    if args.report_only is not None:
        return report_only(args.report_only, args.out, console)
    if missing := missing_packages():
        print(
            f"tokenwire bench needs {', '.join(missing)}: pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2
    out = args.out or default_out(args.profile, datetime.datetime.now(datetime.UTC))
    command = shlex.join(["tokenwire", "bench", *argv])
    results = run(
        args.profile,
        out,
        args.servers,
        args.tokenwire_env,
        console,
        command,
        args.py_spy,
        args.repeat,
        args.phases,
        {"resume_log": args.resume_log, "cancel_stall": args.cancel_stall},
    )
    print_report(console, results, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
