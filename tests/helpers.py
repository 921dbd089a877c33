"""Test helpers (conftest.py holds only fixtures): the app in-process (httpx ASGI transport +
httpx-ws) and under a real uvicorn on a free loopback port, ``tokenwire serve`` processes, a
real redis-server, and event builders."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from httpx_ws.transport import ASGIWebSocketTransport
from starlette.applications import Starlette

from tokenwire.app import create_app
from tokenwire.protocol.events import FinishReason, StreamEnd, TextDelta
from tokenwire.providers.base import Provider
from tokenwire.providers.scripted import Script, ScriptedProvider
from tokenwire.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scripted_app(
    script: Script | None = None, **settings: Any
) -> tuple[Starlette, ScriptedProvider]:
    provider = ScriptedProvider(script or Script(tokens=12))
    return create_app(Settings(provider="scripted", **settings), provider=provider), provider


@contextlib.asynccontextmanager
async def asgi_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client wired to ``app`` in-process, with the app's lifespan running."""
    async with app.router.lifespan_context(app):
        transport = ASGIWebSocketTransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield client


class UvicornThread:
    """A real uvicorn server on a free loopback port, in a thread with its own event loop."""

    def __init__(self, app: Starlette, **config: Any) -> None:
        self.port = free_port()
        # A bounded graceful shutdown, as in production: uvicorn otherwise waits forever for a
        # connection whose peer vanished while the server's writes were paused.
        config.setdefault("timeout_graceful_shutdown", 5)
        self.config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", **config
        )
        self.server = uvicorn.Server(self.config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())
        # After a forced (timed-out) shutdown, close what uvicorn left open.
        for connection in list(self.server.server_state.connections):
            connection.transport.abort()
        self.loop.run_until_complete(asyncio.sleep(0.01))

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` on the server's event loop thread and return its result."""

        async def in_loop() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(in_loop(), self.loop).result(timeout=10)

    def task_count(self) -> int:
        """Tasks alive on the server's loop, not counting the one that counts them."""
        return self.call(lambda: len(asyncio.all_tasks()) - 1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        if not self.thread.is_alive():
            self.loop.close()


@contextlib.contextmanager
def serve(app: Starlette, **config: Any) -> Iterator[UvicornThread]:
    with UvicornThread(app, **config) as server:
        yield server


async def wait_for(predicate: Any, within: float = 5.0) -> None:
    """Poll ``predicate()`` until true. Raises AssertionError after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def provider_of(app: Starlette) -> Provider:
    provider: Provider = app.state.tokenwire.provider
    return provider


class RedisServer:
    """A real ``redis-server`` of the test's own on a free loopback port, with no persistence;
    it can be killed and started again on the same port (Redis faults)."""

    def __init__(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:  # `make test` installs it; a bare pytest run must say so
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.executable = executable
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def command(self, *args: str) -> bytes:
        """Send one command; return the raw reply (enough for FLUSHALL, INFO, DBSIZE)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            parts = [f"*{len(args)}\r\n".encode()]
            for arg in args:
                parts.append(f"${len(arg.encode())}\r\n{arg}\r\n".encode())
            sock.sendall(b"".join(parts))
            time.sleep(0.05)
            return sock.recv(1 << 20)


class ServerProcess:
    """``tokenwire serve`` in a process of its own on a free loopback port, configured by
    ``TOKENWIRE_*`` variables; its log goes to a file that the test can read."""

    def __init__(
        self,
        tmp_path: Any,
        name: str,
        *,
        port: int | None = None,
        cwd: Any = None,
        **settings: Any,
    ) -> None:
        """``settings`` become ``TOKENWIRE_<NAME>`` variables (``provider="mod:fn"`` serves a
        module found in ``cwd``, the process's working directory, as ``tokenwire serve`` puts
        it on ``sys.path``)."""
        self.port = port or free_port()  # a fixed port: a restart behind the same address
        self.cwd = cwd
        self.log_path = tmp_path / f"{name}.log"
        self.env = {**os.environ, **{f"TOKENWIRE_{k.upper()}": str(v) for k, v in settings.items()}}
        self.env.update(TOKENWIRE_PORT=str(self.port), TOKENWIRE_HOST="127.0.0.1")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tokenwire.cli", "serve"],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches its workers
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        """Kill the server and its workers (``--workers N`` forks them; a killed parent would
        leave them serving on its port)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextlib.contextmanager
def two_workers(
    tmp_path: Any, redis_url: str, **settings: Any
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two ``tokenwire serve`` processes, ``a`` and ``b``, on one Redis stream log (and
    ``settings``), stopped on exit."""
    settings = {"stream_log": redis_url, **settings}
    a = ServerProcess(tmp_path, "a", **settings).start()
    try:
        b = ServerProcess(tmp_path, "b", **settings).start()
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


LOG_BOUNDS = {"max_events": 100, "max_bytes": 1 << 20, "ttl": 60.0}
"""Small bounds for stream logs built by tests."""


def delta(seq: int, text: str = "x", stream_id: str = "s") -> TextDelta:
    return TextDelta(stream_id=stream_id, seq=seq, delta=text)


def end(seq: int, stream_id: str = "s") -> StreamEnd:
    return StreamEnd(stream_id=stream_id, seq=seq, finish_reason=FinishReason.STOP, usage=None)
