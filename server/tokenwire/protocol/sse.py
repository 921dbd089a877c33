"""Server-Sent Events framing (WHATWG HTML, section 9.2 "Server-sent events"). Pure: no I/O.

A numbered event is framed as::

    id: <seq>\\n
    event: <type>\\n
    data: <compact JSON>\\n
    \\n

Compact JSON never contains a raw line break, so ``data`` is always one line. ``stream.resumed``
has no seq and therefore no ``id:`` line: a browser keeps its last event id across it.
"""

from __future__ import annotations

from pydantic_core import to_json

from tokenwire.protocol.events import TEXT_DELTA_JSON, Event, TextDelta, event_json

MEDIA_TYPE = "text/event-stream"

HEADERS = {
    # Proxies and browsers must neither cache nor buffer a live stream.
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

PING = b": ping\n\n"

_TEXT_DELTA_FRAME = b"id: %d\nevent: text.delta\ndata: " + TEXT_DELTA_JSON + b"\n\n"


def encode_event(event: Event) -> bytes:
    """Frame one event: ``id:`` (numbered events only), ``event:``, ``data:``, blank line."""
    if isinstance(event, TextDelta):  # the frame of nearly every event: no model, one format
        seq = event.seq
        return _TEXT_DELTA_FRAME % (seq, to_json(event.stream_id), seq, to_json(event.delta))
    number: int | None = getattr(event, "seq", None)
    head = (
        f"id: {number}\nevent: {event.type}\n" if number is not None else f"event: {event.type}\n"
    )
    return f"{head}data: {event_json(event)}\n\n".encode()


def encode_comment(text: str) -> bytes:
    """A comment frame (ignored by parsers; keeps idle connections open). Line breaks become
    separate comment lines so that the text can never start a field."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "".join(f": {line}\n" for line in lines).encode() + b"\n"


def encode_retry(milliseconds: int) -> bytes:
    """Set the client's reconnection delay (``retry:`` field, an integer number of milliseconds).

    Raises:
        ValueError: if ``milliseconds`` is negative.
    """
    if milliseconds < 0:
        raise ValueError(f"retry must be >= 0 milliseconds, got {milliseconds}")
    return f"retry: {milliseconds}\n\n".encode()
