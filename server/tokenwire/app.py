"""``create_app(settings) -> Starlette``: the route table and the wiring, nothing else.

Data flows one way: provider -> Generation -> StreamLog -> Subscription -> pump -> Transport
-> codec -> wire (``providers/``, ``streams/``, ``transports/``, ``protocol/``); the edge
(``edge/``: auth, limits, ownership, metrics, the error writer) stands beside it, wraps every
route as middleware, and watches the core through its observer interfaces. The handlers are in
:mod:`tokenwire.routes`; the process's life (drain, GC, the ASGI send path) in
:mod:`tokenwire.lifecycle`.

Routes (wire protocol v1, see README):
    POST /v1/streams                    SSE of one new stream; with Accept: application/json,
                                        201 {stream_id, events_url} and the stream runs detached
    GET  /v1/streams/{stream_id}/events SSE attach or resume (Last-Event-ID / last_event_id)
    POST /v1/streams/{stream_id}/cancel 202 {stream_id, status}
    GET  /v1/ws                         WebSocket: generate / cancel / resume / ping, multiplexed
    POST /v1/chat/completions           OpenAI-compatible, streamed or not
    GET  /v1/models                     OpenAI-compatible model list
    POST /v1/responses                  OpenAI Responses: streamed, not, or in the background
    GET  /v1/responses/{response_id}    the Response object; ?stream=true&starting_after=N
    POST /v1/responses/{response_id}/cancel
    GET  /v1/responses                  WebSocket mode (response.create), see routes_responses
    POST /api/chat                      the AI SDK's useChat: a UI message stream (SSE)
    GET  /api/chat/{chat_id}/stream     resume the chat's active stream (204: none)
    POST /api/chat/{chat_id}/stop       cancel it on whichever worker runs it; see routes_aisdk
    GET  /api/chat/ws                   the AI SDK's WebSocketChatTransport, see routes_aisdk_ws
    GET  /healthz                       liveness and live stream count (never behind auth)
    GET  /                              the demo chat page (and /web/* its files; see web.py)
    GET  /aisdk                         the demo page on the AI SDK's own chat transports
    POST /v1/tokens                     201 {token, expires_at, expires_in}: a short-lived token
    GET  /metrics                       Prometheus metrics (settings.metrics)

Errors are JSON, never tracebacks (:mod:`tokenwire.edge.responses`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route, WebSocketRoute

from tokenwire.edge.responses import http_exception, internal_error
from tokenwire.lifecycle import ServerSendApp, drain_on_sigterm, gc_young_threshold
from tokenwire.logs import configure_logging, install_log_filters
from tokenwire.providers import ProviderSpec, as_provider, create_provider
from tokenwire.routes import TokenwireApp
from tokenwire.routes_aisdk import ChatRoutes
from tokenwire.routes_aisdk_ws import ChatSocketRoute
from tokenwire.routes_responses import ResponsesRoutes
from tokenwire.settings import Settings
from tokenwire.streams.log import create_stream_log
from tokenwire.web import web_routes


def create_app(
    settings: Settings | None = None, *, provider: ProviderSpec | None = None
) -> Starlette:
    """Build the ASGI app: tokenwire as a library.

    Args:
        settings: default ``Settings()``, i.e. from the ``TOKENWIRE_*`` environment.
        provider: the model code to serve, instead of the one ``settings.provider`` names: a
            :class:`~tokenwire.providers.Provider` instance, a ``Provider`` subclass (built
            with ``from_settings(settings)``), or an async generator function
            ``(params: GenerateParams) -> AsyncIterator[str | ProviderEvent]`` (wrapped in a
            :class:`~tokenwire.providers.FunctionProvider`: closing a stream closes the
            generator, an exception becomes a ``provider_error``, usage is counted).

    Raises:
        ProviderLoadError: ``provider`` (or ``settings.provider``) is not a provider.

    The stream log and the provider are started in the app's lifespan (the local model is
    loaded then, in a worker thread; Redis must answer, else startup fails with
    :class:`~tokenwire.streams.log.StreamLogUnavailable`). At shutdown the live generations get
    the drain timeout to finish (when draining), are cancelled, and the provider and the log are
    closed. Mounted in another app (``host.mount("/llm", app)``), its lifespan is not run by the
    host: enter :func:`tokenwire.lifespan` in the host's own lifespan. Every URL it returns
    (``events_url``, ``Location``) and the demo page's calls carry the mount path.
    """
    settings = settings or Settings()
    backend = create_provider(settings) if provider is None else as_provider(provider, settings)
    stream_log = create_stream_log(settings)
    state = TokenwireApp(settings, backend, stream_log)
    responses = ResponsesRoutes(state)
    chats = ChatRoutes(state)
    chat_socket = ChatSocketRoute(chats)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await stream_log.start()
        drain_on_sigterm(state.drain)
        try:
            async with backend:
                with gc_young_threshold(settings.gc_young_threshold):
                    try:
                        yield
                    finally:
                        await state.registry.aclose()
        finally:
            await stream_log.aclose()

    routes = [
        Route("/v1/streams", state.create_stream, methods=["POST"]),
        Route(
            "/v1/streams/{stream_id}/events",
            state.stream_events,
            methods=["GET"],
            name="stream_events",
        ),
        Route("/v1/streams/{stream_id}/cancel", state.cancel_stream, methods=["POST"]),
        WebSocketRoute("/v1/ws", state.websocket),
        Route("/v1/chat/completions", state.chat_completions, methods=["POST"]),
        Route("/v1/models", state.models, methods=["GET"]),
        Route("/v1/responses", responses.create, methods=["POST"]),
        WebSocketRoute("/v1/responses", responses.websocket),
        Route("/v1/responses/{response_id}", responses.retrieve, methods=["GET"]),
        Route("/v1/responses/{response_id}/cancel", responses.cancel, methods=["POST"]),
        Route("/api/chat", chats.chat, methods=["POST"]),
        Route("/api/chat/{chat_id:path}/stream", chats.resume, methods=["GET"]),
        Route("/api/chat/{chat_id:path}/stop", chats.stop, methods=["POST"]),
        WebSocketRoute("/api/chat/ws", chat_socket.websocket),
        Route("/healthz", state.healthz, methods=["GET"]),
        *web_routes(settings.web_dir),
        *state.guards.routes(),  # POST /v1/tokens, GET /metrics
    ]
    install_log_filters()
    app = ServerSendApp(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_exception, Exception: internal_error},
        middleware=state.guards.middleware(),
    )
    app.state.tokenwire = state
    return app


def create_app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` and multi-worker runs: settings from ``TOKENWIRE_*``;
    also sets up tokenwire's logging (``TOKENWIRE_LOG_FORMAT``)."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
