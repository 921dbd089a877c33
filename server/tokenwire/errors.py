"""Exceptions raised by tokenwire, and the error codes of wire protocol v1.

Hierarchy::

    TokenwireError                 root; ``code`` is the protocol error code, ``retryable`` a hint
    ├── InvalidRequest             the client's request is malformed (``invalid_request``)
    ├── NotFound                   unknown stream or model (``not_found``)
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
