"""``GET /metrics``: the values move as streams run, on both transports."""

from __future__ import annotations

import asyncio
import json

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import asgi_client, scripted_app, serve, wait_for
from tests.security_helpers import GENERATE, USER, sse_events, ws_connect, ws_events
from tokenwire.edge.metrics import Metrics
from tokenwire.protocol.events import TextDelta
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.scripted import Script, ScriptedProvider, scripted_text
from tokenwire.settings import OverflowPolicy, Settings
from tokenwire.streams.registry import StreamRegistry
from tokenwire.streams.subscription import ends_stream
from tokenwire.transports.base import Transport
from tokenwire.transports.pump import Delivery, pump

GENERATE_PARAMS = GenerateParams(messages=USER)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(http: httpx.AsyncClient, **kwargs: object) -> Samples:
    response = await http.get("/metrics", **kwargs)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


async def test_metrics_follow_streams_on_both_transports():
    app, _ = scripted_app(Script(tokens=60, interval=0.01))
    with serve(app) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            before = await scrape(http)
            assert value(before, "tokenwire_streams_started_total", transport="websocket") == 0

            async with ws_connect(server.base_url) as ws:
                await ws.send(json.dumps(GENERATE))
                while json.loads(await ws.recv())["type"] != "text.delta":
                    pass
                during = await scrape(http)
                assert value(during, "tokenwire_connections_open", transport="websocket") == 1
                assert value(during, "tokenwire_streams_active", transport="websocket") == 1
                assert value(during, "tokenwire_ttft_seconds_count", transport="websocket") == 1
                delivered = ("tokenwire_events_delivered_total", "websocket")
                assert value(during, delivered[0], transport=delivered[1], type="text.delta") >= 1
                rest = await ws_events(ws)
                assert rest[-1]["finish_reason"] == "stop"

            async with http.stream("POST", "/v1/streams", json={"messages": USER}) as response:
                lines = response.aiter_lines()
                async for line in lines:
                    if line.startswith("event: text.delta"):
                        break
                during = await scrape(http)
                assert value(during, "tokenwire_connections_open", transport="sse") == 1
                assert value(during, "tokenwire_streams_active", transport="sse") == 1
                rest = [line async for line in lines]
                assert '"finish_reason":"stop"' in [x for x in rest if x][-1]

            await wait_for(lambda: len(app.state.tokenwire.guards.streams.live()) == 0)
            after = await scrape(http)
    for transport in ("websocket", "sse"):
        assert value(after, "tokenwire_streams_started_total", transport=transport) == 1
        assert (
            value(after, "tokenwire_streams_ended_total", transport=transport, finish_reason="stop")
            == 1
        )
        assert value(after, "tokenwire_streams_active", transport=transport) == 0
        assert value(after, "tokenwire_tokens_total", transport=transport) == 60
        deltas = value(
            after, "tokenwire_events_delivered_total", transport=transport, type="text.delta"
        )
        assert 1 <= deltas <= 60
        assert value(after, "tokenwire_inter_token_seconds_count", transport=transport) >= 1
        assert value(after, "tokenwire_ttft_seconds_count", transport=transport) == 1
        assert value(after, "tokenwire_delivery_batch_events_count", transport=transport) >= 3
    assert value(after, "tokenwire_connections_open", transport="websocket") == 0


async def test_metrics_count_cancels_errors_refusals_and_limits():
    app, _ = scripted_app(Script(tokens=500, interval=0.01), api_keys="tw_k", max_streams=1)
    auth = {"Authorization": "Bearer tw_k"}
    app.state.tokenwire.provider.script_for = lambda params: (
        Script(tokens=10, error_after=2)
        if params.messages[0].content == "fail"
        else Script(tokens=500, interval=0.01)
    )
    with serve(app) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            assert (await http.get("/metrics")).status_code == 401
            failing = {"messages": [{"role": "user", "content": "fail"}]}
            response = await http.post("/v1/streams", json=failing, headers=auth)
            assert sse_events(response.text)[-1]["finish_reason"] == "error"
            body = {"messages": USER}
            async with http.stream("POST", "/v1/streams", json=body, headers=auth) as live:
                stream_id = live.headers["x-stream-id"]
                refused = await http.post("/v1/streams", json=body, headers=auth)
                assert refused.status_code == 429
                cancel = await http.post(f"/v1/streams/{stream_id}/cancel", headers=auth)
                assert cancel.status_code == 202
                await live.aread()
            samples = await scrape(http, headers=auth)
    assert value(samples, "tokenwire_provider_errors_total", code="provider_error") == 1
    assert value(samples, "tokenwire_cancels_total", transport="sse") == 1
    ended = "tokenwire_streams_ended_total"
    assert value(samples, ended, transport="sse", finish_reason="cancelled") == 1
    assert value(samples, ended, transport="sse", finish_reason="error") == 1
    assert value(samples, "tokenwire_refused_total", code="unauthorized", scope="http") == 1
    assert value(samples, "tokenwire_limited_total", limit="streams") == 1


class StalledClient(Transport):
    """A transport whose client reads nothing until ``reading`` is set."""

    name = "stalled"

    def __init__(self) -> None:
        self.reading = asyncio.Event()
        self.texts: list[str] = []

    async def send_events(self, events: list) -> None:
        await self.reading.wait()
        self.texts += [e.delta for e in events if isinstance(e, TextDelta)]

    async def send_heartbeat(self) -> None:
        pass


async def run_stalled(overflow: OverflowPolicy, tokens: int) -> tuple[Samples, Delivery, str]:
    provider = ScriptedProvider(Script(tokens=tokens))
    settings = Settings(
        provider="scripted", queue_maxsize=2, overflow=overflow, slow_consumer_timeout=0.05
    )
    metrics = Metrics()
    async with provider:
        registry = StreamRegistry(provider, settings)
        registry.observer = metrics
        generation = registry.create(GENERATE_PARAMS, transport="websocket")
        attachment = registry.attach(generation)
        client = StalledClient()
        generation.start()
        delivering = asyncio.create_task(pump(attachment, client))
        await asyncio.sleep(0.2)  # the provider runs ahead of the stalled client
        client.reading.set()
        delivery = await delivering
        await generation.wait()
    return parse(metrics.render().decode()), delivery, "".join(client.texts)


async def test_coalesced_and_evicted_are_counted():
    samples, delivery, text = await run_stalled(OverflowPolicy.COALESCE, 300)
    assert delivery is Delivery.ENDED and text == scripted_text(300)
    assert value(samples, "tokenwire_coalesced_total", transport="websocket") > 0
    samples, delivery, _ = await run_stalled(OverflowPolicy.DISCONNECT, 300)
    assert delivery is Delivery.EVICTED
    assert value(samples, "tokenwire_evicted_total", transport="websocket") == 1


async def test_queue_depth_is_read_at_scrape_time():
    app, _ = scripted_app(Script(tokens=100), queue_maxsize=8)
    state = app.state.tokenwire
    async with asgi_client(app) as http:
        assert value(await scrape(http), "tokenwire_queue_depth_events", transport="sse") == 0
        generation = state.guards.streams.scoped(state.registry, {}).create(
            GENERATE_PARAMS, transport="sse"
        )
        subscription = state.registry.subscribe(generation)
        generation.start()
        await wait_for(lambda: subscription.depth == 8)  # nobody reads; the provider waits
        samples = await scrape(http)
        assert value(samples, "tokenwire_queue_depth_events", transport="sse") == 8
        generation.cancel()
        events = []
        while not ends_stream(events):
            events += await subscription.get_batch()
        assert value(await scrape(http), "tokenwire_queue_depth_events", transport="sse") == 0


def test_per_write_tallies_export_what_prometheus_histograms_would():
    """The hot-path tallies (plain ints, no lock) must scrape exactly like prometheus_client's
    own Histogram fed the same observations: same buckets, count and sum."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from tokenwire.edge.metrics import INTER_TOKEN_BUCKETS

    observations = [0.0, 0.0005, 0.001, 0.0011, 0.003, 0.05, 0.7, 5.0, 7.5, 120.0]
    metrics = Metrics()
    tally = metrics.tallies.of("sse")
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "tokenwire_inter_token_seconds",
        "reference",
        ["transport"],
        buckets=INTER_TOKEN_BUCKETS,
        registry=reference_registry,
    )
    for seconds in observations:
        tally.inter_token.observe(seconds)
        reference.labels("sse").observe(seconds)

    def histogram_samples(text: str) -> Samples:
        return {
            key: sample
            for key, sample in parse(text).items()
            if key[0].startswith("tokenwire_inter_token_seconds_")
            and not key[0].endswith("_created")
        }

    ours = histogram_samples(metrics.render().decode())
    expected = histogram_samples(generate_latest(reference_registry).decode())
    assert ours == expected
    assert value(ours, "tokenwire_inter_token_seconds_count", transport="sse") == 10
    assert value(ours, "tokenwire_inter_token_seconds_bucket", transport="sse", le="0.001") == 3


def test_delivered_events_are_counted_by_type():
    metrics = Metrics()
    tally = metrics.tallies.of("websocket")
    tally.deltas += 5
    tally.delivered("stream.start")
    tally.delivered("stream.end")
    tally.delivered("stream.end")
    samples = parse(metrics.render().decode())
    for event_type, count in (("text.delta", 5), ("stream.start", 1), ("stream.end", 2)):
        labels = {"transport": "websocket", "type": event_type}
        assert value(samples, "tokenwire_events_delivered_total", **labels) == count


async def test_a_lone_delta_s_write_counts_as_a_batch_of_one():
    """``sent_delta()`` (the pump's write of one delta in the producer's step) must export
    exactly what ``sent([delta])`` does: deltas, batch sizes and inter-token times."""
    counted: list[Samples] = []
    for lone in (True, False):
        metrics = Metrics()
        registry = StreamRegistry(ScriptedProvider(Script()), Settings(provider="scripted"))
        registry.observer = metrics
        generation = registry.create(GENERATE_PARAMS, transport="sse")
        observer = metrics.delivery("sse", generation.started_at, resumed=False)
        for seq in range(2, 6):
            if lone:
                observer.sent_delta(TextDelta(generation.stream_id, seq, "x"))
            else:
                observer.sent([TextDelta(stream_id=generation.stream_id, seq=seq, delta="x")], 0)
        samples = parse(metrics.render().decode())
        counted.append(
            {
                key: sample
                for key, sample in samples.items()
                if key[0].startswith(("tokenwire_events_delivered", "tokenwire_delivery_batch"))
                or key[0].endswith(("inter_token_seconds_count", "ttft_seconds_count"))
            }
        )
    lone, batched = counted
    assert lone == batched
    assert value(lone, "tokenwire_delivery_batch_events_bucket", transport="sse", le="1.0") == 4
    assert value(lone, "tokenwire_inter_token_seconds_count", transport="sse") == 3
    assert value(lone, "tokenwire_events_delivered_total", transport="sse", type="text.delta") == 4
    assert value(lone, "tokenwire_ttft_seconds_count", transport="sse") == 1


async def test_rich_deltas_are_counted_by_their_own_type_whichever_way_they_are_written():
    """A reasoning or tool-call delta written alone, in the producer's step, is counted as
    what it is, as a merged write counts it: ``tokenwire_events_delivered_total`` matches what
    the client received, type by type; only text deltas time the first token."""
    script = Script(tokens=6, interval=0.01, reasoning_tokens=5, tool_calls=1, tool_call_pieces=4)
    app, _ = scripted_app(script)
    with serve(app) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            for transport in ("sse", "websocket"):
                if transport == "sse":
                    response = await http.post("/v1/streams", json={"messages": USER})
                    events = sse_events(response.text)
                else:
                    async with ws_connect(server.base_url) as ws:
                        await ws.send(json.dumps(GENERATE))
                        events = await ws_events(ws)
                received: dict[str, int] = {}
                for event in events:
                    received[event["type"]] = received.get(event["type"], 0) + 1
                assert received["reasoning.delta"] >= 1 and received["tool_call.delta"] >= 1
                await wait_for(lambda: len(app.state.tokenwire.guards.streams.live()) == 0)
                samples = await scrape(http)
                for event_type, count in received.items():
                    labels = {"transport": transport, "type": event_type}
                    counted = value(samples, "tokenwire_events_delivered_total", **labels)
                    assert counted == count, (transport, event_type, counted, count)
                assert value(samples, "tokenwire_ttft_seconds_count", transport=transport) == 1
