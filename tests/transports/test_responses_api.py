"""The OpenAI Responses API, driven by the official ``openai`` SDK, unmodified, against a real
uvicorn: streamed and not, background + a dropped connection + resume by sequence_number,
cancel, previous_response_id, reasoning and tool calls, WebSocket mode
(``client.responses.connect()``), and bad input answered in OpenAI's error shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.helpers import UvicornThread, scripted_app, serve
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.scripted import (
    Script,
    scripted_reasoning,
    scripted_text,
    scripted_tool_calls,
)

STREAM_EVENTS = TypeAdapter(ResponseStreamEvent)
# The SDK's sync connect() opens its websockets connection outside a context manager, which
# websockets >= 17.1 flags as deprecated: the SDK's own code, not ours.
SDK_CONNECT_WARNING = pytest.mark.filterwarnings(
    "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning"
)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Today's weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}

SCRIPTS = {
    "long": Script(tokens=60, interval=0.005),  # long enough to drop mid-way
    "stalled": Script(tokens=10, stall_after=2, stall=60.0),  # runs until cancelled
    "slow": Script(tokens=6, stall_after=2, stall=0.5),  # in flight for a while
}
ASKED: list[GenerateParams] = []


def script_for(params: GenerateParams) -> Script:
    """The last user message names the script; tools offered -> call them (reasoning first
    when an effort is asked); a tool result -> a short answer."""
    ASKED.append(params)
    last = params.messages[-1]
    reasoning = 3 if params.reasoning_effort else 0
    if last.role == "tool":
        return Script(tokens=5, reasoning_tokens=reasoning)
    if params.tools:
        return Script(tokens=0, reasoning_tokens=reasoning, tool_calls=len(params.tools))
    return SCRIPTS.get(last.content, Script(tokens=12, reasoning_tokens=reasoning))


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornThread]:
    app, provider = scripted_app()
    provider.script_for = script_for
    with serve(app) as running:
        yield running


@pytest.fixture
def client(server: UvicornThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0) as sdk:
        yield sdk


def deltas(events: list[Any], kind: str = "output_text") -> str:
    return "".join(e.delta for e in events if e.type == f"response.{kind}.delta")


def test_streamed_events_come_in_openais_order_with_increasing_sequence_numbers(client):
    with client.responses.create(model="scripted", input="hi", stream=True) as stream:
        events = list(stream)
    for event in events:  # the SDK constructs; validate strictly too
        STREAM_EVENTS.validate_python(event.model_dump(mode="json", exclude_unset=True))
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    numbers = [e.sequence_number for e in events]
    assert numbers[0] == 0 and all(a < b for a, b in zip(numbers, numbers[1:], strict=False))
    assert deltas(events) == scripted_text(12)
    done = events[-1].response
    assert done.status == "completed" and done.output_text == scripted_text(12)
    assert done.usage is not None and done.usage.output_tokens == 12


def test_the_non_streamed_output_text_equals_the_streamed_text(client):
    with client.responses.create(model="scripted", input="hi", stream=True) as stream:
        streamed = deltas(list(stream))
    response = client.responses.create(model="scripted", input="hi", instructions="Be brief.")
    assert response.output_text == streamed == scripted_text(12)
    assert response.status == "completed" and response.instructions == "Be brief."
    assert client.responses.retrieve(response.id).output_text == streamed


def drop_after(stream: Any, text_events: int) -> tuple[str, int, str]:
    """Read ``stream`` until ``text_events`` text deltas came, then drop the connection.
    Returns (response id, last sequence_number seen, text seen)."""
    seen: list[Any] = []
    for event in stream:
        seen.append(event)
        if sum(e.type == "response.output_text.delta" for e in seen) == text_events:
            break
    stream.close()
    return seen[0].response.id, seen[-1].sequence_number, deltas(seen)


def test_background_drop_then_resume_after_the_last_sequence_number_gives_the_exact_text(client):
    stream = client.responses.create(model="scripted", input="long", stream=True, background=True)
    response_id, last, before = drop_after(stream, 3)
    assert before and before != scripted_text(60)
    with client.responses.retrieve(response_id, stream=True, starting_after=last) as resumed:
        after = list(resumed)
    assert all(e.sequence_number > last for e in after)  # nothing twice
    assert before + deltas(after) == scripted_text(60)  # nothing lost
    assert after[-1].type == "response.completed"
    final = client.responses.retrieve(response_id)
    assert (final.status, final.background, final.output_text) == (
        "completed",
        True,
        scripted_text(60),
    )
    # a replay from the start reproduces the numbers the live stream had
    with client.responses.retrieve(response_id, stream=True) as replay:
        numbers = [e.sequence_number for e in replay]
    assert numbers == list(range(len(numbers))) and numbers[-1] == after[-1].sequence_number


def test_a_background_response_without_stream_is_queued_then_completes(client):
    response = client.responses.create(model="scripted", input="hi", background=True)
    assert response.status in ("queued", "in_progress") and response.output == []
    with client.responses.retrieve(response.id, stream=True, starting_after=0) as stream:
        events = list(stream)
    assert events[0].sequence_number == 1 and events[-1].type == "response.completed"
    assert client.responses.retrieve(response.id).output_text == scripted_text(12)


def test_cancel_ends_a_background_response_and_is_idempotent(client):
    response = client.responses.create(model="scripted", input="stalled", background=True)
    cancelled = client.responses.cancel(response.id)
    assert cancelled.status == "cancelled"
    again = client.responses.cancel(response.id)
    assert again.model_dump() == cancelled.model_dump()
    assert client.responses.retrieve(response.id).status == "cancelled"
    with client.responses.retrieve(response.id, stream=True) as stream:
        assert [e.type for e in stream][-1] == "response.incomplete"


def test_previous_response_id_continues_with_the_stored_input_and_output(client):
    first = client.responses.create(model="scripted", input="hi", instructions="Old rules.")
    second = client.responses.create(
        model="scripted", input="and then?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id and second.status == "completed"
    messages = [(m.role, m.content) for m in ASKED[-1].messages]
    # the stored context: its input and output; not its instructions (as OpenAI)
    assert messages == [
        ("user", "hi"),
        ("assistant", scripted_text(12)),
        ("user", "and then?"),
    ]


def test_store_false_cannot_be_retrieved_or_continued(client):
    response = client.responses.create(model="scripted", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="scripted", input="x", previous_response_id=response.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="scripted", input="x", store=False, background=True)
    assert caught.value.body["param"] == "store"  # type: ignore[index]  # body is the error object


def test_reasoning_and_tool_calls_then_the_tool_result_round_trip(client):
    with client.responses.create(
        model="scripted",
        input="weather in Paris?",
        tools=[WEATHER],
        reasoning={"effort": "low"},
        stream=True,
    ) as stream:
        events = list(stream)
    assert deltas(events, "reasoning_text") == scripted_reasoning(3)
    response = events[-1].response
    assert [item.type for item in response.output] == ["reasoning", "function_call"]
    call = response.output[1]
    ((call_id, name, arguments),) = scripted_tool_calls(1)
    assert (call.call_id, call.name, call.arguments) == (call_id, name, arguments)  # type: ignore[union-attr]  # a function_call item
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [e.arguments for e in done] == [arguments]
    assert "".join(e.delta for e in events if e.type.endswith("arguments.delta")) == arguments
    follow = client.responses.create(
        model="scripted",
        input=[
            *[item.model_dump(exclude_none=True) for item in response.output],
            {"type": "function_call_output", "call_id": call_id, "output": "18 C"},
        ],
        tools=[WEATHER],
        previous_response_id=None,
    )
    assert follow.output_text == scripted_text(5)
    sent = ASKED[-1].messages
    assert sent[-2].tool_calls is not None and sent[-2].tool_calls[0].id == call_id
    assert (sent[-1].role, sent[-1].tool_call_id, sent[-1].content) == ("tool", call_id, "18 C")


def openai_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def test_bad_input_gets_openais_error_shape_and_disturbs_nothing(client, server):
    url = server.base_url + "/v1/responses"
    live = client.responses.create(model="scripted", input="long", stream=True, background=True)
    unknown = httpx.post(url, json={"model": "scripted", "input": [{"type": "web_search_call"}]})
    assert unknown.status_code == 400
    assert openai_error(unknown)["param"] == "input[0].type"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="scripted", input="x", prompt={"id": "p"})  # type: ignore[call-overload]  # an argument tokenwire refuses
    done = client.responses.create(model="scripted", input="hi")
    for after in ("-1", "9999", "x"):
        bad = httpx.get(f"{url}/{done.id}", params={"stream": "true", "starting_after": after})
        assert bad.status_code == 400 and openai_error(bad)["param"] == "starting_after"
    missing = httpx.post(f"{url}/resp_unknown/cancel")
    assert missing.status_code == 404 and openai_error(missing)["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_unknown")
    assert deltas(list(live)) == scripted_text(60)  # the live stream went on undisturbed


@SDK_CONNECT_WARNING
def test_websocket_mode_through_the_sdks_connect(client):
    with client.responses.connect() as connection:
        connection.response.create(model="scripted", input="slow")
        connection.response.create(model="scripted", input="hi")  # busy, no stream_id
        events = []
        for event in connection:
            events.append(event)
            if event.type == "response.completed":
                break
        errors = [e for e in events if e.type == "error"]
        assert [e.error.code for e in errors] == ["response_already_in_flight"]
        assert errors[0].status == 400
        assert deltas(events) == scripted_text(6)  # the first response, undisturbed
        first = events[-1].response
        # continuation on the socket, store=false: from the connection's cache
        connection.response.create(
            model="scripted", input="hi", previous_response_id=first.id, store=False
        )
        more = []
        for event in connection:
            more.append(event)
            if event.type == "response.completed":
                break
        assert deltas(more) == scripted_text(12)
        assert [(m.role, m.content) for m in ASKED[-1].messages] == [
            ("user", "slow"),
            ("assistant", scripted_text(6)),
            ("user", "hi"),
        ]
        numbers = [e.sequence_number for e in more]
        assert numbers[0] == 0 and numbers == sorted(set(numbers))


@SDK_CONNECT_WARNING
def test_websocket_lanes_run_side_by_side_and_tag_their_events(client):
    with client.responses.connect() as connection:
        connection.response.create(model="scripted", input="slow", stream_id="a")
        connection.response.create(model="scripted", input="hi", stream_id="b")
        connection.response.create(model="scripted", input="hi", stream_id="a")  # queued
        by_lane: dict[str, list[Any]] = {"a": [], "b": []}
        completed = 0
        for event in connection:
            by_lane[event.stream_id].append(event)  # type: ignore[union-attr]  # every laned event has it
            completed += event.type == "response.completed"
            if completed == 3:
                break
    assert deltas(by_lane["b"]) == scripted_text(12)
    assert deltas(by_lane["a"]) == scripted_text(6) + scripted_text(12)  # in order (FIFO)


def test_a_raw_websocket_gets_openai_errors_for_bad_messages(server):
    from websockets.sync.client import connect

    with connect(server.base_url.replace("http", "ws") + "/v1/responses") as ws:
        ws.send("not json")
        assert json.loads(ws.recv())["error"]["type"] == "invalid_request_error"
        ws.send(json.dumps({"type": "response.steer", "input": "x"}))
        assert json.loads(ws.recv())["error"]["param"] == "type"
        ws.send(json.dumps({"type": "response.create", "input": [{"type": "nope"}]}))
        assert json.loads(ws.recv())["error"]["param"] == "input[0].type"
        ws.send(json.dumps({"type": "response.create", "model": "scripted", "input": "hi"}))
        frames = []
        while not frames or frames[-1]["type"] != "response.completed":
            frames.append(json.loads(ws.recv()))
    response = Response.model_validate(frames[-1]["response"])
    assert response.output_text == scripted_text(12)


def test_a_response_whose_stream_the_log_forgot_is_not_found():
    app, _ = scripted_app(stream_log_ttl=0.05)
    with serve(app) as running:
        with openai.OpenAI(base_url=running.base_url + "/v1", api_key="x", max_retries=0) as sdk:
            response = sdk.responses.create(model="scripted", input="hi")
            status = "completed"
            while status == "completed":  # until the log forgets the ended stream
                try:
                    status = sdk.responses.retrieve(response.id).status
                except openai.NotFoundError as exc:
                    assert "no longer kept" in exc.message
                    status = "gone"
            with pytest.raises(openai.NotFoundError):
                sdk.responses.retrieve(response.id, stream=True)
            with pytest.raises(openai.NotFoundError):
                sdk.responses.create(model="scripted", input="x", previous_response_id=response.id)
