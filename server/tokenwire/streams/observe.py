"""What the edge may watch of the stream core: two observer interfaces with plain-value methods.

The core calls them; it never learns who listens. The edge (``tokenwire.edge.metrics``)
subclasses them and hands its instance to the :class:`~tokenwire.streams.registry.StreamRegistry`
when it wires the app (``registry.observer = metrics``); every generation the registry creates
then reports there, and every delivery loop of such a generation asks it for a
:class:`DeliveryObserver`. The base classes ignore everything (:data:`NO_OBSERVER`), so a core
without an edge (tests, a library user's own wiring) pays nothing but a method call.

Methods are called on the event loop's thread, from the hot path for
:meth:`DeliveryObserver.sent_delta`: an implementation must not block or take locks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenwire.protocol.events import AnyDelta, Event


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """How one generation ended: the route that created it (``transport``), its
    ``finish_reason``, the completion tokens it produced, and the code of the ``error`` that
    preceded its end, if any."""

    transport: str
    finish_reason: str
    completion_tokens: int
    error_code: str | None = None


class DeliveryObserver:
    """Sees one subscriber's writes (the pump's). No-op base."""

    def sent(self, events: Sequence[Event], coalesced: int) -> None:
        """``events`` were just written to the client; ``coalesced`` is the subscription's
        running count of deltas merged under ``overflow=coalesce`` so far."""

    def sent_delta(self, delta: AnyDelta) -> None:
        """One delta (of any kind), alone, was just written: what ``sent([delta], ...)``
        counts, for the common write, which never follows a merge (a coalesced delta waits
        in the queue). Called once per token: keep it to a few additions."""

    def evicted(self) -> None:
        """The subscriber was cut off as a slow consumer."""


class StreamObserver:
    """Sees the life of the generations of one registry. No-op base (:data:`NO_OBSERVER`).

    ``transport`` is the name of the route that created a stream (``sse``, ``websocket``,
    ``openai``, ...); times are :func:`time.monotonic` seconds."""

    def stream_started(self, transport: str) -> None:
        """A generation was created."""

    def stream_ended(self, ended: StreamEnded) -> None:
        """A generation published its ``stream.end``."""

    def delivery(self, transport: str, started_at: float, *, resumed: bool) -> DeliveryObserver:
        """An observer for one subscriber's delivery loop of a stream created at
        ``started_at``; ``resumed``: the loop began with a catch-up, so its first text is no
        time to first token."""
        return NO_DELIVERY

    def cancel_requested(self, transport: str) -> None:
        """A client asked to cancel a stream that runs here."""

    def resumed(self, transport: str) -> None:
        """A client resumed a stream (``unknown`` when it runs in another process)."""


NO_DELIVERY = DeliveryObserver()
NO_OBSERVER = StreamObserver()
