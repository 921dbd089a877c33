"""The server process's life around the app: the SIGTERM drain, the garbage collector's
tuning, and the short path that a stream's frames take to the ASGI server.

**Drain on SIGTERM** (:func:`drain_on_sigterm`): SIGTERM starts a drain (see
:meth:`~tokenwire.streams.registry.StreamRegistry.drain`) before the server's own handler
(uvicorn's) begins its shutdown: with a shared log the running generations outlive their
connections; with a log no other process can serve, the server's shutdown waits until they
have ended (up to the drain timeout), serving them meanwhile.

**GC** (:func:`gc_young_threshold`): Python's young-generation threshold while the app runs
(``TOKENWIRE_GC_YOUNG_THRESHOLD``, off by default), put back at shutdown.

**The send path** (:class:`ServerSendApp`, :func:`server_send`, :func:`with_request_id`):
Starlette wraps ``send`` three times on the way to a route (its error and exception middleware
and the route itself), and each wrapper only watches for ``http.response.start``, to know that
a response has begun; so do tokenwire's own (``X-Request-Id``, CORS). A response's start still
goes through them; its body frames, a coroutine frame per wrapper under every token, need not.
So the app keeps the ASGI server's own ``send`` in the scope before any middleware wraps it
(:class:`ServerSendApp`), the transports write their frames there (:func:`server_send`), and
tokenwire's own wrapper of the start (:func:`with_request_id`) returns ``send``'s awaitable
with no frame of its own. Middleware wrapped around tokenwire's app from outside still sees
every frame: what the app keeps is the ``send`` it was given.

**Mounted in another app** (:func:`lifespan`, :func:`route_path`): Starlette and FastAPI run
only the outermost app's lifespan, never a mounted app's, so a host app enters tokenwire's in
its own; inside a mount, ``scope["path"]`` still holds the mount path (``root_path``), which
:func:`route_path` takes off.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from types import FrameType

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Message, Receive, Scope, Send

SERVER_SEND = "tokenwire.server_send"
"""The scope key under which :class:`ServerSendApp` keeps the ASGI server's own ``send``."""


class ServerSendApp(Starlette):
    """Starlette that keeps the ASGI server's own ``send`` in the scope (see the module
    docstring)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[SERVER_SEND] = send
        await super().__call__(scope, receive, send)


def server_send(scope: Scope, send: Send) -> Send:
    """Where a stream's frames go: the ASGI server's own ``send`` when the app kept it in the
    scope, else ``send``."""
    send_: Send = scope.get(SERVER_SEND, send)
    return send_


def with_request_id(send: Send, request_id: str) -> Send:
    """``send`` that adds ``X-Request-Id`` to the response's start. A plain function that
    returns ``send``'s awaitable, with no coroutine frame of its own under each write."""

    def wrapped(message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers.append((b"x-request-id", request_id.encode()))
            message = {**message, "headers": headers}
        return send(message)

    return wrapped


def drain_on_sigterm(drain: Callable[[], Awaitable[None]]) -> None:
    """Make SIGTERM run ``drain()`` on the running loop, then, once it returns, the previous
    handler (uvicorn's, which starts the server's shutdown). A second SIGTERM calls the
    previous handler at once. Only possible in the main thread (a server run by ``tokenwire
    serve`` or uvicorn; elsewhere nothing happens); uvicorn restores the previous handler when
    it exits."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)
    tasks: set[asyncio.Task[None]] = set()

    async def drain_then_exit(signum: int, frame: FrameType | None) -> None:
        try:
            await drain()
        finally:
            if callable(previous):
                previous(signum, frame)

    def start(signum: int, frame: FrameType | None) -> None:
        task = loop.create_task(drain_then_exit(signum, frame))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if tasks and callable(previous):
            previous(signum, frame)  # asked again: stop waiting
            return
        loop.call_soon_threadsafe(start, signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


@contextmanager
def gc_young_threshold(threshold: int | None) -> Iterator[None]:
    """Run with Python's young-generation GC threshold (threshold0 of :func:`gc.set_threshold`)
    set to ``threshold`` (``None``: leave it), and put the previous thresholds back after.

    Each young collection promotes what is alive at that moment (a stream's pending sleep,
    in-flight writes) towards the old generation, whose full collections stop every stream
    for ~0.1 s at 1000 open streams; fewer young collections promote fewer of them."""
    if threshold is None:
        yield
        return
    previous = gc.get_threshold()
    gc.set_threshold(threshold, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def route_path(scope: Scope) -> str:
    """The request's path inside the app: ``scope["path"]`` without the mount path
    (``scope["root_path"]``) that a host app or a proxy put in front (``/llm/healthz`` mounted at
    ``/llm`` -> ``/healthz``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


def _tokenwire_apps(app: object, depth: int = 0) -> list[Starlette]:
    if isinstance(app, Starlette) and hasattr(app.state, "tokenwire"):
        return [app]
    found: list[Starlette] = []
    if depth < 8:
        for route in getattr(app, "routes", ()):
            if isinstance(route, Mount):
                found.extend(_tokenwire_apps(route.app, depth + 1))
    return found


@asynccontextmanager
async def lifespan(app: object) -> AsyncIterator[None]:
    """Run the lifespan of a tokenwire app that another app mounts (``async with``): the stream
    log and the provider start on entry and, on exit, the live generations are cancelled and the
    provider and the log closed, as when tokenwire runs on its own.

    ``app`` is the host app (Starlette or FastAPI; every tokenwire app mounted in it, at any
    depth of ``Mount``, is entered in route order and left in reverse) or the tokenwire app
    itself. Use it in the host's lifespan::

        llm = create_app(provider=generate)

        @asynccontextmanager
        async def host_lifespan(host: FastAPI) -> AsyncIterator[None]:
            async with tokenwire.lifespan(host):
                yield

        host = FastAPI(lifespan=host_lifespan)
        host.mount("/llm", llm)

    Raises:
        ValueError: ``app`` is no tokenwire app and mounts none.
        Whatever a tokenwire app's startup raises (e.g. ``StreamLogUnavailable``); the apps
        already started are stopped first.
    """
    apps = _tokenwire_apps(app)
    if not apps:
        raise ValueError(
            f"no tokenwire app in {type(app).__qualname__}: mount one first "
            "(host.mount('/llm', tokenwire.create_app(...))) or pass the tokenwire app itself"
        )
    async with AsyncExitStack() as stack:
        for tokenwire_app in apps:
            await stack.enter_async_context(tokenwire_app.router.lifespan_context(tokenwire_app))
        yield
