"""Continuous batching in the local provider: several streams on one llama.cpp context.

The pure parts (text assembly with stop strings, fair admission) are checked with tables; the
rest runs the real bundled model: concurrent streams with their own limits, the queue and its
events, cancel and disconnect while queued, a long prompt joining running streams, the
first-token deadline counted from admission, and the engine's numbers on ``GET /metrics``.
Nothing here is timed: the benchmark (``benchmarks/local_throughput.py``) measures speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import asgi_client, provider_of, serve, wait_for
from tokenwire.app import create_app
from tokenwire.errors import ProviderError
from tokenwire.protocol import sse, websocket
from tokenwire.protocol.events import StreamQueued, TextDelta, parse_event
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import Delta, Finish, Prompt, ProviderEvent, Queued
from tokenwire.providers.local import Admission, LocalProvider
from tokenwire.providers.local_engine import TextAssembler
from tokenwire.settings import Settings
from tokenwire_client import AsyncClient

MODEL = "smollm2-135m-instruct.q4_1"
TOPICS = ("a lighthouse keeper", "a robot who paints", "a lost cat", "a brave baker")


def messages(topic: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a long story about {topic}."}]


def params(topic: str, **fields: Any) -> GenerateParams:
    body: dict[str, Any] = {"messages": messages(topic), "temperature": 0, "max_tokens": 32}
    return GenerateParams.model_validate(body | fields)


def text_of(items: list[ProviderEvent]) -> str:
    return "".join(item.text for item in items if isinstance(item, Delta))


async def collect(provider: LocalProvider, request: GenerateParams) -> list[ProviderEvent]:
    return [item async for item in provider.stream(request, MODEL)]


# -- pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "pieces", "expected", "stopped"),
    [
        ((), [b"Hel", b"lo"], ["Hel", "lo", ""], False),
        ((), [b"caf", b"\xc3", b"\xa9!"], ["caf", "", "\u00e9!", ""], False),  # é split
        (("lo w",), [b"Hel", b"lo", b" wor", b"ld"], ["He", "l", "", ""], True),
        (("END",), [b"a E", b"N"], ["a ", "", "EN"], False),  # a prefix held, then flushed
        (("xyz", "b"), [b"aab", b"xyz"], ["aa", ""], True),  # the earliest stop wins
        (("\u00e9",), [b"caf", b"\xc3", b"\xa9 ok"], ["caf", "", "", ""], True),  # stop after join
    ],
)
def test_text_assembler_joins_utf8_and_applies_stop_strings(stop, pieces, expected, stopped):
    assembler = TextAssembler(stop)
    out = []
    for piece in pieces:
        out.append(assembler.feed(piece))
        if assembler.stopped:
            break
    out.append(assembler.flush())
    assert out == expected
    assert assembler.stopped is stopped


async def test_admission_is_first_come_first_served_and_leaving_moves_the_rest_up():
    admission = Admission(2)
    first, second = admission.join(), admission.join()
    waiting = [admission.join() for _ in range(3)]
    assert (first.position, second.position) == (0, 0)
    assert [t.position for t in waiting] == [1, 2, 3]
    admission.leave(waiting[1])  # gone from the middle: the one behind moves up
    assert [t.position for t in waiting] == [1, -1, 2] and admission.waiting == 2
    assert waiting[2].changed.is_set()
    admission.release()  # a slot frees: the head is admitted
    assert [t.position for t in waiting] == [0, -1, 1] and admission.busy == 2
    admission.release()
    admission.release()
    assert waiting[2].position == 0 and admission.busy == 1 and admission.waiting == 0


def test_stream_queued_is_a_numbered_event_on_both_transports():
    event = StreamQueued(stream_id="str_1", seq=2, position=3)
    data = b'{"type":"stream.queued","stream_id":"str_1","seq":2,"position":3}'
    assert sse.encode_event(event) == b"id: 2\nevent: stream.queued\ndata: " + data + b"\n\n"
    assert websocket.encode_event(event) == data.decode()
    assert parse_event(data) == event
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        parse_event(data.replace(b"3", b"-1"))


# -- the real model, in-process ---------------------------------------------------------------


@pytest.mark.local_model
async def test_concurrent_streams_each_end_with_their_own_limits_and_seeds():
    async with LocalProvider(parallel=4) as provider:
        stop_source = text_of(await collect(provider, params(TOPICS[1], max_tokens=40)))
        words = stop_source.split()
        stop_word = " " + words[len(words) // 2]  # mid-text, as the model writes it
        seeded = params(TOPICS[2], temperature=0.9, seed=11, max_tokens=24)
        seeded_alone = text_of(await collect(provider, seeded))
        greedy_alone = text_of(await collect(provider, params(TOPICS[3], max_tokens=30)))

        results = await asyncio.gather(
            collect(provider, params(TOPICS[0], max_tokens=7)),
            collect(provider, params(TOPICS[1], max_tokens=40, stop=[stop_word])),
            collect(provider, seeded),
            collect(provider, params(TOPICS[3], max_tokens=30)),
        )
        assert provider.slots_busy == 0 and provider.queue_length == 0

    short, stopped, sampled, greedy = results
    assert isinstance(short[-1], Finish) and isinstance(stopped[-1], Finish)
    assert short[-1].reason == "length" and short[-1].usage.completion_tokens == 7
    assert stopped[-1].reason == "stop"
    assert text_of(stopped) == stop_source[: stop_source.index(stop_word)]
    assert stop_word not in text_of(stopped)
    assert text_of(sampled) == seeded_alone  # same seed, same text, batched or alone
    assert text_of(greedy) == greedy_alone
    for items in results:
        assert isinstance(items[0], Prompt) and items[0].tokens > 10
        assert not any(isinstance(item, Queued) for item in items)  # 4 slots, 4 streams


async def _take(stream: AsyncIterator[ProviderEvent], deltas: int) -> list[ProviderEvent]:
    items: list[ProviderEvent] = []
    async for item in stream:
        items.append(item)
        if sum(isinstance(i, Delta) for i in items) == deltas:
            break
    return items


@pytest.mark.local_model
async def test_cancelling_a_running_stream_admits_the_waiting_one():
    async with LocalProvider(parallel=1) as provider:
        running = provider.stream(params(TOPICS[0], max_tokens=400), MODEL)
        async with aclosing(running):
            await _take(running, 2)
            waiting = asyncio.create_task(collect(provider, params(TOPICS[1], max_tokens=6)))
            await wait_for(lambda: provider.queue_length == 1, within=30)
            assert provider.slots_busy == 1
        # closed: the slot is free once aclose() returns, and the waiting stream got it
        items = await waiting
        assert provider.slots_busy == 0 and provider.queue_length == 0
    queued = [item.position for item in items if isinstance(item, Queued)]
    assert queued == [1, 0]
    assert isinstance(items[-1], Finish) and items[-1].usage.completion_tokens == 6
    assert items.index(Queued(0)) < next(i for i, x in enumerate(items) if isinstance(x, Delta))


@pytest.mark.local_model
async def test_a_stream_closed_while_queued_leaves_the_queue_and_the_rest_move_up():
    async with LocalProvider(parallel=1) as provider:
        running = provider.stream(params(TOPICS[0], max_tokens=400), MODEL)
        async with aclosing(running):
            await _take(running, 1)
            second = asyncio.create_task(collect(provider, params(TOPICS[1], max_tokens=4)))
            await wait_for(lambda: provider.queue_length == 1, within=30)
            third = asyncio.create_task(collect(provider, params(TOPICS[2], max_tokens=4)))
            await wait_for(lambda: provider.queue_length == 2, within=30)
            second.cancel()  # e.g. its client disconnected
            with pytest.raises(asyncio.CancelledError):
                await second
            assert provider.queue_length == 1 and provider.slots_busy == 1
        items = await third
    assert [item.position for item in items if isinstance(item, Queued)] == [2, 1, 0]
    assert isinstance(items[-1], Finish) and items[-1].usage.completion_tokens == 4


@pytest.mark.local_model
async def test_a_long_prompt_is_prefilled_in_chunks_while_three_streams_decode():
    story = " ".join(f"Day {n}: the keeper lit the lamp and watched the sea." for n in range(120))
    long = GenerateParams.model_validate(
        {"messages": [{"role": "user", "content": f"Summarize: {story}"}], "max_tokens": 4}
    )
    order: list[str] = []  # "run" per delta of a running stream; "long:*" marks
    long_items: list[ProviderEvent] = []
    async with LocalProvider(parallel=4, prefill_chunk=256) as provider:
        three_running = asyncio.Event()
        done = asyncio.Event()

        async def run(topic: str) -> list[ProviderEvent]:
            items: list[ProviderEvent] = []
            async with aclosing(provider.stream(params(topic, max_tokens=300), MODEL)) as s:
                async for item in s:
                    items.append(item)
                    if isinstance(item, Delta):
                        order.append("run")
                        if order.count("run") >= 6 and provider.slots_busy == 3:
                            three_running.set()
                    if done.is_set():
                        break
            return items

        async def join() -> None:
            await three_running.wait()
            async for item in provider.stream(long, MODEL):
                long_items.append(item)
                if isinstance(item, Prompt):
                    order.append("long:prompt")
                    busy_after_join = provider.slots_busy
                elif isinstance(item, Delta) and "long:first" not in order:
                    order.append("long:first")
            assert busy_after_join in (3, 4)
            done.set()

        runs = await asyncio.gather(*(run(topic) for topic in TOPICS[:3]), join())
        assert provider.slots_busy == 0
    assert isinstance(long_items[0], Prompt) and long_items[0].tokens >= 1500
    assert isinstance(long_items[-1], Finish)
    between = order[order.index("long:prompt") : order.index("long:first")]
    # 1,500 tokens in chunks of 256 take at least 6 steps, each also decoding the 3 others
    assert between.count("run") >= 3 * 5
    assert all(sum(isinstance(item, Delta) for item in items) > 6 for items in runs[:3])


@pytest.mark.local_model
@pytest.mark.parametrize("prompt_cache", [True, False])
async def test_a_slot_reuses_the_cells_of_a_prompt_prefix_it_kept(prompt_cache):
    async with LocalProvider(parallel=2, prompt_cache=prompt_cache) as provider:
        first = await collect(provider, params(TOPICS[0], max_tokens=8))
        again = await collect(provider, params(TOPICS[0], max_tokens=8))
        reused = provider.stats()["prompt_tokens_cached"]
        other = await collect(provider, params(TOPICS[1], max_tokens=8))
        shared = provider.stats()["prompt_tokens_cached"] - reused
    prompt = first[0]
    assert isinstance(prompt, Prompt) and isinstance(other[0], Prompt)
    assert text_of(again) == text_of(first) and text_of(first)
    if prompt_cache:
        assert reused == prompt.tokens - 1  # all but the last token, whose logits it needs
        assert 10 < shared < other[0].tokens - 1  # the chat template's system turn
    else:
        assert reused == 0 and shared == 0


@pytest.mark.local_model
async def test_closing_the_provider_ends_running_and_waiting_streams_with_an_error():
    provider = LocalProvider(parallel=2)
    await provider.start()
    streams = [provider.stream(params(topic, max_tokens=400), MODEL) for topic in TOPICS[:3]]
    for stream in streams[:2]:
        await _take(stream, 1)
    third = asyncio.create_task(_take(streams[2], 1))
    await wait_for(lambda: provider.queue_length == 1, within=30)
    await provider.aclose()
    for stream in streams[:2]:
        with pytest.raises(ProviderError, match="shut down"):
            await _take(stream, 400)  # the deltas already made, then the error
    with pytest.raises(ProviderError, match="shut down"):  # it was waiting: turned away
        await third
    assert provider.slots_busy == 0 and provider.queue_length == 0
    with pytest.raises(RuntimeError, match="before start"):
        provider.stream(params(TOPICS[0]), MODEL)


# -- through the server -----------------------------------------------------------------------


@pytest.mark.local_model
@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_concurrent_streams_over_the_server_queue_and_complete(transport):
    settings = Settings(provider="local", local_parallel=2)
    with serve(create_app(settings)) as server:
        async with AsyncClient(server.base_url, transport=transport, reconnect=None) as client:
            alone = await client.text(messages(TOPICS[1]), max_tokens=40, temperature=0)
            stop_word = " " + alone.split()[len(alone.split()) // 2]
            seeded = {"max_tokens": 16, "temperature": 0.8, "seed": 5}
            seeded_alone = await client.text(messages(TOPICS[2]), **seeded)

            async def run(topic: str, **fields: Any) -> list[Any]:
                async with client.stream(messages(topic), **fields) as events:
                    return [event async for event in events]

            results = await asyncio.gather(
                run(TOPICS[0], max_tokens=48, temperature=0),
                run(TOPICS[1], max_tokens=40, temperature=0, stop=[stop_word]),
                run(TOPICS[2], **seeded),
            )
    first, stopped, sampled = results
    assert first[-1].finish_reason == "length" and first[-1].usage.completion_tokens == 48
    assert stopped[-1].finish_reason == "stop"
    assert (
        "".join(e.delta for e in stopped if isinstance(e, TextDelta))
        == alone[: alone.index(stop_word)]
    )
    assert "".join(e.delta for e in sampled if isinstance(e, TextDelta)) == seeded_alone
    queued = [[e.position for e in events if isinstance(e, StreamQueued)] for events in results]
    assert [1, 0] in queued  # 3 streams on 2 slots: one waited, and was told so
    for events, positions in zip(results, queued, strict=True):
        if positions:
            kinds = [e.type for e in events]
            assert kinds.index("stream.queued") < kinds.index("text.delta")
            assert kinds[0] == "stream.start"


@pytest.mark.local_model
@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_a_client_that_disconnects_while_queued_leaves_the_queue(transport):
    provider = LocalProvider(parallel=1)
    app = create_app(Settings(provider="local", local_parallel=1), provider=provider)
    with serve(app) as server:
        async with (
            AsyncClient(server.base_url, transport=transport, reconnect=None) as holder,
            AsyncClient(server.base_url, transport=transport, reconnect=None) as waiter,
        ):
            running = holder.stream(messages(TOPICS[0]), max_tokens=2000, temperature=0)
            async for event in running:
                if event.type == "text.delta":
                    break
            queued = waiter.stream(messages(TOPICS[1]), max_tokens=8, temperature=0)
            async for event in queued:
                if isinstance(event, StreamQueued):
                    assert event.position == 1
                    break
            assert server.call(lambda: provider.queue_length) == 1
            await queued.aclose()  # the client goes away while it waits
            await wait_for(lambda: server.call(lambda: provider.queue_length) == 0, within=30)
            assert server.call(lambda: provider.slots_busy) == 1
            await running.cancel()
            events = [event async for event in running]
            await running.aclose()
            assert events[-1].finish_reason == "cancelled"
            await wait_for(lambda: server.call(lambda: provider.slots_busy) == 0, within=30)


@pytest.mark.local_model
async def test_the_first_token_deadline_counts_from_admission():
    # one prefill thread: on a busy shared machine, more threads than free cores make the
    # admitted stream's own prefill slow, and this test is about when the deadline starts
    provider = LocalProvider(parallel=1, prefill_threads=1)
    settings = Settings(provider="local", local_parallel=1, first_token_timeout=3.0)
    async with asgi_client(create_app(settings, provider=provider)) as client:
        holder = provider.stream(params(TOPICS[0], max_tokens=400), MODEL)
        async with aclosing(holder):
            await _take(holder, 1)  # then unread: it keeps the only slot
            body = {"messages": messages(TOPICS[1]), "max_tokens": 5, "temperature": 0}
            waiting = asyncio.create_task(client.post("/v1/streams", json=body))
            await wait_for(lambda: provider.queue_length == 1, within=30)
            await asyncio.sleep(6.0)  # twice the first-token timeout, spent in the queue
        response = await waiting
    kinds = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert kinds[:3] == ["stream.start", "stream.queued", "stream.queued"]
    assert "error" not in kinds and kinds.count("text.delta") >= 1, response.text
    assert '"finish_reason":"length"' in response.text


@pytest.mark.local_model
async def test_metrics_show_the_slots_the_queue_and_the_engine_counters_at_scrape_time():
    app = create_app(Settings(provider="local", local_parallel=2))
    provider = provider_of(app)
    assert isinstance(provider, LocalProvider)
    with serve(app) as server:
        async with (
            AsyncClient(server.base_url, reconnect=None) as client,
            httpx.AsyncClient(base_url=server.base_url) as http,
        ):

            async def scrape() -> dict[str, float]:
                response = await http.get("/metrics")
                assert response.status_code == 200
                return {
                    sample.name: sample.value
                    for family in text_string_to_metric_families(response.text)
                    for sample in family.samples
                    if sample.name.startswith("tokenwire_provider_")
                }

            idle = await scrape()
            streams = [
                client.stream(messages(topic), max_tokens=2000, temperature=0)
                for topic in TOPICS[:3]
            ]
            for stream in streams[:2]:  # both slots decoding
                async for event in stream:
                    if event.type == "text.delta":
                        break
            async for event in streams[2]:  # the third waits
                if isinstance(event, StreamQueued):
                    break
            busy = await scrape()
            for stream in streams:
                await stream.aclose()  # cancels it on the server

            def held() -> int:
                return int(server.call(lambda: provider.slots_busy + provider.queue_length))

            await wait_for(lambda: held() == 0, within=30)
            after = await scrape()
            await client.text(messages(TOPICS[0]), max_tokens=4, temperature=0)
            await client.text(messages(TOPICS[0]), max_tokens=4, temperature=0)
            cached = await scrape()
    assert idle["tokenwire_provider_slots"] == 2 and idle["tokenwire_provider_slots_busy"] == 0
    assert idle["tokenwire_provider_queue_streams"] == 0
    assert busy["tokenwire_provider_slots_busy"] == 2
    assert busy["tokenwire_provider_queue_streams"] == 1
    assert after["tokenwire_provider_slots_busy"] == 0
    assert after["tokenwire_provider_queue_streams"] == 0
    steps = "tokenwire_provider_decode_steps_total"
    assert idle[steps] < busy[steps] <= after[steps] < cached[steps]
    prompt_cache = "tokenwire_provider_prompt_tokens_cached_total"
    assert cached[prompt_cache] > after[prompt_cache]  # the same prompt again: its cells kept
