"""Logging set-up: one line per record, with the record's structured fields.

``text``: ``2026-01-01T00:00:00Z INFO tokenwire.streams stream ended stream_id=str_x tokens=12``
``json``: ``{"ts": ..., "level": "INFO", "logger": ..., "message": ..., "stream_id": ...}``

Fields come from ``logger.info(msg, extra={...})``. tokenwire never logs message content.
"""

from __future__ import annotations

import json
import logging
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
    logger.handlers = [handler]
    numeric = logging.getLevelName("DEBUG" if level == "trace" else level.upper())
    logger.setLevel(numeric)
    logger.propagate = False
