"""Shared fixtures: the app in-process (httpx ASGI transport + httpx-ws) and under a real
uvicorn on a free loopback port, and the contract suite's ``transport`` parameter."""

from __future__ import annotations

import asyncio
import contextlib
import socket
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
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
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


@pytest.fixture(params=["sse", "websocket"])
def transport(request: pytest.FixtureRequest) -> str:
    """The contract suite runs once per transport."""
    return str(request.param)


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
