"""The AI SDK chat routes across two ``tokenwire serve`` processes sharing one Redis, driven by
the SDK's own DefaultChatTransport (tests/node/aisdk_chat.mjs): a chat sent on A, its fetch
aborted, resumed on B with the exact text; a chat sent on A stopped through B; bad input on
one chat leaves another's stream undisturbed; the SDK's WebSocketChatTransport sent on A, its
socket dropped, resumed on B."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import RedisServer, two_workers
from tests.transports.test_aisdk_node import run_node
from tests.transports.test_aisdk_ws import node
from tokenwire.providers.scripted import scripted_text

TOKENS = 300


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Any]:
    tmp_path = tmp_path_factory.mktemp("aisdk-workers")
    with two_workers(
        tmp_path,
        redis_server.url,
        provider="scripted",
        scripted_tokens=TOKENS,
        scripted_interval=0.01,
    ) as both:
        yield both


def test_sent_on_a_aborted_and_resumed_on_b_exactly(workers):
    a, b = workers
    out = run_node("resume", api=a.base_url + "/api/chat", resumeApi=b.base_url + "/api/chat")
    assert out["before"] and scripted_text(TOKENS).startswith(out["before"])
    assert out["resumedText"] == scripted_text(TOKENS)
    assert out["resumedMessageId"] == out["sentMessageId"]
    assert out["afterEnd"] is None  # B answers 204 once A's stream has ended


def test_sent_on_a_stopped_through_b(workers):
    a, b = workers
    out = run_node("stop", api=a.base_url + "/api/chat", resumeApi=b.base_url + "/api/chat")
    assert out["stop"]["status"] == 202
    assert out["stop"]["body"]["status"] == "cancelling"  # the request went to A
    assert out["types"][-1] == "abort"
    assert 0 < len(out["text"]) < len(scripted_text(TOKENS))
    assert out["stopAgain"]["body"]["status"] == "ended"


def test_a_bad_request_on_b_leaves_a_chat_on_a_streaming(workers):
    a, b = workers
    with httpx.Client(timeout=30) as http:
        refused = http.post(
            b.base_url + "/api/chat",
            json={"id": "c", "trigger": "submit-message", "messages": [{"role": "user"}]},
        )
        assert refused.status_code == 400
        assert refused.json()["error"]["message"].startswith("messages.0.parts: Field required")
        missing = http.post(b.base_url + "/api/chat/no-such-chat/stop")
        assert missing.status_code == 404
        assert http.get(b.base_url + "/api/chat/no-such-chat/stream").status_code == 204
    out = run_node("send", api=a.base_url + "/api/chat")
    assert out["message"]["parts"][1]["text"] == scripted_text(TOKENS)


def test_websocket_sent_on_a_dropped_resumed_on_b(workers):
    a, b = workers
    out = node("drop", a.base_url, "hi", "5", b.base_url)
    assert out["before"] and scripted_text(TOKENS).startswith(out["before"])
    assert out["text"] == scripted_text(TOKENS)
    assert out["messageId"] == out["firstMessageId"]
    assert out["afterEnd"] is None
