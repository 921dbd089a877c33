"""Prometheus metrics, served at ``GET /metrics`` in the text exposition format.

Each app has its own :class:`Metrics` (its own ``CollectorRegistry``), so several apps in one
process (tests) do not mix their numbers. With ``--workers N`` every worker process counts its
own streams: a scrape sees the worker that answered it.

The stream layer feeds the numbers through the observer interfaces of
:mod:`tokenwire.streams.observe`, so that it knows nothing of Prometheus: :class:`Metrics` is
the registry's :class:`~tokenwire.streams.observe.StreamObserver` (set when the app is wired),
and every delivery loop asks it for a :class:`~tokenwire.streams.observe.DeliveryObserver`
that sees every write. Metric names and labels::

    tokenwire_connections_open{transport}            open WebSockets / SSE responses
    tokenwire_streams_active{transport}              live streams
    tokenwire_streams_started_total{transport}
    tokenwire_streams_ended_total{transport,finish_reason}
    tokenwire_tokens_total{transport}                completion tokens, counted at the end
    tokenwire_events_delivered_total{transport,type} events written to clients
    tokenwire_ttft_seconds{transport}                histogram: creation to first text written
    tokenwire_inter_token_seconds{transport}         histogram: between writes carrying text
    tokenwire_queue_depth_events{transport}          events waiting for subscribers now
    tokenwire_delivery_batch_events{transport}       histogram: events per write (queue drained)
    tokenwire_coalesced_total{transport}             deltas merged under overflow=coalesce
    tokenwire_evicted_total{transport}               slow consumers cut off
    tokenwire_cancels_total{transport}               explicit cancel requests
    tokenwire_resumes_total{transport}               resumes served
    tokenwire_provider_errors_total{code}            streams that ended with an error event
    tokenwire_refused_total{code,scope}              requests refused (auth, origin, limits)
    tokenwire_limited_total{limit}                   streams refused by a concurrency limit

``transport`` is the one that created the stream: ``sse``, ``websocket`` or ``openai``.

The provider's engine, read from :meth:`~tokenwire.providers.base.Provider.stats` at scrape time
(only the numbers the provider reports: the local model reports all five, an upstream none)::

    tokenwire_provider_slots                         sequence slots of the engine
    tokenwire_provider_slots_busy                    slots held by a stream now
    tokenwire_provider_queue_streams                 streams waiting for a slot now
    tokenwire_provider_decode_steps_total            batched decode steps run
    tokenwire_provider_prompt_tokens_cached_total    prompt tokens served from the prompt cache
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.utils import floatToGoString
from starlette.requests import Request
from starlette.responses import Response

from tokenwire.protocol.events import AnyDelta, Event, TextDelta
from tokenwire.streams.observe import DeliveryObserver, StreamEnded, StreamObserver

if TYPE_CHECKING:
    from tokenwire.streams.generation import Generation

# seconds; TTFT of a small local model is 10 ms .. seconds, inter-token 1 ms .. 1 s
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
INTER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics(StreamObserver):
    """The server's metrics (one per app). ``live`` returns the live generations, for the
    queue depth gauge; ``provider_stats`` the provider's own numbers (``Provider.stats``);
    both are read at scrape time."""

    def __init__(
        self,
        live: Callable[[], list[Generation]] | None = None,
        provider_stats: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.live = live or (lambda: [])
        self.provider_stats = provider_stats or (lambda: {})
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}  # see labelled()
        r = self.registry
        self.connections_open = Gauge(
            "tokenwire_connections_open", "Open client connections.", ["transport"], registry=r
        )
        self.streams_active = Gauge(
            "tokenwire_streams_active", "Live streams.", ["transport"], registry=r
        )
        self.streams_started = Counter(
            "tokenwire_streams_started", "Streams started.", ["transport"], registry=r
        )
        self.streams_ended = Counter(
            "tokenwire_streams_ended",
            "Streams ended, by finish_reason.",
            ["transport", "finish_reason"],
            registry=r,
        )
        self.tokens = Counter(
            "tokenwire_tokens", "Completion tokens of ended streams.", ["transport"], registry=r
        )
        self.ttft = Histogram(
            "tokenwire_ttft_seconds",
            "Time from a stream's creation to its first text written to a client.",
            ["transport"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        # written per write: tallied in plain ints, turned into metrics when scraped (_Tallies)
        self.tallies = _Tallies()
        self.coalesced = Counter(
            "tokenwire_coalesced",
            "Text deltas merged (overflow=coalesce).",
            ["transport"],
            registry=r,
        )
        self.evictions = Counter(
            "tokenwire_evicted", "Slow consumers cut off.", ["transport"], registry=r
        )
        self.cancels = Counter(
            "tokenwire_cancels", "Explicit cancel requests.", ["transport"], registry=r
        )
        self.resumes = Counter("tokenwire_resumes", "Resumes served.", ["transport"], registry=r)
        self.provider_errors = Counter(
            "tokenwire_provider_errors",
            "Streams that ended with an error event, by code.",
            ["code"],
            registry=r,
        )
        self.refusals = Counter(
            "tokenwire_refused",
            "Requests refused before a route ran (auth, origin, connection limits).",
            ["code", "scope"],
            registry=r,
        )
        self.limits = Counter(
            "tokenwire_limited", "Streams refused by a concurrency limit.", ["limit"], registry=r
        )
        r.register(_QueueDepth(self))
        r.register(self.tallies)
        r.register(_ProviderStats(self))

    # -- the stream layer's observer ----------------------------------------------------------

    def labelled(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, kept: prometheus_client checks the labels and takes a
        lock on every ``labels()`` call, and every stream asks for a few of them."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def connections(self, transport: str) -> Any:
        """The ``tokenwire_connections_open`` gauge of ``transport``."""
        return self.labelled(self.connections_open, transport)

    def stream_started(self, transport: str) -> None:
        self.labelled(self.streams_started, transport).inc()
        self.labelled(self.streams_active, transport).inc()

    def stream_ended(self, ended: StreamEnded) -> None:
        self.labelled(self.streams_active, ended.transport).dec()
        self.labelled(self.streams_ended, ended.transport, ended.finish_reason).inc()
        self.labelled(self.tokens, ended.transport).inc(ended.completion_tokens)
        if ended.error_code is not None:
            self.labelled(self.provider_errors, ended.error_code).inc()

    def delivery(self, transport: str, started_at: float, *, resumed: bool) -> DeliveryObserver:
        return _Delivery(self, transport, started_at, resumed=resumed)

    def cancel_requested(self, transport: str) -> None:
        self.labelled(self.cancels, transport).inc()

    def resumed(self, transport: str) -> None:
        self.labelled(self.resumes, transport).inc()

    # -- the edge's own counts --------------------------------------------------------------

    def refused(self, code: str, scope: str) -> None:
        self.refusals.labels(code, scope).inc()

    def limited(self, limit: str) -> None:
        self.limits.labels(limit).inc()

    # -- exposition -------------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def endpoint(self, request: Request) -> Response:
        """``GET /metrics``: the Prometheus text format (0.0.4), or OpenMetrics when the
        scraper's ``Accept`` asks for it."""
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(self.registry), headers={"Content-Type": content_type})


class _Delivery(DeliveryObserver):
    """Per-subscriber hooks on the hot path: a write costs a few integer additions (see
    :class:`_Tallies`), whatever the number of events in it."""

    def __init__(
        self, metrics: Metrics, transport: str, started_at: float, *, resumed: bool
    ) -> None:
        self.metrics = metrics
        self.transport = transport
        self.started_at = started_at
        self.last_text: float | None = time.monotonic() if resumed else None
        self.coalesced = 0
        self._tally = metrics.tallies.of(transport)
        self._ttft = metrics.labelled(metrics.ttft, transport)

    def sent(self, events: Sequence[Event], coalesced: int) -> None:
        tally = self._tally
        tally.batch.observe(len(events))
        deltas = 0
        for event in events:
            if isinstance(event, TextDelta):
                deltas += 1
            else:
                tally.delivered(event.type)
        if deltas:
            tally.deltas += deltas
            self._text_written()
        if coalesced > self.coalesced:
            self.metrics.coalesced.labels(self.transport).inc(coalesced - self.coalesced)
            self.coalesced = coalesced

    def sent_delta(self, delta: AnyDelta) -> None:
        # Once per token: a few additions, no call. No look at coalescing: a coalesced delta
        # waits in the queue, and so is written by the pump, in a batch that sent() counts.
        tally = self._tally
        tally.lone += 1  # a batch of one event (folded into the histogram when scraped)
        if not isinstance(delta, TextDelta):  # tally.delivered(delta.type), inlined
            counts, kind = tally.other_events, delta.type
            counts[kind] = counts.get(kind, 0) + 1
            return
        tally.deltas += 1
        now = time.monotonic()
        last = self.last_text
        self.last_text = now
        if last is None:
            self._ttft.observe(now - self.started_at)
        else:  # tally.inter_token.observe(now - last), inlined
            buckets, seconds = tally.inter_token, now - last
            buckets.counts[bisect_left(buckets.bounds, seconds)] += 1
            buckets.sum += seconds

    def _text_written(self) -> None:
        now = time.monotonic()
        if self.last_text is None:
            self._ttft.observe(now - self.started_at)
        else:
            self._tally.inter_token.observe(now - self.last_text)
        self.last_text = now

    def evicted(self) -> None:
        self.metrics.evictions.labels(self.transport).inc()


class _Buckets:
    """A histogram's observations as per-bucket counts (``le`` bounds, then +Inf) and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value
        self.sum += value

    def cumulative(self, ones: int = 0) -> list[tuple[str, float]]:
        """The ``le`` buckets, cumulative, with ``ones`` more observations of 1 (counted
        apart, :attr:`_Tally.lone`; bounds that start at 1)."""
        total, buckets = 0, list[tuple[str, float]]()
        counts = [self.counts[0] + ones, *self.counts[1:]]
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            total += count
            bound_text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]  # prometheus_client.utils is unannotated
            buckets.append((bound_text, total))
        return buckets


class _Tally:
    """One transport's per-write numbers."""

    __slots__ = ("deltas", "other_events", "batch", "lone", "inter_token")

    def __init__(self) -> None:
        self.deltas = 0  # text deltas written
        self.other_events: dict[str, int] = {}  # other events written, by type
        self.batch = _Buckets(BATCH_BUCKETS)  # events per write, but for...
        self.lone = 0  # ...the writes of one delta at once: counted here, one addition each
        self.inter_token = _Buckets(INTER_TOKEN_BUCKETS)

    def delivered(self, event_type: str) -> None:
        self.other_events[event_type] = self.other_events.get(event_type, 0) + 1


class _Tallies:
    """The metrics updated on every write, kept as plain ints and floats per transport and
    exported when scraped: ``tokenwire_events_delivered_total``,
    ``tokenwire_delivery_batch_events`` and ``tokenwire_inter_token_seconds``.

    Why not prometheus_client's ``Counter`` and ``Histogram``: each of their updates takes a
    lock (they may be updated from any thread), and at one write per token those three updates
    cost about a tenth of the server's CPU (py-spy). Here every update happens on the event
    loop's thread, so none is needed; a scrape (also on that thread) reads a consistent
    state."""

    def __init__(self) -> None:
        self._by_transport: dict[str, _Tally] = {}

    def of(self, transport: str) -> _Tally:
        tally = self._by_transport.get(transport)
        if tally is None:
            tally = self._by_transport[transport] = _Tally()
        return tally

    def describe(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        return self._families()

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        return self._families()

    def _families(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        delivered = CounterMetricFamily(
            "tokenwire_events_delivered", "Events written to clients.", labels=["transport", "type"]
        )
        batch = HistogramMetricFamily(
            "tokenwire_delivery_batch_events",
            "Events per write: how deep a subscriber's queue was when drained.",
            labels=["transport"],
        )
        inter_token = HistogramMetricFamily(
            "tokenwire_inter_token_seconds",
            "Time between consecutive writes carrying text, per subscriber.",
            labels=["transport"],
        )
        for transport, tally in sorted(self._by_transport.items()):
            delivered.add_metric([transport, "text.delta"], tally.deltas)
            for event_type, count in sorted(tally.other_events.items()):
                delivered.add_metric([transport, event_type], count)
            lone = tally.lone
            batches = tally.batch.cumulative(lone)
            batch.add_metric([transport], batches, sum_value=tally.batch.sum + lone)
            spacing = tally.inter_token
            inter_token.add_metric([transport], spacing.cumulative(), sum_value=spacing.sum)
        yield delivered
        yield batch
        yield inter_token


class _QueueDepth:
    """``tokenwire_queue_depth_events``: computed from the live subscriptions at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "tokenwire_queue_depth_events", "Events waiting for subscribers.", labels=["transport"]
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth: dict[str, int] = {}
        for generation in self.metrics.live():
            total = sum(subscription.depth for subscription in list(generation.subscriptions))
            depth[generation.transport] = depth.get(generation.transport, 0) + total
        family = GaugeMetricFamily(
            "tokenwire_queue_depth_events", "Events waiting for subscribers.", labels=["transport"]
        )
        for transport, value in sorted(depth.items()):
            family.add_metric([transport], value)
        yield family


PROVIDER_STATS: dict[str, tuple[type[GaugeMetricFamily | CounterMetricFamily], str, str]] = {
    "slots_total": (
        GaugeMetricFamily,
        "tokenwire_provider_slots",
        "Sequence slots of the provider's engine (streams decoded together).",
    ),
    "slots_busy": (GaugeMetricFamily, "tokenwire_provider_slots_busy", "Slots held by a stream."),
    "queue_length": (
        GaugeMetricFamily,
        "tokenwire_provider_queue_streams",
        "Streams waiting for a free slot.",
    ),
    "decode_steps": (
        CounterMetricFamily,
        "tokenwire_provider_decode_steps",
        "Batched decode steps run by the provider's engine.",
    ),
    "prompt_tokens_cached": (
        CounterMetricFamily,
        "tokenwire_provider_prompt_tokens_cached",
        "Prompt tokens served from a slot's prompt cache instead of being decoded.",
    ),
}
"""``Provider.stats()`` name -> (family, metric name, help)."""


class _ProviderStats:
    """The provider's engine numbers (:data:`PROVIDER_STATS`), read at scrape time, so the
    provider (part of the core) knows nothing of Prometheus."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        for family, name, text in PROVIDER_STATS.values():
            yield family(name, text)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self.metrics.provider_stats()
        for key, (family, name, text) in PROVIDER_STATS.items():
            if key in stats:
                yield family(name, text, value=stats[key])
