"""Logging set-up: one line per record, with the record's structured fields.

``text``: ``2026-01-01T00:00:00Z INFO tokenwire.streams stream ended stream_id=str_x tokens=12``
``json``: ``{"ts": ..., "level": "INFO", "logger": ..., "message": ..., "stream_id": ...}``

Fields come from ``logger.info(msg, extra={...})``; ``request_id`` is added to every record
logged while a request is handled. tokenwire never logs message content, API keys or tokens;
:class:`RedactingFilter` also removes ``token=`` query values and bearer credentials from
uvicorn's access and WebSocket log lines, which print request paths with their query strings.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
from typing import Any, Literal

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record was logged with (its ``extra``)."""
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
        f".{int(record.msecs):03d}Z"
    )


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        pairs = " ".join(f"{key}={value}" for key, value in fields_of(record).items())
        line = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        line = f"{line} {pairs}" if pairs else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **fields_of(record),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info", fmt: Literal["text", "json"] = "text") -> None:
    """Send the ``tokenwire`` loggers to stderr in the chosen format. Idempotent."""
    logger = logging.getLogger("tokenwire")
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactingFilter())
    logger.handlers = [handler]
    numeric = logging.getLevelName("DEBUG" if level == "trace" else level.upper())
    logger.setLevel(numeric)
    logger.propagate = False
    install_log_filters()


# -- request ids and redaction ----------------------------------------------------------------

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tokenwire_request_id", default=None
)
"""The id of the request being handled (set by ``tokenwire.edge.security.SecurityMiddleware``);
tasks started while handling it (a generation) inherit it."""

_TOKEN_NAME = "".join(f"(?:{c}|%{ord(c):02x})" for c in "token")
"""``token`` with any of its letters percent-encoded (query names are decoded before use)."""
_SECRET_PARAM = re.compile(r"((?:^|[?&;\s])" + _TOKEN_NAME + r"=)[^&;\s\"']*", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[^\s\"']+", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with ``token=`` query values (also when the name is percent-encoded, e.g.
    ``%74oken=``, which the server decodes) and bearer credentials replaced by
    ``[redacted]``."""
    return _BEARER.sub(r"\1" + REDACTED, _SECRET_PARAM.sub(r"\1" + REDACTED, text))


class RedactingFilter(logging.Filter):
    """Redacts a record's message and string arguments with :func:`redact`, and replaces
    WebSocket frames (which the websockets library logs at DEBUG with their payload, e.g. an
    ``auth`` message or a prompt, under uvicorn ``--log-level debug``) by their opcode and
    size."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            args = record.args.items()
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in args}
        return True


def _redact_arg(arg: object) -> object:
    if isinstance(arg, str):
        return redact(arg)
    opcode, data = getattr(arg, "opcode", None), getattr(arg, "data", None)
    if opcode is not None and isinstance(data, bytes | bytearray):  # a websockets Frame
        return f"{getattr(opcode, 'name', opcode)} [{len(data)} bytes]"
    return arg


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (from :data:`request_id_var`) to records that have none."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = request_id_var.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


REDACTED_LOGGERS = ("uvicorn.access", "uvicorn.error", "websockets.server")

handshake_denied_var: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "tokenwire_handshake_denied", default=False
)
"""Set (and never reset) in the ASGI task of a WebSocket handshake that tokenwire denied."""

_INCOMPLETE_HANDSHAKE = "ASGI callable returned without completing handshake."


class DeniedHandshakeFilter(logging.Filter):
    """Drops uvicorn's ERROR "ASGI callable returned without completing handshake." for the
    handshakes tokenwire denied on purpose with a WebSocket Denial Response (uvicorn's
    websockets-sansio protocol logs it after every denial; upstream: Kludex/uvicorn#3138).
    The same message from any other handshake still gets through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (handshake_denied_var.get() and record.msg == _INCOMPLETE_HANDSHAKE)


def install_log_filters() -> None:
    """Attach :class:`RedactingFilter` to the loggers of uvicorn and websockets that print
    request paths (a logger's filters see only the records logged on it). Idempotent."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
    uvicorn = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, DeniedHandshakeFilter) for f in uvicorn.filters):
        uvicorn.addFilter(DeniedHandshakeFilter())
