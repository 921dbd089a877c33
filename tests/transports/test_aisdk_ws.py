"""``GET /api/chat/ws`` with the AI SDK's own ``WebSocketChatTransport`` (the ``ai`` package,
unmodified, with ``ws`` as its WebSocket; tests/node/ws_chat.mjs) over a real uvicorn: text,
reasoning and tool calls reduced by ``readUIMessageStream``; three turns on one socket; abort
(the generation is cancelled); a dropped socket resumed with the exact text; two workers on one
Redis (sent on A, resumed on B: in test_aisdk_workers.py); a signed token as a
subprotocol. Raw frames: bad JSON, an
unknown frame, a resume of another key's chat, each answered in the protocol's shape while
another request on the socket goes on."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.helpers import scripted_app, serve
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.scripted import (
    Script,
    scripted_reasoning,
    scripted_text,
    scripted_tool_calls,
)

NODE_DIR = Path(__file__).parent.parent / "node"
KEY = "tw_aisdk-ws-key-alice-0123456789"
OTHER = "tw_aisdk-ws-key-bob-0123456789"


def script_for(params: GenerateParams) -> Script:
    prompt = str(params.messages[-1].content)
    if prompt == "reasoning":
        return Script(tokens=10, reasoning_tokens=7)
    if prompt == "tools":
        return Script(tokens=0, tool_calls=2)
    if prompt == "long":
        return Script(tokens=80, interval=0.01)
    return Script(tokens=12)


def node(*args: str) -> dict[str, Any]:
    """Run tests/node/ws_chat.mjs; its JSON output."""
    assert shutil.which("node"), "node is needed (make test installs it)"
    assert (NODE_DIR / "node_modules" / "ai").exists(), "run `npm ci` in tests/node (make test)"
    ran = subprocess.run(
        ["node", "ws_chat.mjs", *args],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    out: dict[str, Any] = json.loads(ran.stdout)
    return out


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    app, provider = scripted_app()
    provider.script_for = script_for
    with serve(app) as running:
        running.provider = provider
        yield running


def test_a_turn_streams_text_as_the_sdk_reduces_it(server):
    out = node("send", server.base_url, "hello")
    assert out["text"] == scripted_text(12)
    assert out["types"][:3] == ["start", "start-step", "text-start"]
    assert out["types"][-3:] == ["text-end", "finish-step", "finish"]
    assert out["chunks"][0]["messageId"] == out["messageId"]
    assert out["chunks"][-1]["finishReason"] == "stop"
    assert out["error"] is None


def test_reasoning_and_tool_calls_arrive_as_their_parts(server):
    reasoning = node("send", server.base_url, "reasoning")
    assert reasoning["reasoning"] == scripted_reasoning(7)
    assert reasoning["text"] == scripted_text(10)
    tools = node("send", server.base_url, "tools")
    calls = scripted_tool_calls(2)
    assert [part["type"] for part in tools["tools"]] == [f"tool-{name}" for _, name, _ in calls]
    assert [part["toolCallId"] for part in tools["tools"]] == [call_id for call_id, _, _ in calls]
    assert [part["input"] for part in tools["tools"]] == [json.loads(a) for _, _, a in calls]
    assert all(part["state"] == "input-available" for part in tools["tools"])
    assert tools["chunks"][-1]["finishReason"] == "tool-calls"


def test_three_turns_share_one_socket(server):
    out = node("many", server.base_url, "long")
    assert out["texts"] == [scripted_text(80)] * 3
    assert out["errors"] == [None] * 3


def test_abort_of_a_send_cancels_the_generation(server):
    before = len(server.provider.records)
    out = node("abort", server.base_url, "long", "5")
    assert scripted_text(80).startswith(out["before"]) and out["before"]
    assert out["resumedAfterEnd"] is None  # cancelled, ended: no active stream
    record = server.provider.records[before]
    assert record.closed_at is not None and not record.completed
    assert record.produced < 80


def test_a_dropped_socket_resumes_with_the_exact_text(server):
    out = node("drop", server.base_url, "long", "5", server.base_url)
    assert scripted_text(80).startswith(out["before"]) and out["before"]
    assert "closed" in out["dropError"]
    assert out["text"] == scripted_text(80)  # the replay from the start, then live
    assert out["messageId"] == out["firstMessageId"]  # the same assistant message
    assert out["afterEnd"] is None


def test_a_token_offered_as_a_subprotocol_authenticates():
    app, provider = scripted_app(api_keys=KEY)
    provider.script_for = script_for
    with serve(app) as running:
        minted = httpx.post(
            running.base_url + "/v1/tokens", headers={"Authorization": f"Bearer {KEY}"}
        )
        token = minted.json()["token"]
        assert node("send", running.base_url, "hello", token)["text"] == scripted_text(12)
        refused = node("send", running.base_url, "hello")  # no credentials: a send is no auth
        assert "code 1008: unauthorized" in refused["error"]


def frames_until(ws: Any, done: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while not seen or not done(seen[-1]):
        seen.append(json.loads(ws.recv(timeout=10)))
    return seen


def send_frame(request_id: str, chat_id: str, text: str) -> str:
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}
    return json.dumps(
        {
            "type": "send",
            "requestId": request_id,
            "id": chat_id,
            "trigger": "submit-message",
            "messages": [message],
            "headers": {},
            "body": {},
        }
    )


def resume_frame(request_id: str, chat_id: str, **extra: Any) -> str:
    frame = {"type": "resume", "requestId": request_id, "id": chat_id, "headers": {}, "body": {}}
    return json.dumps({**frame, **extra})


def test_bad_frames_get_errors_and_the_other_request_goes_on():
    app, provider = scripted_app(api_keys=f"{KEY},{OTHER}")
    provider.script_for = script_for
    url_of = {}
    with serve(app) as running:
        for name, key in (("alice", KEY), ("bob", OTHER)):
            url_of[name] = running.base_url.replace("http", "ws") + "/api/chat/ws"
            url_of[name + "-headers"] = {"Authorization": f"Bearer {key}"}
        with (
            connect(url_of["alice"], additional_headers=url_of["alice-headers"]) as alice,
            connect(url_of["bob"], additional_headers=url_of["bob-headers"]) as bob,
        ):
            alice.send(send_frame("r1", "alice-chat", "long"))
            first = json.loads(alice.recv(timeout=10))
            assert (first["type"], first["requestId"], first["sequence"]) == ("chunk", "r1", 0)
            bob.send(resume_frame("b1", "alice-chat"))  # alice's chat, bob's key
            assert json.loads(bob.recv(timeout=10)) == {"type": "no-active", "requestId": "b1"}
            alice.send("{not json")
            alice.send(json.dumps({"type": "subscribe", "requestId": "r2"}))
            alice.send(json.dumps({"type": "send", "requestId": "r3", "id": "c"}))
            alice.send(resume_frame("r4", "alice-chat", lastSequence=-1))
            rest = frames_until(alice, lambda f: f["type"] == "end" and f["requestId"] == "r1")
            errors = {f["requestId"]: f["errorText"] for f in rest if f["type"] == "error"}
            assert errors.keys() == {"", "r2", "r3", "r4"}
            assert "not valid JSON" in errors[""]
            assert errors["r2"].startswith("invalid_request: type: unknown frame type 'subscribe'")
            assert "messages" in errors["r3"]
            assert "lastSequence" in errors["r4"]
            chunks = [first] + [f for f in rest if f["type"] == "chunk"]
            assert [f["sequence"] for f in chunks] == list(range(len(chunks)))
            text = "".join(
                f["chunk"]["delta"] for f in chunks if f["chunk"]["type"] == "text-delta"
            )
            assert text == scripted_text(80)


def test_resume_after_a_sequence_sends_the_rest_exactly(server):
    ws_url = server.base_url.replace("http", "ws") + "/api/chat/ws"
    with connect(ws_url) as ws:
        ws.send(send_frame("s", "seq-chat", "long"))
        sent = frames_until(ws, lambda f: f["type"] == "chunk" and f["sequence"] == 9)
    with connect(ws_url) as ws:
        ws.send(resume_frame("r", "seq-chat", lastSequence=9))
        resumed = frames_until(ws, lambda f: f["type"] == "end")
    assert resumed[0] == {"type": "start", "requestId": "r"}
    chunks = sent + [f for f in resumed if f["type"] == "chunk"]
    assert [f["sequence"] for f in chunks] == list(range(len(chunks)))
    text = "".join(f["chunk"]["delta"] for f in chunks if f["chunk"]["type"] == "text-delta")
    assert text == scripted_text(80)


def test_a_message_over_the_rate_limit_errors_its_own_request():
    app, _ = scripted_app(Script(tokens=6), ws_messages_per_minute=2)
    url = "/api/chat/ws"
    with serve(app) as running, connect(running.base_url.replace("http", "ws") + url) as ws:
        for request_id in ("a", "b", "c"):
            ws.send(send_frame(request_id, "chat-" + request_id, "hi"))
        seen: list[dict[str, Any]] = []
        while sum(f["type"] in ("end", "error") for f in seen) < 3:
            seen.append(json.loads(ws.recv(timeout=10)))
    errors = [f for f in seen if f["type"] == "error"]
    assert [f["requestId"] for f in errors] == ["c"]
    assert errors[0]["errorText"].startswith("rate_limited: more than 2 messages a minute")
    ended = {f["requestId"] for f in seen if f["type"] == "end"}
    assert ended == {"a", "b"}  # the two admitted requests run to their end


def test_handshake_credentials_origin_and_the_selected_subprotocol():
    app, _ = scripted_app(Script(tokens=6), api_keys=KEY)
    with serve(app) as running:
        url = running.base_url.replace("http", "ws") + "/api/chat/ws"
        bearer = {"Authorization": f"Bearer {KEY}"}
        token = httpx.post(running.base_url + "/v1/tokens", headers=bearer).json()["token"]
        # a token offered as a subprotocol: the server selects "tokenwire", never the token
        with connect(url, subprotocols=["tokenwire", token]) as ws:
            assert ws.subprotocol == "tokenwire"
            ws.send(send_frame("s", "c1", "hi"))
            assert frames_until(ws, lambda f: f["type"] == "end")[-1]["requestId"] == "s"
        # the cookie, as a page that set it sends it
        with connect(url, additional_headers={"Cookie": f"tokenwire_token={token}"}) as ws:
            assert ws.subprotocol is None
            ws.send(send_frame("s", "c2", "hi"))
            assert frames_until(ws, lambda f: f["type"] == "end")[-1]["requestId"] == "s"
        # an API key in a cookie is refused: cookies carry short-lived tokens only
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers={"Cookie": f"tokenwire_token={KEY}"})
        assert refused.value.response.status_code == 401
        # a browser page of another origin is refused before accept
        with pytest.raises(InvalidStatus) as foreign:
            connect(url, origin="https://evil.example", additional_headers=bearer)
        assert foreign.value.response.status_code == 403
