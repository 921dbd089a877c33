"""The benchmark's rich workload, with no load generator: the scheduled scripted provider adds
reasoning and tool-call events around the schedule's text tokens, whose text and count stay
the text workload's (what the load generator counts and times)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tokenwire.protocol.events import FinishReason
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import Delta, Finish, Reasoning, ToolArguments, ToolCall
from tokenwire.providers.scripted import Script, scripted_text, scripted_tool_calls

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from transport.harness import PROFILES, RICH_WORKLOAD  # noqa: E402
from transport.servers import ScheduledScriptedProvider  # noqa: E402
from transport.source import Schedule, request_fields  # noqa: E402


async def test_the_rich_workload_keeps_the_schedules_text_and_adds_reasoning_and_calls():
    provider = ScheduledScriptedProvider(
        Script(reasoning_tokens=3, tool_calls=2, tool_call_pieces=4, interleave_tool_calls=True)
    )
    schedule = Schedule(time.monotonic(), tokens=5, ttft=0.0, interval=0.0)
    params = GenerateParams.model_validate(request_fields(schedule))
    items = [item async for item in provider.stream(params, "scripted")][1:]  # after Prompt
    kinds = [type(item).__name__ for item in items]
    assert kinds[:7] == ["Reasoning", "Delta"] * 3 + ["Delta"]
    assert "".join(i.text for i in items if isinstance(i, Delta)) == scripted_text(5)
    assert sum(isinstance(i, Reasoning) for i in items) == 3
    starts = [(i.call_id, i.name) for i in items if isinstance(i, ToolCall)]
    assert starts == [(c, n) for c, n, _ in scripted_tool_calls(2)]
    assert sum(isinstance(i, ToolArguments) for i in items) == 8
    finish = items[-1]
    assert isinstance(finish, Finish) and finish.reason is FinishReason.TOOL_CALLS
    assert PROFILES["quick-rich"].tokenwire_env == RICH_WORKLOAD
    assert PROFILES["quick"].tokenwire_env == {}
