"""Incremental Server-Sent Events decoder (WHATWG HTML, section 9.2.6 "Interpreting an event
stream"). Pure: feed it bytes as they arrive, get whole events back.

- Lines end in CR, LF or CRLF, also when a CRLF or a UTF-8 character is split across chunks.
- A leading UTF-8 BOM is dropped; lines starting with ``:`` are comments.
- ``data`` lines are joined with LF; an event with no data is not dispatched.
- ``id`` is kept across events (the "last event ID"); an id containing NUL is ignored.
- ``retry`` is accepted only when it is all ASCII digits.
- An event not ended by a blank line when the stream closes is dropped (:meth:`flush`).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event. ``event`` defaults to "message"; ``id`` is the last event ID."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    """``decode(chunk) -> list[ServerSentEvent]``, then ``flush()`` at end of stream."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._pending_cr = False  # the last chunk ended in CR: a following LF is part of it
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = ""
        self.retry: int | None = None  # milliseconds, the latest valid `retry:` seen

    def decode(self, chunk: bytes) -> list[ServerSentEvent]:
        """Feed bytes; return the events completed by them, in order."""
        text = self._text.decode(chunk)
        if not self._started and text:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if text:
            if self._pending_cr and text.startswith("\n"):
                text = text[1:]
            self._pending_cr = False
        buffer = self._buffer + text
        events: list[ServerSentEvent] = []
        position = 0
        cr = buffer.find("\r")
        lf = buffer.find("\n")
        while cr != -1 or lf != -1:  # one pass: each separator is found once
            if cr == -1 or (lf != -1 and lf < cr):
                end, width = lf, 1
            elif cr + 1 < len(buffer) and buffer[cr + 1] == "\n":
                end, width = cr, 2
            else:
                end, width = cr, 1
                self._pending_cr = cr + 1 == len(buffer)  # maybe half of a split CRLF
            event = self._line(buffer[position:end])
            if event is not None:
                events.append(event)
            position = end + width
            if cr != -1 and cr < position:
                cr = buffer.find("\r", position)
            if lf != -1 and lf < position:
                lf = buffer.find("\n", position)
        self._buffer = buffer[position:]
        return events

    def flush(self) -> list[ServerSentEvent]:
        """End of stream: an unterminated event is dropped, per the spec. Returns ``[]``."""
        self._text.decode(b"", final=True)
        self._buffer = ""
        self._data = []
        self._event = ""
        return []

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value and value.isascii() and value.isdigit():
                self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self.last_event_id,
            retry=self.retry,
        )
        self._data = []
        self._event = ""
        return event
