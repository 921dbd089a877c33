"""The token source that every server under test streams from, and the request that starts it.

One stream is described by a :class:`Schedule`: ``tokens`` tokens, the first due ``ttft``
seconds after ``t0``, then one every ``interval`` seconds. ``t0`` is the client's
``time.monotonic()`` when it sent the request; server and client run on one machine, and on
Linux ``time.monotonic()`` is ``CLOCK_MONOTONIC``, one clock for every process. So the client
knows when token ``i`` was due (:meth:`Schedule.due`) without any side channel, and every delay
between that moment and the moment the client parsed the token is *added* by the server under
test (request handling, event-loop lag, encoding, writes) or by the loopback/client path, which
is the same for all servers.

The source sleeps to absolute deadlines (``t0 + ttft + i * interval``), not by a fixed delay per
token as :class:`tokenwire.providers.scripted.ScriptedProvider` does: relative sleeps drift (each
wake-up is a little late, and the lateness adds up), which would show up as latency the client
cannot tell apart from the server's. A deadline already past is not slept for, so a server that
falls behind delivers the overdue tokens at once and is charged for their lateness. With
``interval == 0`` the source yields as fast as the server consumes (the "provider outpaces the
client" case). Before an overdue token it still gives the event loop one turn
(``asyncio.sleep(0)``), as any real provider does whose tokens come from a socket or a thread:
a source that never awaits would starve the server's other tasks, and a baseline whose client
has gone away would spin (uvicorn's ``send`` returns at once on a closed connection).

The token text is :func:`tokenwire.providers.scripted.scripted_token`: token ``i`` is one word,
with a leading space from the second on. So a client can count the tokens inside a coalesced
text delta (the number of spaces, plus one for the first token) and check the text it received
against :func:`~tokenwire.providers.scripted.scripted_text`.

The schedule travels as the compact JSON content of the request's single user message, in the
same body for every server: ``{"messages": [{"role": "user", "content": "<schedule JSON>"}],
"max_tokens": tokens}`` (POST body, or the fields of the WebSocket ``generate`` message).

Every server also tells when it stopped a stream, the same way for all: :data:`LIVE` counts the
running :func:`scheduled_tokens` iterators and keeps, for the last :data:`KEPT_STOPS` that
stopped, the schedule's ``t0`` (which names the stream: the client made it) and the server's
``time.monotonic()`` at the stop. Each server under test serves it as ``GET /active``
(:func:`transport.servers.active`), so the cancel phase measures client cancel -> server-side
generator stopped on the one clock, with no polling error.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from tokenwire.providers.scripted import scripted_token


@dataclass(frozen=True, slots=True)
class Schedule:
    """When the tokens of one stream are due. ``t0`` is ``time.monotonic()`` (seconds) of the
    client at the request; ``ttft`` and ``interval`` are seconds; ``tokens`` is a count."""

    t0: float
    tokens: int
    ttft: float = 0.0
    interval: float = 0.05

    def due(self, index: int) -> float:
        """``time.monotonic()`` at which token ``index`` (from 0) is due."""
        return self.t0 + self.ttft + index * self.interval

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        """Parse :meth:`to_json` output. Raises ``ValueError`` (a bad or incomplete schedule)."""
        try:
            fields = json.loads(text)
            return cls(
                t0=float(fields["t0"]),
                tokens=int(fields["tokens"]),
                ttft=float(fields["ttft"]),
                interval=float(fields["interval"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a benchmark schedule: {text[:80]!r}") from exc

    @classmethod
    def from_request(cls, body: Any) -> Schedule:
        """The schedule in a request body ``{"messages": [..., {"content": ...}], ...}``.
        Raises ``ValueError``."""
        try:
            content = body["messages"][-1]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError("request has no messages[-1].content") from exc
        return cls.from_json(content)


def request_fields(schedule: Schedule) -> dict[str, Any]:
    """The request fields that start ``schedule`` on any server under test."""
    return {
        "messages": [{"role": "user", "content": schedule.to_json()}],
        "max_tokens": max(schedule.tokens, 1),
    }


KEPT_STOPS = 4096  # stops that :data:`LIVE` remembers


class LiveGenerators:
    """How many :func:`scheduled_tokens` iterators run in this process, and when the last
    :data:`KEPT_STOPS` of them stopped (``(t0, time.monotonic())`` pairs, seconds, oldest
    first). Updated in the iterator's ``try``/``finally``: a stop is a normal end, a close or
    a cancellation alike."""

    def __init__(self) -> None:
        self.active = 0
        self.stops: deque[tuple[float, float]] = deque(maxlen=KEPT_STOPS)

    def started(self) -> None:
        self.active += 1

    def stopped(self, t0: float) -> None:
        self.active -= 1
        self.stops.append((t0, time.monotonic()))

    def report(self, since: float = 0.0) -> dict[str, Any]:
        """``{"active": count, "stopped": [[t0, stopped_at], ...]}``: the stops at or after
        ``since`` (``time.monotonic()`` seconds)."""
        return {
            "active": self.active,
            "stopped": [[t0, at] for t0, at in self.stops if at >= since],
        }


LIVE = LiveGenerators()


async def scheduled_tokens(schedule: Schedule) -> AsyncIterator[str]:
    """Yield the text of each token at its deadline (see the module docstring). Closing the
    iterator stops it at once (it holds nothing but a sleep); :data:`LIVE` counts it from the
    first ``__anext__`` to its end, close or cancellation."""
    monotonic = time.monotonic
    LIVE.started()
    try:
        for index in range(schedule.tokens):
            due = schedule.due(index)
            # A loop, not one sleep: uvloop's millisecond timers can wake up to ~1 ms early.
            delay = due - monotonic()
            if delay <= 0:
                await asyncio.sleep(0)
            while delay > 0:
                await asyncio.sleep(delay)
                delay = due - monotonic()
            yield scripted_token(index)
    finally:
        LIVE.stopped(schedule.t0)
