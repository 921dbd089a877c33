"""Exceptions raised by tokenwire, and the error codes of wire protocol v1.

Hierarchy::

    TokenwireError                 root; ``code`` is the protocol error code, ``retryable`` a hint
    ├── InvalidRequest             the client's request is malformed (``invalid_request``)
    ├── NotFound                   unknown stream or model (``not_found``)
    ├── Unauthorized               no valid API key or token (``unauthorized``, HTTP 401)
    ├── Forbidden                  a browser Origin not on the allowlist (``forbidden``, 403)
    ├── PayloadTooLarge            a body over the size limit (``payload_too_large``, 413)
    ├── RateLimited                a concurrency or rate limit was hit (``rate_limited``, 429)
    └── ProviderError              the model backend failed (``provider_error``)
        └── ProviderTimeout        the backend did not answer in time (``provider_timeout``)

Provider implementations translate their SDK's exceptions into these at the boundary with
``raise ... from exc``, so the stream layer and transports only ever see this hierarchy.
"""

from __future__ import annotations

from enum import StrEnum


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


class TokenwireError(Exception):
    """Root of tokenwire's exceptions.

    Attributes:
        message: human-readable text, safe to send to a client (no secrets, no tracebacks).
        code: the protocol error code.
        retryable: whether the same request may succeed if tried again later.
    """

    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    retryable: bool = False

    def __init__(
        self, message: str, *, retryable: bool | None = None, code: ErrorCode | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        if code is not None:
            self.code = code


class InvalidRequest(TokenwireError):
    """The request is malformed or names something the server does not accept."""

    code = ErrorCode.INVALID_REQUEST


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


# -- security and limits (see tokenwire.security and tokenwire.limits) -------------------------


class Unauthorized(TokenwireError):
    """No credentials, or an API key or signed token that is unknown, revoked or expired."""

    code = ErrorCode.UNAUTHORIZED


class Forbidden(TokenwireError):
    """The request's ``Origin`` is not on the allowlist (cross-site request or WebSocket)."""

    code = ErrorCode.FORBIDDEN


class PayloadTooLarge(TokenwireError):
    """A request body or message is larger than the server accepts."""

    code = ErrorCode.PAYLOAD_TOO_LARGE


class RateLimited(TokenwireError):
    """A concurrency or rate limit was hit. Always retryable; ``retry_after`` is in seconds."""

    code = ErrorCode.RATE_LIMITED
    retryable = True

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
