"""The AI SDK's own chat transport (``ai`` 7.0.173 from npm, unmodified, driven from node by
tests/node/aisdk_chat.mjs) against ``POST /api/chat``, ``GET /api/chat/{id}/stream`` and
``POST /api/chat/{id}/stop`` on a real uvicorn: what ``useChat`` runs, for text, reasoning and
tool calls; a resume after the fetch is aborted; the stop endpoint; bad input and another
key's chat."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import scripted_app, serve
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.scripted import (
    Script,
    scripted_reasoning,
    scripted_text,
    scripted_tool_calls,
)

NODE_DIR = Path(__file__).parent.parent / "node"
KEY = "tw_test-key-alice"
OTHER = "tw_test-key-bob"
LONG = 300


def script_for(params: GenerateParams) -> Script:
    prompt = params.messages[-1].content
    if prompt == "rich":
        return Script(tokens=5, reasoning_tokens=4, tool_calls=2, tool_call_pieces=3)
    if prompt == "long":
        return Script(tokens=LONG, interval=0.01)
    return Script(tokens=12)


def run_node(scenario: str, **options: Any) -> dict[str, Any]:
    ran = subprocess.run(
        ["node", "aisdk_chat.mjs", scenario, json.dumps(options)],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert ran.returncode == 0, ran.stderr
    out: dict[str, Any] = json.loads(ran.stdout)
    return out


def chat_server(**settings: Any) -> Any:
    app, provider = scripted_app(**settings)
    provider.script_for = script_for
    return serve(app)


def test_use_chat_streams_text_and_nothing_is_left_to_resume():
    with chat_server() as server:
        out = run_node("send", api=server.base_url + "/api/chat")
    types = [chunk["type"] for chunk in out["chunks"]]
    assert types[:3] == ["start", "start-step", "text-start"]
    assert types[-3:] == ["text-end", "finish-step", "finish"]
    finish = out["chunks"][-1]
    assert finish["finishReason"] == "stop"
    assert finish["messageMetadata"]["usage"]["outputTokens"] == 12
    message = out["message"]
    assert message["id"] == out["chunks"][0]["messageId"]
    assert message["role"] == "assistant"
    assert [part["type"] for part in message["parts"]] == ["step-start", "text"]
    assert message["parts"][1]["text"] == scripted_text(12)
    assert message["metadata"]["model"] == "scripted"
    assert out["error"] is None and out["afterEnd"] is None  # 204: the stream has ended


def test_use_chat_builds_reasoning_and_tool_call_parts():
    with chat_server() as server:
        out = run_node("send", api=server.base_url + "/api/chat", prompt="rich")
    parts = out["message"]["parts"]
    assert [part["type"] for part in parts] == [
        "step-start",
        "reasoning",
        "text",
        "tool-get_weather",
        "tool-get_time",
    ]
    assert parts[1]["text"] == scripted_reasoning(4)
    assert parts[2]["text"] == scripted_text(5)
    for part, (call_id, _name, arguments) in zip(parts[3:], scripted_tool_calls(2), strict=True):
        assert part["toolCallId"] == call_id
        assert part["state"] == "input-available"
        assert part["input"] == json.loads(arguments)
    assert out["chunks"][-1]["finishReason"] == "tool-calls"
    for call_id, _name, arguments in scripted_tool_calls(2):  # pieces (merged when behind)
        pieces = [
            chunk["inputTextDelta"]
            for chunk in out["chunks"]
            if chunk["type"] == "tool-input-delta" and chunk["toolCallId"] == call_id
        ]
        assert pieces and "".join(pieces) == arguments


def test_a_continuation_with_tool_outputs_extends_the_last_assistant_message():
    assistant = {
        "id": "a1",
        "role": "assistant",
        "parts": [
            {"type": "step-start"},
            {"type": "reasoning", "text": "look it up", "state": "done"},
            {
                "type": "tool-get_weather",
                "toolCallId": "call_0",
                "state": "output-available",
                "input": {"city": "Paris"},
                "output": {"tempC": 21},
            },
        ],
    }
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Weather?"}]}
    seen: list[GenerateParams] = []

    def record(params: GenerateParams) -> Script:
        seen.append(params)
        return Script(tokens=3)

    app, provider = scripted_app()
    provider.script_for = record
    with serve(app) as server:
        out = run_node("send", api=server.base_url + "/api/chat", messages=[user, assistant])
    assert out["chunks"][0] == {"type": "start", "messageId": "a1"}
    assert out["message"]["parts"][-1]["text"] == scripted_text(3)
    sent = [message.to_openai() for message in seen[0].messages]
    assert sent == [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": '{"tempC":21}', "tool_call_id": "call_0"},
    ]


def test_an_aborted_fetch_is_a_disconnect_and_the_resume_gives_the_exact_text():
    with chat_server() as server:
        out = run_node("resume", api=server.base_url + "/api/chat", prompt="long")
    assert out["before"] and scripted_text(LONG).startswith(out["before"])
    assert out["resumedText"] == scripted_text(LONG)  # replayed from start, then live
    assert out["resumedTypes"][0] == "start" and out["resumedTypes"][-1] == "finish"
    assert out["resumedMessageId"] == out["sentMessageId"]
    assert out["afterEnd"] is None


def test_the_stop_endpoint_cancels_the_generation():
    with chat_server() as server:
        out = run_node("stop", api=server.base_url + "/api/chat", prompt="long")
    assert out["stop"]["status"] == 202
    assert out["stop"]["body"]["status"] == "cancelled"
    assert out["types"][-1] == "abort"
    assert "finish" not in out["types"]
    assert 0 < len(out["text"]) < len(scripted_text(LONG))
    assert out["afterEnd"] is None
    assert out["stopAgain"]["status"] == 202  # the entry names a stream that has ended
    assert out["stopAgain"]["body"]["status"] == "ended"


def test_another_key_neither_resumes_nor_stops_a_chat():
    with chat_server(api_keys=f"{KEY},{OTHER}") as server:
        out = run_node(
            "foreign",
            api=server.base_url + "/api/chat",
            prompt="long",
            headers={"Authorization": f"Bearer {KEY}"},
            resumeHeaders={"Authorization": f"Bearer {OTHER}"},
        )
    assert out["foreignResume"] is None  # 204, as for a chat that never was
    assert out["foreignStop"]["status"] == 404
    assert out["foreignStop"]["body"]["error"]["code"] == "not_found"
    assert out["text"] == scripted_text(LONG)  # the owner's stream went on undisturbed
    assert out["types"][-1] == "finish"


def test_bad_input_is_an_error_the_sdk_throws_with_the_server_text():
    with chat_server() as server:
        api = server.base_url + "/api/chat"
        no_messages = run_node("send", api=api, dropMessages=True)
        unknown = run_node("send", api=api, parts=[{"type": "video-clip", "url": "x"}])
        fine = run_node("send", api=api)
    assert no_messages["thrown"]["status"] == 400
    assert "messages: Field required" in no_messages["thrown"]["message"]
    assert unknown["thrown"]["status"] == 400
    assert "messages.0.parts.0.type: unknown part type 'video-clip'" in unknown["thrown"]["message"]
    assert fine["message"]["parts"][1]["text"] == scripted_text(12)  # the server is fine
