"""The AI SDK chat routes over HTTP, in-process: the UI message stream's headers and framing
(``id: <seq>``, ``data: [DONE]``), an error after the start as an ``error`` chunk, resume and
stop answers, and the edge's refusals (auth, Origin, sizes) in front of them."""

from __future__ import annotations

import json
from typing import Any

from tests.helpers import asgi_client, scripted_app
from tokenwire.providers.scripted import Script, scripted_text

USER = [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]


def chat(chat_id: str = "chat-1", **extra: Any) -> dict[str, Any]:
    return {"id": chat_id, "messages": USER, "trigger": "submit-message", **extra}


def chunks(body: str) -> list[Any]:
    return [
        line[6:] if line == "data: [DONE]" else json.loads(line[6:])
        for line in body.splitlines()
        if line.startswith("data: ")
    ]


async def test_the_stream_has_the_sdk_headers_ids_and_done():
    app, _ = scripted_app(Script(tokens=4))
    async with asgi_client(app) as http:
        answer = await http.post("/api/chat", json=chat(temperature=0.2, max_tokens=50))
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert answer.headers["cache-control"] == "no-cache"
        assert answer.headers["x-accel-buffering"] == "no"
        frames = answer.text.split("\n\n")
        assert frames[0].startswith("id: 1\ndata: {")
        assert frames[-2:] == ["data: [DONE]", ""]
        sent = chunks(answer.text)
        assert sent[-1] == "[DONE]" and sent[-2]["type"] == "finish"
        text = "".join(c["delta"] for c in sent[:-1] if c["type"] == "text-delta")
        assert text == scripted_text(4)
        after = await http.get("/api/chat/chat-1/stream")
        assert (after.status_code, after.text) == (204, "")


async def test_a_failure_after_the_start_is_an_error_chunk_then_finish_error():
    app, _ = scripted_app(Script(tokens=10, error_after=3))
    async with asgi_client(app) as http:
        answer = await http.post("/api/chat", json=chat())
    sent = chunks(answer.text)
    errors = [c for c in sent if isinstance(c, dict) and c["type"] == "error"]
    assert len(errors) == 1 and errors[0]["errorText"]
    assert sent[-2]["type"] == "finish" and sent[-2]["finishReason"] == "error"


async def test_resume_and_stop_of_a_chat_without_stream():
    app, _ = scripted_app()
    async with asgi_client(app) as http:
        assert (await http.get("/api/chat/never/stream")).status_code == 204
        stop = await http.post("/api/chat/never/stop")
        assert stop.status_code == 404
        assert stop.json()["error"]["code"] == "not_found"
        assert "'never'" in stop.json()["error"]["message"]
        long_id = await http.get("/api/chat/" + "x" * 300 + "/stream")
        assert long_id.status_code == 400
        assert (await http.get("/api/chat/a/b/stream")).status_code == 204  # ids may hold '/'


async def test_refused_fields_and_limits_name_what_is_wrong():
    app, _ = scripted_app(max_messages=2)
    async with asgi_client(app) as http:
        extra = await http.post("/api/chat", json=chat(frequency="high"))
        assert extra.status_code == 400
        assert extra.json()["error"]["message"].startswith("frequency: unknown body field")
        bad_value = await http.post("/api/chat", json=chat(temperature=9))
        assert bad_value.status_code == 400
        assert bad_value.json()["error"]["message"].startswith("temperature:")
        many = await http.post("/api/chat", json={**chat(), "messages": USER * 3})
        assert many.status_code == 422
        not_json = await http.post("/api/chat", content=b"{", headers={"content-type": "x"})
        assert not_json.status_code == 400


async def test_the_edge_guards_the_chat_routes():
    app, _ = scripted_app(api_keys="tw_test-key-alice", max_body_size=2048)
    async with asgi_client(app) as http:
        anonymous = await http.post("/api/chat", json=chat())
        assert anonymous.status_code == 401
        assert (await http.get("/api/chat/c/stream")).status_code == 401
        assert (await http.post("/api/chat/c/stop")).status_code == 401
        key = {"Authorization": "Bearer tw_test-key-alice"}
        foreign = await http.post(
            "/api/chat", json=chat(), headers={**key, "Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        big = await http.post("/api/chat", json=chat(padding="x" * 4096), headers=key)
        assert big.status_code == 413
        fine = await http.post("/api/chat", json=chat(), headers=key)
        assert fine.status_code == 200 and chunks(fine.text)[-1] == "[DONE]"
