"""Exceptions raised by tokenwire, and the error codes of wire protocol v1.

Hierarchy::

    TokenwireError                 root; ``code`` is the protocol error code, ``retryable`` a hint,
    │                              ``status`` the HTTP status that answers it
    ├── InternalError              a server bug; nothing more is said (``internal_error``, 500)
    ├── InvalidRequest             the client's request is malformed (``invalid_request``, 400)
    │   └── InvalidField           well-formed, but a field's value is wrong (422)
    ├── NotFound                   unknown stream or model (``not_found``)
    ├── Unauthorized               no valid API key or token (``unauthorized``, HTTP 401)
    ├── Forbidden                  a browser Origin not on the allowlist (``forbidden``, 403)
    ├── PayloadTooLarge            a body over the size limit (``payload_too_large``, 413)
    │   └── HeadersTooLarge        a request head over the size limit (431)
    ├── RateLimited                a concurrency or rate limit was hit (``rate_limited``, 429)
    └── ProviderError              the model backend failed (``provider_error``)
        └── ProviderTimeout        the backend did not answer in time (``provider_timeout``)

``status`` comes from :data:`HTTP_STATUS` by code (a subclass may fix its own, as
:class:`InvalidField` does); ``tokenwire.edge.responses`` writes every error answer from it.

Provider implementations translate their SDK's exceptions into these at the boundary with
``raise ... from exc``, so the stream layer and transports only ever see this hierarchy.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorCode(StrEnum):
    """Error codes carried by ``error`` events and JSON error bodies (wire protocol v1)."""

    INVALID_REQUEST = "invalid_request"
    NOT_FOUND = "not_found"
    PROVIDER_ERROR = "provider_error"
    PROVIDER_TIMEOUT = "provider_timeout"
    RATE_LIMITED = "rate_limited"
    SLOW_CONSUMER = "slow_consumer"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNAVAILABLE = "unavailable"  # the stream log, or the worker running the stream, is gone
    INTERNAL_ERROR = "internal_error"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.PROVIDER_ERROR: 502,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.PROVIDER_TIMEOUT: 504,
}
"""The HTTP status that answers each error code (codes not listed: 500)."""


class TokenwireError(Exception):
    """Root of tokenwire's exceptions.

    Attributes:
        message: human-readable text, safe to send to a client (no secrets, no tracebacks).
        code: the protocol error code.
        retryable: whether the same request may succeed if tried again later.
        status: the HTTP status of an answer to it (:data:`HTTP_STATUS`, unless the class
            fixes its own).
    """

    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    retryable: bool = False
    fixed_status: ClassVar[int | None] = None

    def __init__(
        self, message: str, *, retryable: bool | None = None, code: ErrorCode | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        if code is not None:
            self.code = code

    @property
    def status(self) -> int:
        return self.fixed_status or HTTP_STATUS.get(self.code, 500)


class InternalError(TokenwireError):
    """A bug or an unforeseen failure on the server; the client learns nothing more. A retry
    may succeed."""

    code = ErrorCode.INTERNAL_ERROR
    retryable = True

    def __init__(self, message: str = "internal error") -> None:
        super().__init__(message)


class InvalidRequest(TokenwireError):
    """The request is malformed or names something the server does not accept. ``param``, when
    given, is the offending field's path (``messages.2.tool_call_id``), OpenAI's ``param``."""

    code = ErrorCode.INVALID_REQUEST

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidField(InvalidRequest):
    """The request is well-formed JSON, but a field is missing, of the wrong type or out of
    its range (HTTP 422, as FastAPI and OpenAI answer)."""

    fixed_status = 422


class NotFound(TokenwireError):
    """The request names a stream or model that does not exist here."""

    code = ErrorCode.NOT_FOUND


class ProviderError(TokenwireError):
    """The model backend failed. ``retryable`` says whether a retry may help (5xx, 429, network)."""

    code = ErrorCode.PROVIDER_ERROR


class ProviderTimeout(ProviderError):
    """The model backend did not answer in time. Always retryable."""

    code = ErrorCode.PROVIDER_TIMEOUT
    retryable = True


# -- security and limits (see tokenwire.edge.security and tokenwire.edge.limits) ------------


class Unauthorized(TokenwireError):
    """No credentials, or an API key or signed token that is unknown, revoked or expired."""

    code = ErrorCode.UNAUTHORIZED


class Forbidden(TokenwireError):
    """The request's ``Origin`` is not on the allowlist (cross-site request or WebSocket)."""

    code = ErrorCode.FORBIDDEN


class PayloadTooLarge(TokenwireError):
    """A request body or message is larger than the server accepts."""

    code = ErrorCode.PAYLOAD_TOO_LARGE


class HeadersTooLarge(PayloadTooLarge):
    """A request's head (request line and headers) is larger than the server accepts
    (HTTP 431, RFC 6585 section 5)."""

    fixed_status = 431


class RateLimited(TokenwireError):
    """A concurrency or rate limit was hit. Always retryable; ``retry_after`` is in seconds."""

    code = ErrorCode.RATE_LIMITED
    retryable = True

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
