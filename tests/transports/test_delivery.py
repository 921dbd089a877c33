"""The delivery loop's decisions, fed directly (no I/O, no event loop): merging, the write
window, the cursor, eviction, timers and catch-up batches."""

from __future__ import annotations

import math

import pytest

from tests.helpers import delta, end
from tokenwire.errors import ErrorCode
from tokenwire.protocol.events import (
    ErrorEvent,
    Event,
    FinishReason,
    ReasoningDelta,
    StreamEnd,
    StreamStart,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from tokenwire.transports.delivery import (
    CATCH_UP_BATCH,
    DeliveryState,
    Tick,
    merge_deltas,
)


def test_merge_deltas_joins_each_run_and_keeps_the_last_seq():
    start = StreamStart(stream_id="s", seq=1, model="m", created=0)
    batch: list[Event] = [start, delta(2, "a"), delta(3, "b"), delta(4, "c"), end(5)]
    assert merge_deltas(batch) == [start, delta(4, "abc"), end(5)]
    assert merge_deltas([delta(7, "only")]) == [delta(7, "only")]


def test_merging_never_reorders_across_other_events():
    error = ErrorEvent(stream_id="s", seq=4, code=ErrorCode.PROVIDER_ERROR, message="x")
    batch: list[Event] = [delta(2, "a"), delta(3, "b"), error, delta(5, "c"), end(6)]
    assert merge_deltas(batch) == [delta(3, "ab"), error, delta(5, "c"), end(6)]


def test_merging_joins_runs_of_one_kind_and_one_call_only():
    def reasoning(seq: int, text: str) -> ReasoningDelta:
        return ReasoningDelta(stream_id="s", seq=seq, delta=text)

    def arguments(seq: int, index: int, text: str) -> ToolCallDelta:
        return ToolCallDelta(stream_id="s", seq=seq, index=index, delta=text)

    start = ToolCallStart(stream_id="s", seq=7, index=1, call_id="c1", name="f")
    batch: list[Event] = [
        reasoning(1, "a"),
        reasoning(2, "b"),
        delta(3, "c"),
        delta(4, "d"),
        arguments(5, 0, "{"),
        arguments(6, 0, "}"),
        start,
        arguments(8, 1, "["),
        arguments(9, 0, " "),  # call 0 again: not joined across call 1's piece
        arguments(10, 1, "]"),
        reasoning(11, "e"),
    ]
    assert merge_deltas(batch) == [
        reasoning(2, "ab"),
        delta(4, "cd"),
        arguments(6, 0, "{}"),
        start,
        arguments(8, 1, "["),
        arguments(9, 0, " "),
        arguments(10, 1, "]"),
        reasoning(11, "e"),
    ]


def test_the_write_window_holds_reasoning_and_arguments_like_text():
    state = DeliveryState(write_delay=0.01)
    reasoning = ReasoningDelta(stream_id="s", seq=1, delta="r")
    assert state.hold([reasoning], now=1.0, room=True) == 0.0  # after a pause: at once
    hold = state.hold([ToolCallDelta(stream_id="s", seq=2, index=0, delta="x")], 1.002, room=True)
    assert hold == pytest.approx(0.008)


def test_catch_up_goes_out_in_bounded_batches_in_order():
    state = DeliveryState()
    catch_up: list[Event] = [delta(seq) for seq in range(1, 2 * CATCH_UP_BATCH + 2)]
    batches = list(state.catch_up_batches(catch_up))
    assert [len(b) for b in batches] == [CATCH_UP_BATCH, CATCH_UP_BATCH, 1]
    assert [e for b in batches for e in b] == catch_up


def test_the_cursor_follows_the_last_numbered_event_written():
    state = DeliveryState()
    state.written([delta(3), delta(4)])
    assert state.cursor == 4
    state.written([end(9)])
    assert state.cursor == 9


def test_eviction_is_error_then_end_at_the_cursor():
    state = DeliveryState()
    state.written([delta(7)])
    usage = Usage.of(2, 7)
    error, ending = state.eviction("s", usage)
    assert isinstance(error, ErrorEvent) and error.code is ErrorCode.SLOW_CONSUMER
    assert error.seq == 7 and error.retryable
    assert isinstance(ending, StreamEnd) and ending.seq == 7
    assert ending.finish_reason is FinishReason.ERROR and ending.usage == usage


def test_without_a_write_delay_nothing_is_held():
    state = DeliveryState(write_delay=0.0)
    assert state.hold([delta(1)], now=10.0, room=True) == 0
    assert state.may_write_at_once(delta(2), now=10.0)


def test_the_write_window_holds_text_only_mid_burst():
    state = DeliveryState(write_delay=0.05)
    assert state.last_delta_write == -math.inf
    assert state.hold([delta(1)], now=1.0, room=True) == 0  # the first text: at once
    assert state.hold([delta(2)], now=1.01, room=True) == pytest.approx(0.04)  # mid-burst
    state.text_written_at(1.05)
    assert state.hold([delta(3)], now=1.2, room=True) == 0  # after a pause: at once
    assert state.hold([delta(4)], now=1.21, room=False) == 0  # a full queue never waits
    assert state.hold([end(5)], now=1.22, room=True) == 0  # other events never wait


def test_a_delta_goes_out_at_once_only_outside_the_window_and_between_writes():
    state = DeliveryState(write_delay=0.05)
    assert state.may_write_at_once(delta(1), now=1.0)
    assert not state.may_write_at_once(delta(2), now=1.02)  # inside the window
    assert state.may_write_at_once(delta(3), now=1.06)
    assert not state.may_write_at_once(end(4), now=2.0)  # only text deltas
    state.begin_write(2.0)
    assert not state.may_write_at_once(delta(5), now=3.0)  # a write is under way
    state.end_write()
    assert state.may_write_at_once(delta(5), now=3.0)


def test_ticks_report_a_due_heartbeat_and_a_stuck_write():
    state = DeliveryState(heartbeat_interval=10.0, send_timeout=4.0, now=0.0)
    assert state.tick_interval == 2.0
    assert state.tick(3.0) is Tick.IDLE
    assert state.tick(10.0) is Tick.HEARTBEAT
    state.begin_write(10.0)
    assert state.tick(13.0) is Tick.IDLE  # a write in progress owes no heartbeat
    assert state.tick(14.0) is Tick.TIMED_OUT
    state.end_write()
    assert state.tick(15.0) is Tick.IDLE
    assert DeliveryState().tick_interval is None  # no timers at all
