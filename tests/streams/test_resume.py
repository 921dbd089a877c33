"""Resume on one server (the memory stream log), the same on SSE and WebSocket, over real
uvicorn sockets: forced disconnects at random cursors, detached starts, resume after the end,
unserveable cursors, and the detach grace."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx
import pytest

from tests.helpers import UvicornThread, scripted_app, serve, wait_for
from tests.streams.test_semantics import USER, Peer, text_of
from tokenwire.protocol.events import StreamEnd, TextDelta
from tokenwire.providers.scripted import Script, scripted_text
from tokenwire.settings import Settings
from tokenwire.streams.log import CursorAhead, CursorExpired, MemoryStreamLog, UnknownStream


async def resume(transport: str, server: UvicornThread, stream_id: str, after_seq: int) -> Peer:
    """A peer that resumes ``stream_id`` after ``after_seq`` (SSE: Last-Event-ID; WebSocket: a
    ``resume`` message on a new socket)."""
    peer = Peer(transport)
    if transport == "sse":
        http = await peer._stack.enter_async_context(httpx.AsyncClient(timeout=None))
        headers = {"Last-Event-ID": str(after_seq)} if after_seq else {}
        response = await peer._stack.enter_async_context(
            http.stream("GET", f"{server.base_url}/v1/streams/{stream_id}/events", headers=headers)
        )
        assert response.status_code == 200, response.status_code
        peer._chunks = response.aiter_raw()
    else:
        await peer._connect_ws(server.port)
        message = {"type": "resume", "stream_id": stream_id, "after_seq": after_seq}
        peer._send_ws(json.dumps(message))
    return peer


async def detached(server: UvicornThread, **body: Any) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            server.base_url + "/v1/streams",
            json={"messages": USER, **body},
            headers={"Accept": "application/json"},
        )
    assert response.status_code == 201, response.text
    return dict(response.json())


# -- forced disconnects ----------------------------------------------------------------------


async def forced_disconnects(
    transport: str,
    start_on: UvicornThread,
    resume_on: list[UvicornThread],
    *,
    drops: int,
    tokens: int,
    rng: random.Random,
) -> None:
    """Start streams on ``start_on`` and cut each connection after a random number (1..12) of
    events, resuming after the last seq seen on a server picked from ``resume_on``, until
    ``drops`` connections were cut. Each stream's text must be exactly the provider's, with no
    seq twice."""
    dropped = 0
    while dropped < drops:
        peer = await Peer.open(transport, start_on)
        start = await peer.event()
        assert start is not None and start["type"] == "stream.start"
        stream_id, last_seq, text, ended = start["stream_id"], start["seq"], [], False
        while not ended:
            for _ in range(rng.randint(1, 12)):
                event = await peer.event()
                assert event is not None, "the connection closed before stream.end"
                if event["type"] == "stream.resumed":
                    assert event["after_seq"] == last_seq
                    continue
                assert event["seq"] > last_seq, f"seq {event['seq']} again after {last_seq}"
                last_seq = event["seq"]
                if event["type"] == "text.delta":
                    text.append(event["delta"])
                if event["type"] == "stream.end":
                    assert event["finish_reason"] == "stop", event
                    ended = True
                    break
            await peer.vanish()
            if not ended:
                dropped += 1
                peer = await resume(transport, rng.choice(resume_on), stream_id, last_seq)
        assert "".join(text) == scripted_text(tokens)


async def test_random_forced_disconnects_lose_and_duplicate_nothing(transport):
    """200 forced disconnects at random cursors, each followed by a resume after the last seq
    seen: every stream's text is exactly the provider's, and no seq arrives twice."""
    app, _ = scripted_app(Script(tokens=300, interval=0.001), on_disconnect="detach")
    with serve(app) as server:
        await forced_disconnects(
            transport, server, [server], drops=200, tokens=300, rng=random.Random(4)
        )
        await wait_for(lambda: len(app.state.tokenwire.registry) == 0, within=20)


async def test_detached_start_streams_from_the_events_url():
    app, _ = scripted_app(Script(tokens=20, interval=0.001))
    with serve(app) as server:
        created = await detached(server)
        assert created["stream_id"].startswith("str_")
        assert created["events_url"] == (
            f"{server.base_url}/v1/streams/{created['stream_id']}/events"
        )
        async with httpx.AsyncClient() as http:
            response = await http.get(created["events_url"])
    body = response.text
    assert body.startswith("retry: 1000\n\n")
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[:1]] == ["stream.start"]
    assert events[-1]["type"] == "stream.end"
    assert text_of(events) == scripted_text(20)


async def test_a_detached_start_refuses_the_cancel_policy():
    app, _ = scripted_app()
    with serve(app) as server:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                server.base_url + "/v1/streams",
                json={"messages": USER, "on_disconnect": "cancel"},
                headers={"Accept": "application/json"},
            )
    assert response.status_code == 422
    assert "on_disconnect" in response.json()["error"]["message"]


# -- after the end -------------------------------------------------------------------------------


async def test_resume_after_the_end_replays_the_rest_and_its_end(transport):
    app, _ = scripted_app(Script(tokens=10))
    with serve(app) as server:
        created = await detached(server)
        registry = app.state.tokenwire.registry
        await wait_for(lambda: len(registry) == 0)
        async with await resume(transport, server, created["stream_id"], 4) as peer:
            events = await peer.rest()
    assert events[0] == {
        "type": "stream.resumed",
        "stream_id": created["stream_id"],
        "after_seq": 4,
    }
    assert [e["seq"] for e in events[1:]] == list(range(5, 13))
    assert text_of(events) == scripted_text(10)[len(scripted_text(3)) :]
    assert events[-1]["type"] == "stream.end"


async def test_an_event_source_reconnecting_after_the_end_gets_204():
    """A browser's EventSource reconnects when a response ends; 204 stops it for good (WHATWG
    HTML 9.2.3), and nothing is restarted."""
    app, provider = scripted_app(Script(tokens=5))
    with serve(app) as server:
        created = await detached(server)
        await wait_for(lambda: len(app.state.tokenwire.registry) == 0)
        url = created["events_url"]
        async with httpx.AsyncClient() as http:
            by_header = await http.get(url, headers={"Last-Event-ID": "7"})
            by_query = await http.get(url, params={"last_event_id": "7"})
            header_wins = await http.get(
                url, params={"last_event_id": "2"}, headers={"Last-Event-ID": "7"}
            )
    assert [by_header.status_code, by_query.status_code, header_wins.status_code] == [204] * 3
    assert len(provider.records) == 1


# -- unserveable cursors -----------------------------------------------------------------------


async def test_an_unknown_stream_gets_stream_reset(transport):
    app, _ = scripted_app()
    with serve(app) as server:
        async with await resume(transport, server, "str_nobody", 3) as peer:
            event = await peer.event()
    assert event == {"type": "stream.reset", "stream_id": "str_nobody", "reason": "unknown_stream"}


async def test_an_expired_cursor_gets_stream_reset_not_a_partial_replay(transport):
    app, _ = scripted_app(Script(tokens=30), stream_log_max_events=8)
    with serve(app) as server:
        created = await detached(server)
        await wait_for(lambda: len(app.state.tokenwire.registry) == 0)
        async with await resume(transport, server, created["stream_id"], 3) as peer:
            event = await peer.event()
        async with await resume(transport, server, created["stream_id"], 24) as peer:
            kept = await peer.rest()
    assert event == {"type": "stream.reset", "stream_id": created["stream_id"], "reason": "expired"}
    assert [e.get("seq") for e in kept] == [None, *range(25, 33)]


@pytest.mark.parametrize(
    ("cursor", "message"),
    [("99", "cursor 99 is ahead of stream"), ("-1", "must be a seq"), ("abc", "must be a seq")],
)
async def test_a_bad_cursor_is_an_invalid_request(cursor, message):
    app, _ = scripted_app(Script(tokens=3))
    with serve(app) as server:
        created = await detached(server)
        await wait_for(lambda: len(app.state.tokenwire.registry) == 0)
        async with httpx.AsyncClient() as http:
            response = await http.get(created["events_url"], headers={"Last-Event-ID": cursor})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert message in response.json()["error"]["message"]


# -- WebSocket specifics -------------------------------------------------------------------------


async def test_websocket_resume_on_the_same_socket_and_twice_is_refused():
    app, _ = scripted_app(Script(tokens=200, interval=0.005), on_disconnect="detach")
    with serve(app) as server:
        created = await detached(server)
        async with await resume("websocket", server, created["stream_id"], 0) as peer:
            first = [await peer.event() for _ in range(3)]
            peer._send_ws(json.dumps({"type": "resume", "stream_id": created["stream_id"]}))
            events = await peer.rest()
    assert [e["seq"] for e in first] == [1, 2, 3]
    refusals = [e for e in events if e["type"] == "error"]
    assert refusals and "already delivered on this socket" in refusals[0]["message"]
    assert "stream_id" not in refusals[0]
    assert text_of(first + events) == scripted_text(200)


# -- detach grace ---------------------------------------------------------------------------------


async def test_detach_grace_cancels_a_stream_nobody_resumes(transport):
    app, provider = scripted_app(
        Script(tokens=10_000, interval=0.01), on_disconnect="detach", detach_grace=0.3
    )
    with serve(app) as server:
        peer = await Peer.open(transport, server)
        await peer.event()
        await peer.vanish()
        await wait_for(lambda: provider.records[0].closed_at is not None, within=5)
        await asyncio.sleep(0.05)
        stream_id = next(iter(app.state.tokenwire.stream_log._ended_streams))
        async with await resume(transport, server, stream_id, 1) as late:
            events = await late.rest()
    assert events[-1]["type"] == "stream.end"
    assert events[-1]["finish_reason"] == "cancelled"
    assert not provider.records[0].completed


async def test_a_resume_within_the_grace_keeps_the_stream_and_cancel_still_stops_it(transport):
    app, provider = scripted_app(
        Script(tokens=10_000, interval=0.01), on_disconnect="detach", detach_grace=0.5
    )
    with serve(app) as server:
        peer = await Peer.open(transport, server)
        start = await peer.event()
        await peer.vanish()
        await asyncio.sleep(0.3)
        async with await resume(transport, server, start["stream_id"], 1) as back:
            await back.event()  # stream.resumed
            await asyncio.sleep(0.5)  # past the grace that began at the disconnect
            assert provider.records[0].closed_at is None
            async with httpx.AsyncClient() as http:
                response = await http.post(
                    f"{server.base_url}/v1/streams/{start['stream_id']}/cancel"
                )
            events = await back.rest()
    assert response.json() == {"stream_id": start["stream_id"], "status": "cancelled"}
    assert events[-1]["finish_reason"] == "cancelled"
    await wait_for(lambda: provider.records[0].closed_at is not None)


# -- the memory log on its own ---------------------------------------------------------------


def _delta(seq: int, text: str = "x") -> TextDelta:
    return TextDelta(stream_id="s", seq=seq, delta=text)


async def test_memory_log_bounds_ttl_and_cursors():
    log = MemoryStreamLog.from_settings(
        Settings(stream_log_max_events=4, stream_log_max_bytes=10_000, stream_log_ttl=0.2)
    )
    log.begin("s")
    for seq in range(1, 7):
        log.append("s", _delta(seq))
    events, ended = log.snapshot("s", 3)
    assert [e.seq for e in events] == [4, 5, 6] and not ended
    with pytest.raises(CursorExpired):
        log.snapshot("s", 1)
    with pytest.raises(CursorAhead):
        log.snapshot("s", 7)
    log.append("s", StreamEnd(stream_id="s", seq=7, finish_reason="stop", usage=None))
    assert log.snapshot("s", 3) is None  # not live any more: read it through a reader
    reader = await log.open_reader("s", 5)
    assert reader.ended and [e.seq for e in reader.catch_up] == [6, 7]
    await asyncio.sleep(0.25)
    with pytest.raises(UnknownStream):
        await log.open_reader("s", 5)


async def test_memory_log_bounds_bytes_per_stream():
    log = MemoryStreamLog.from_settings(
        Settings(stream_log_max_events=1000, stream_log_max_bytes=2048)
    )
    log.begin("s")
    for seq in range(1, 21):
        log.append("s", _delta(seq, "y" * 100))  # 464 bytes each as counted
    events, _ = log.snapshot("s", 16)
    assert [e.seq for e in events] == [17, 18, 19, 20]
    with pytest.raises(CursorExpired):
        log.snapshot("s", 15)
