"""The registry's drain signal."""

from __future__ import annotations

import asyncio

from tokenwire.streams.registry import DrainSignal

# -- drain signal --------------------------------------------------------------------------


async def test_drain_signal_calls_watchers_once_and_forgets_unwatched_ones():
    signal = DrainSignal()
    calls: list[str] = []
    signal.watch(lambda: calls.append("a"))
    unwatch = signal.watch(lambda: calls.append("b"))
    unwatch()
    signal.set()
    signal.set()
    assert calls == ["a"] and signal.is_set()
    signal.watch(lambda: calls.append("late"))  # after the drain began: soon, not never
    await asyncio.sleep(0)
    assert calls == ["a", "late"]
