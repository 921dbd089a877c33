"""The one error writer: every error answer of the server, HTTP or WebSocket handshake, comes
from here, so its status, body and headers are decided once.

Shapes (``status`` is the error's own: :attr:`tokenwire.errors.TokenwireError.status`):

- tokenwire's routes: ``{"error": {"code", "message", "retryable"}}``;
- the OpenAI-compatible routes (:data:`OPENAI_PATHS`): OpenAI's
  ``{"error": {"message", "type", "param", "code"}}`` (OpenAI API reference, "Error codes");
- headers: ``WWW-Authenticate: Bearer`` on 401 (RFC 6750 section 3), ``Retry-After`` in
  whole seconds on 429 and 503 (RFC 9110 section 10.2.3).

A refused WebSocket handshake carries the same body where the server supports the ASGI
WebSocket Denial Response extension; otherwise it is closed before accept (1008), which the
server turns into HTTP 403.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope, Send

from tokenwire.errors import (
    ErrorCode,
    InternalError,
    InvalidRequest,
    NotFound,
    RateLimited,
    TokenwireError,
)
from tokenwire.lifecycle import route_path
from tokenwire.logs import handshake_denied_var
from tokenwire.protocol import openai as oai
from tokenwire.protocol.websocket import CloseCode

log = logging.getLogger("tokenwire.app")

OPENAI_PATHS = ("/v1/chat/completions", "/v1/models", "/v1/responses")
"""Routes whose errors take OpenAI's shape (and every path under ``/v1/responses/``)."""

_JSON = "application/json"


def error_body(exc: TokenwireError, *, openai: bool = False) -> bytes:
    """The JSON body of an error answer (``openai``: OpenAI's shape)."""
    if openai:
        param = exc.param if isinstance(exc, InvalidRequest) else None
        return _dumps(oai.error_body(exc.code, exc.message, param=param))
    error = {"code": str(exc.code), "message": exc.message, "retryable": exc.retryable}
    return _dumps({"error": error})


def error_headers(exc: TokenwireError) -> dict[str, str]:
    """``WWW-Authenticate`` for 401, ``Retry-After`` (whole seconds, at least 1) for 429 and
    503, nothing else."""
    if exc.code is ErrorCode.UNAUTHORIZED:
        return {"WWW-Authenticate": 'Bearer realm="tokenwire"'}
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(max(1, int(-(-exc.retry_after // 1))))}
    if exc.status == 503:
        return {"Retry-After": "1"}
    return {}


def error_response(exc: TokenwireError, *, openai: bool = False) -> Response:
    """The error as a Starlette response (for route handlers)."""
    return Response(
        error_body(exc, openai=openai),
        status_code=exc.status,
        headers=error_headers(exc),
        media_type=_JSON,
    )


def is_openai_path(path: str) -> bool:
    return path in OPENAI_PATHS or path.startswith("/v1/responses/")


async def send_error(send: Send, exc: TokenwireError, path: str = "") -> None:
    """A complete error response on a plain ASGI ``send`` (middleware, before any route);
    ``path`` is the request's, for the body's shape."""
    body = error_body(exc, openai=is_openai_path(path))
    await send({"type": "http.response.start", "status": exc.status, "headers": _raw(exc, body)})
    await send({"type": "http.response.body", "body": body})


async def deny_websocket(scope: Scope, send: Send, exc: TokenwireError) -> None:
    """Refuse a WebSocket handshake before accept (see the module docstring)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
        return
    handshake_denied_var.set(True)  # see tokenwire.logs.DeniedHandshakeFilter
    body = error_body(exc, openai=is_openai_path(route_path(scope)))
    await send(
        {"type": "websocket.http.response.start", "status": exc.status, "headers": _raw(exc, body)}
    )
    await send({"type": "websocket.http.response.body", "body": body})


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own HTTP errors (404 for an unknown path, 405 for a wrong method) in our
    shape: ``not_found`` for 404, ``invalid_request`` otherwise, with Starlette's status."""
    assert isinstance(exc, HTTPException)
    code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.INVALID_REQUEST
    error = TokenwireError(str(exc.detail), code=code)
    body = error_body(error, openai=is_openai_path(route_path(request.scope)))
    return Response(body, status_code=exc.status_code, headers=exc.headers, media_type=_JSON)


async def internal_error(request: Request, exc: Exception) -> Response:
    """Any other exception: logged with its traceback; the client gets a 500 with no detail."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(InternalError(), openai=is_openai_path(route_path(request.scope)))


def not_found(message: str) -> Response:
    return error_response(NotFound(message))


def raw_http_error(exc: TokenwireError) -> bytes:
    """A complete HTTP/1.1 error response, as bytes, that closes the connection: for the
    protocol layer (:mod:`tokenwire.edge.http`), where no ASGI ``send`` exists yet."""
    body = error_body(exc)
    reason = HTTPStatus(exc.status).phrase.encode()
    lines = [b"HTTP/1.1 %d %s" % (exc.status, reason)]
    lines += [name + b": " + value for name, value in _raw(exc, body)]
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _raw(exc: TokenwireError, body: bytes) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", _JSON.encode()), (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode(), v.encode()) for k, v in error_headers(exc).items()]
    return headers


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
