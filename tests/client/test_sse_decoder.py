"""The client's incremental SSE decoder against the WHATWG rules, on any chunk split."""

from __future__ import annotations

import functools

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import scripted_app, serve
from tokenwire.protocol import sse
from tokenwire.protocol.events import FinishReason, StreamEnd, StreamStart, TextDelta, parse_event
from tokenwire.providers.scripted import Script, scripted_text
from tokenwire_client.sse import ServerSentEvent, SSEDecoder


def decode_all(chunks: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.decode(chunk)]
    return events + decoder.flush()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


def test_line_endings_comments_multiline_and_last_id():
    stream = (
        "\ufeff: a comment\r\n"
        "id: 7\r\nevent: greet\r\ndata: a\r\ndata:b\r\n\r\n"
        "data: c\n\n"  # keeps the last event id
        "id: x\0y\rdata: d\r\r"  # an id with NUL is ignored
        "retry: 12a\nretry: 1500\ndata: e\n\n"
        "event: empty\n\n"  # no data: not dispatched
        "data: unfinished"  # dropped at EOF
    ).encode()
    assert decode_all([stream]) == [
        ServerSentEvent(data="a\nb", event="greet", id="7"),
        ServerSentEvent(data="c", id="7"),
        ServerSentEvent(data="d", id="7"),
        ServerSentEvent(data="e", id="7", retry=1500),
    ]


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_any_chunk_split_gives_the_same_events(cuts):
    stream = "id: 1\r\ndata: é🙂\r\n\r\ndata: x\r\rdata: y\n\n: ping\n\nid: 2\ndata: z\n\n".encode()
    assert decode_all(split(stream, cuts)) == decode_all([stream])
    assert [e.data for e in decode_all([stream])] == ["é🙂", "x", "y", "z"]


@given(
    st.lists(st.text(max_size=20), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
)
def test_server_frames_round_trip_through_the_decoder(deltas, cuts):
    events = [StreamStart(stream_id="s", seq=1, model="m", created=0)]
    events += [TextDelta(stream_id="s", seq=i + 2, delta=d) for i, d in enumerate(deltas)]
    events.append(
        StreamEnd(stream_id="s", seq=len(deltas) + 2, finish_reason=FinishReason.STOP, usage=None)
    )
    wire = sse.PING + b"".join(sse.encode_event(event) for event in events)
    decoded = decode_all(split(wire, cuts))
    assert [parse_event(e.data) for e in decoded] == events
    assert [e.id for e in decoded] == [str(event.seq) for event in events]
    assert [e.event for e in decoded] == [event.type for event in events]


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        # a field with no colon has an empty value; `data` alone adds an empty line
        (b"data\ndata\n\n", [ServerSentEvent(data="\n")]),
        # only one leading space is stripped; unknown fields are ignored
        (b"data:  two\nfoo: bar\n\n", [ServerSentEvent(data=" two")]),
        # an empty `id` resets the last event id
        (
            b"id: 5\ndata: a\n\nid\ndata: b\n\n",
            [ServerSentEvent("a", id="5"), ServerSentEvent("b", id="")],
        ),
        # `retry` must be all digits, and is kept across events
        (
            b"retry: -1\ndata: a\n\nretry: 250\n\ndata: b\n\n",
            [ServerSentEvent("a"), ServerSentEvent("b", retry=250)],
        ),
        # a BOM is dropped at the start only
        ("\ufeffdata: a\n\n\ufeffdata: b\n\n".encode(), [ServerSentEvent("a")]),
        # CR alone ends lines, CR LF is one line end
        (b"data: a\rdata: b\r\n\r\n", [ServerSentEvent("a\nb")]),
    ],
)
def test_whatwg_field_rules(stream, expected):
    assert decode_all([stream]) == expected
    assert decode_all([bytes([b]) for b in stream]) == expected  # one byte at a time


@functools.cache
def real_server_bytes() -> bytes:
    """What a real uvicorn sends for one stream: heartbeats while waiting, then the events."""
    app, _ = scripted_app(Script(tokens=12, ttft=0.05, interval=0.002), heartbeat_interval=0.01)
    with serve(app) as server:
        body = {"messages": [{"role": "user", "content": "é 🙂 \r\n"}]}
        return httpx.post(f"{server.base_url}/v1/streams", json=body, timeout=10).content


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=100_000), max_size=30))
def test_the_bytes_our_server_sends_decode_on_any_split(cuts):
    wire = real_server_bytes()
    assert wire.count(b": ping\n\n") >= 1
    events = [parse_event(sse.data) for sse in decode_all(split(wire, cuts))]
    assert isinstance(events[0], StreamStart) and isinstance(events[-1], StreamEnd)
    assert "".join(e.delta for e in events if isinstance(e, TextDelta)) == scripted_text(12)
    assert [e.seq for e in events] == sorted({e.seq for e in events})
