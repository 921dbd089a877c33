"""The toolkit every benchmark shares: free ports, child processes, the raw wire, statistics.

- :func:`free_port`, :func:`launched` (a child process with its log, waited for until it is
  ready, stopped on exit), :func:`http_ready` and :func:`tokenwire_server` (``python -m uvicorn``
  on a free port, ready when ``GET /healthz`` answers 200), :func:`redis_server` (a
  ``redis-server`` of the benchmark's own, no persistence), :func:`redis_command_calls` and
  :func:`redis_traffic` (its commands by name and its network bytes).
- The client side of the wire, as bytes with no I/O: :func:`ws_frame` (a masked client frame),
  :func:`ws_key` and :func:`ws_accept` (the upgrade's key and the answer it expects).
- Statistics: :func:`percentile` (lists of floats, NaN without samples), :func:`quantiles`,
  :func:`summary` (count, p50/p99/p99.9/max in milliseconds from seconds), :func:`cdf`,
  :func:`slope`.

Benchmarks import it as ``common`` (benchmarks/ is on the path of a script in it, and of
``tokenwire bench``'s processes).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent

# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (another process may take it before it is bound)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[bytes], *, grace: float = 5.0) -> None:
    """SIGINT (uvicorn's and redis-server's graceful exit), then SIGKILL after ``grace`` s."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def launched(
    command: Sequence[str],
    log: Path,
    ready: Callable[[], bool],
    *,
    env: dict[str, str] | None = None,
    within: float = 60.0,
    grace: float = 5.0,
    name: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (output appended to ``log``) until ``ready()`` is true, and yield the
    process; stop it on exit (:func:`stop`, ``grace`` seconds). Raises RuntimeError, naming
    ``name`` (default: the program) and the log, if the process exits or is not ready within
    ``within`` seconds; the process is stopped then too."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        process = subprocess.Popen(list(command), env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + within
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name or command[0]} did not start; see {log}")
            time.sleep(0.05)
        yield process
    finally:
        stop(process, grace=grace)


def http_ready(port: int, path: str = "/healthz") -> Callable[[], bool]:
    """A :func:`launched` ``ready`` check: ``GET path`` on 127.0.0.1:``port`` answers 200."""
    import httpx

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


@contextlib.contextmanager
def tokenwire_server(
    log: Path,
    env: dict[str, str],
    *,
    factory: str = "tokenwire.app:create_app_from_env",
    flags: Sequence[str] = ("--log-level", "warning", "--no-access-log"),
    within: float = 60.0,
    name: str = "tokenwire",
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m uvicorn --factory <factory>`` on a free loopback port, with this
    environment plus ``env`` (benchmarks/ importable); yields (process, port) once ``GET
    /healthz`` answers. A start that fails is tried twice more (a port taken meanwhile)."""
    full_env = {**child_env(), **env}
    with contextlib.ExitStack() as stack:
        for attempt in range(3):
            port = free_port()
            command = [sys.executable, "-m", "uvicorn", "--factory", factory]
            command += ["--host", "127.0.0.1", "--port", str(port), *flags]
            try:
                server = launched(
                    command, log, http_ready(port), env=full_env, within=within, name=name
                )
                process = stack.enter_context(server)
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        yield process, port


def child_env() -> dict[str, str]:
    """This environment, with benchmarks/ importable (``common``, ``transport``)."""
    path = os.pathsep.join(p for p in (str(BENCHMARKS_DIR), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def redis_ping(port: int) -> bool:
    """Whether a redis-server answers PING on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(log: Path) -> Iterator[int]:
    """A ``redis-server`` of this benchmark's own on a free loopback port, no persistence;
    yields its port. Raises RuntimeError when redis-server is not installed."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--protected-mode", "no"]
    with launched(command, log, lambda: redis_ping(port), within=10):
        yield port


def command_calls(commandstats: bytes) -> int:
    """The commands counted in an ``INFO commandstats`` answer, ``info`` itself left out
    (lines ``cmdstat_<name>:calls=<n>,usec=...``)."""
    return sum(command_counts(commandstats).values())


def command_counts(commandstats: bytes) -> dict[str, int]:
    """Calls per command in an ``INFO commandstats`` answer (``xadd``: 12, ...), ``info``
    itself left out."""
    counts = {}
    for line in commandstats.decode().splitlines():
        name, _, fields = line.partition(":")
        if name.startswith("cmdstat_") and name != "cmdstat_info":
            counts[name.removeprefix("cmdstat_")] = int(
                fields.split(",", 1)[0].removeprefix("calls=")
            )
    return counts


def command_usec(commandstats: bytes) -> int:
    """Microseconds Redis spent running commands, by an ``INFO commandstats`` answer (its
    ``usec`` fields; ``info`` left out): the server's own CPU for them."""
    total = 0
    for line in commandstats.decode().splitlines():
        name, _, fields = line.partition(":")
        if name.startswith("cmdstat_") and name != "cmdstat_info":
            total += int(dict(f.split("=", 1) for f in fields.split(","))["usec"])
    return total


def info_fields(info: bytes) -> dict[str, str]:
    """The ``name:value`` lines of an ``INFO`` answer."""
    fields = {}
    for line in info.decode().splitlines():
        name, sep, value = line.partition(":")
        if sep and not name.startswith("#"):
            fields[name] = value.strip()
    return fields


async def redis_info(port: int, section: str) -> bytes:
    """``INFO <section>`` of the redis-server on 127.0.0.1:``port`` (a raw connection, no
    handshake: the only command it sends is this one, which :func:`command_calls` leaves
    out)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        name = section.encode()
        writer.write(b"*2\r\n$4\r\nINFO\r\n$%d\r\n%b\r\n" % (len(name), name))
        head = await reader.readline()  # $<length>\r\n
        if not head.startswith(b"$"):
            raise ValueError(f"INFO {section}: {head!r}")
        return await reader.readexactly(int(head[1:]) + 2)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def redis_command_calls(port: int) -> int:
    """Commands the redis-server on 127.0.0.1:``port`` has run so far (:func:`command_calls`);
    this query itself is not counted."""
    return command_calls(await redis_info(port, "commandstats"))


async def redis_traffic(port: int) -> dict[str, int]:
    """What the redis-server on 127.0.0.1:``port`` has done so far: its commands by name
    (``cmd:xadd``, ...; ``commands``: all of them, ``info`` left out), the microseconds it
    spent running them (``command_usec``) and the bytes it
    received and sent over the network (``net_input_bytes``, ``net_output_bytes``,
    including the ``INFO`` queries' own few hundred bytes)."""
    commandstats = await redis_info(port, "commandstats")
    counts = command_counts(commandstats)
    stats = info_fields(await redis_info(port, "stats"))
    return {
        "commands": sum(counts.values()),
        "command_usec": command_usec(commandstats),
        **{f"cmd:{name}": calls for name, calls in counts.items()},
        "net_input_bytes": int(stats["total_net_input_bytes"]),
        "net_output_bytes": int(stats["total_net_output_bytes"]),
    }


# -- the raw wire (RFC 6455) ----------------------------------------------------------------

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3


def ws_key() -> bytes:
    """A fresh ``Sec-WebSocket-Key``."""
    return base64.b64encode(os.urandom(16))


def ws_accept(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


def ws_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final, masked client frame (RFC 6455, sections 5.2 and 5.3); ``mask``: 4 bytes,
    random if None."""
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8)
    mask = os.urandom(4) if mask is None else mask
    key = int.from_bytes((mask * (size // 4 + 1))[:size])
    return head + mask + (int.from_bytes(payload) ^ key).to_bytes(size)


# -- statistics -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks;
    NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def quantiles(values: array[float], qs: list[float]) -> list[float]:
    """The ``qs`` (0..1) quantiles of ``values``, as numpy interpolates them."""
    import numpy

    return [float(v) for v in numpy.quantile(numpy.frombuffer(values, dtype="d"), qs)]


def summary(values: array[float]) -> dict[str, float | int | None]:
    """Count and p50/p99/p99.9/max in milliseconds of ``values`` in seconds (None without
    samples)."""
    if not values:
        return {"count": 0, "p50": None, "p99": None, "p999": None, "max": None}
    p50, p99, p999, top = quantiles(values, [0.5, 0.99, 0.999, 1.0])
    return {
        "count": len(values),
        "p50": 1e3 * p50,
        "p99": 1e3 * p99,
        "p999": 1e3 * p999,
        "max": 1e3 * top,
    }


def cdf(values: array[float], points: int = 200) -> list[list[float]]:
    """``[latency_ms, fraction]`` pairs for plotting: evenly spaced quantiles, plus the tail."""
    if not values:
        return []
    qs = sorted({*(i / points for i in range(points + 1)), 0.995, 0.999, 0.9995, 0.9999})
    return [[1e3 * v, q] for v, q in zip(quantiles(values, qs), qs, strict=True)]


def slope(points: list[list[int]]) -> float | None:
    """Least-squares slope of ``[x, y]`` points (None for fewer than two distinct x)."""
    xs = [p[0] for p in points]
    if len(set(xs)) < 2:
        return None
    mean_x = sum(xs) / len(xs)
    mean_y = sum(p[1] for p in points) / len(points)
    num = sum((x - mean_x) * (y - mean_y) for x, y in points)
    den = sum((x - mean_x) ** 2 for x in xs)
    return num / den
