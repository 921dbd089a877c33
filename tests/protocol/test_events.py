"""The text delta's direct JSON encoding: byte for byte the serializer's, and still validated."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from tokenwire.protocol import sse
from tokenwire.protocol import websocket as ws_codec
from tokenwire.protocol.events import TextDelta, event_json, parse_event


class _DeltaModel(BaseModel):
    """What TextDelta was before it became a dataclass: the reference serializer."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: str = "text.delta"
    stream_id: str
    seq: int
    delta: str


@settings(max_examples=300, deadline=None)
@given(
    stream_id=st.text(min_size=1, max_size=30),
    seq=st.integers(min_value=0, max_value=2**53),
    delta=st.text(max_size=60),
)
def test_text_delta_json_is_the_serializer_s_byte_for_byte(stream_id, seq, delta):
    event = TextDelta(stream_id=stream_id, seq=seq, delta=delta)
    reference = _DeltaModel(stream_id=stream_id, seq=seq, delta=delta).model_dump_json()
    assert event_json(event) == reference
    assert ws_codec.encode_event(event) == reference
    assert (
        sse.encode_event(event) == f"id: {seq}\nevent: text.delta\ndata: {reference}\n\n".encode()
    )
    assert parse_event(reference) == event


def test_text_delta_parsing_still_validates():
    good = {"type": "text.delta", "stream_id": "s", "seq": 1, "delta": "x"}
    assert parse_event(json.dumps(good)) == TextDelta(stream_id="s", seq=1, delta="x")
    for bad in (
        {**good, "extra": 1},
        {**good, "seq": "one"},
        {k: good[k] for k in good if k != "delta"},
    ):
        with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
            parse_event(json.dumps(bad))
