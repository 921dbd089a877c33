"""The memory stream log's window: bounded by events and bytes, sliced by seq; deltas kept
as text."""

from __future__ import annotations

import gc

import pytest

from tests.helpers import delta
from tokenwire.protocol.events import (
    ReasoningDelta,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from tokenwire.streams.log import CursorExpired, MemoryStreamLog, StreamRecord

# -- stream log window ------------------------------------------------------------------------


def test_stream_record_keeps_a_window_and_slices_it_by_seq():
    record = StreamRecord("s")
    for seq in range(1, 11):
        record.add(delta(seq), max_events=4, max_bytes=1 << 20)
    assert [e.seq for e in record.events] == [7, 8, 9, 10]
    assert [e.seq for e in record.after("s", 8)] == [9, 10]
    assert [e.seq for e in record.after("s", 6)] == [7, 8, 9, 10]
    assert record.after("s", 10) == []
    with pytest.raises(CursorExpired):
        record.after("s", 5)
    with pytest.raises(ValueError, match="does not follow"):
        record.add(delta(12), max_events=4, max_bytes=1 << 20)


def test_stream_record_rebuilds_deltas_and_keeps_no_event_objects_alive():
    """A kept delta is its text: no object for the garbage collector to walk per token."""
    record = StreamRecord("s-gc")
    record.add(StreamStart(stream_id="s-gc", seq=1, model="m", created=0), 100, 1 << 20)
    for seq in range(2, 52):
        record.add(TextDelta(stream_id="s-gc", seq=seq, delta=f"t{seq} "), 100, 1 << 20)
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, TextDelta) and o.stream_id == "s-gc"]
    assert alive == []
    events = record.after("s-gc", 40)
    assert events == [TextDelta(stream_id="s-gc", seq=n, delta=f"t{n} ") for n in range(41, 52)]
    assert isinstance(record.events[0], StreamStart)
    with pytest.raises(ValueError, match="s-other"):
        record.add(TextDelta(stream_id="s-other", seq=52, delta="x"), 100, 1 << 20)


def test_memory_log_bounds_by_bytes_too():
    log = MemoryStreamLog(max_events=1000, max_bytes=1024, ttl=60)
    log.begin("s")
    for seq in range(1, 201):
        log.append("s", delta(seq, "word "))
    snapshot = log.snapshot("s", 199)
    assert snapshot is not None and [e.seq for e in snapshot[0]] == [200]
    with pytest.raises(CursorExpired):
        log.snapshot("s", 1)


def test_the_byte_bound_counts_the_text_of_reasoning_and_tool_call_events():
    log = MemoryStreamLog(max_events=1000, max_bytes=4096, ttl=60)
    log.begin("s")
    big = "x" * 1000  # 4000 bytes by the UTF-8 upper bound: one such event fills the bound
    log.append("s", ReasoningDelta(stream_id="s", seq=1, delta=big))
    log.append("s", ToolCallStart(stream_id="s", seq=2, index=0, call_id="c", name="f"))
    log.append("s", ToolCallDelta(stream_id="s", seq=3, index=0, delta=big))
    end = ToolCallEnd(stream_id="s", seq=4, index=0, call_id="c", name="f", arguments=big)
    log.append("s", end)
    snapshot = log.snapshot("s", 3)
    assert snapshot is not None and snapshot[0] == [end]
    with pytest.raises(CursorExpired):
        log.snapshot("s", 0)


def test_every_kind_of_delta_reads_back_as_it_was_appended():
    """Deltas are kept as their text (and a tool call's index), not as events: a snapshot
    rebuilds each as it was appended, in order, whatever its kind."""
    log = MemoryStreamLog(max_events=1000, max_bytes=1 << 20, ttl=60)
    log.begin("s")
    events = [
        ReasoningDelta("s", 1, "thinking"),
        ReasoningDelta("s", 2, " more"),
        ToolCallStart(stream_id="s", seq=3, index=1, call_id="c", name="f"),
        ToolCallDelta("s", 4, 1, '{"a":'),
        ToolCallDelta("s", 5, 1, "1}"),
        delta(6, "answer"),
        ToolCallEnd(stream_id="s", seq=7, index=1, call_id="c", name="f", arguments='{"a":1}'),
    ]
    for event in events:
        log.append("s", event)
    snapshot = log.snapshot("s", 0)
    assert snapshot is not None
    assert snapshot[0] == events
    assert [type(event) for event in snapshot[0]] == [type(event) for event in events]
    assert log.snapshot("s", 3) == (events[3:], False)
    with pytest.raises(ValueError, match="a delta of other"):
        log.append("s", ReasoningDelta("other", 8, "x"))
