"""The Responses API behind the edge: API keys (HTTP and the WebSocket-mode handshake), the
Origin allowlist, the WebSocket connection limits, and responses visible to their own key only;
every refusal in OpenAI's error shape."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import scripted_app, serve
from tests.security_helpers import close_code, handshake_status, ws_connect
from tokenwire.providers.scripted import scripted_text

KEY = "tw_test-key-alice"
OTHER = "tw_test-key-bob"
CREATE = {"type": "response.create", "model": "scripted", "input": "hi"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def openai_shaped(body: Any) -> bool:
    return set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def server():
    app, _ = scripted_app(
        api_keys=f"{KEY},{OTHER}", allowed_origins="https://app.example", max_ws_connections=1
    )
    with serve(app) as running:
        yield running


async def test_keys_and_origins_guard_http_and_the_websocket_mode(server):
    url = server.base_url + "/v1/responses"
    async with httpx.AsyncClient() as http:
        missing = await http.post(url, json={"model": "scripted", "input": "hi"})
    assert missing.status_code == 401 and openai_shaped(missing.json())
    assert missing.json()["error"]["type"] == "authentication_error"
    status, body = await handshake_status(
        server.base_url, path="/v1/responses", additional_headers=bearer("tw_wrong")
    )
    assert status == 401 and openai_shaped(body)
    # no credentials at all: as on /v1/ws, the first message must be {"type": "auth", ...}
    async with ws_connect(server.base_url, path="/v1/responses") as unauthenticated:
        await unauthenticated.send(json.dumps(CREATE))
        assert await close_code(unauthenticated) == 1008
    status, body = await handshake_status(
        server.base_url,
        path="/v1/responses",
        additional_headers=bearer(KEY),
        origin="https://evil.example",
    )
    assert status == 403 and openai_shaped(body)
    async with ws_connect(
        server.base_url,
        path="/v1/responses",
        additional_headers=bearer(KEY),
        origin="https://app.example",
    ) as ws:
        async with ws_connect(
            server.base_url, path="/v1/responses", additional_headers=bearer(KEY)
        ) as second:
            assert await close_code(second) == 1013  # over max_ws_connections
        await ws.send(json.dumps(CREATE))
        frames = []
        while not frames or frames[-1]["type"] != "response.completed":
            frames.append(json.loads(await ws.recv()))
    assert frames[-1]["response"]["output"][0]["content"][0]["text"] == scripted_text(12)


def test_a_response_is_visible_to_its_own_key_only(server):
    base = server.base_url + "/v1"
    with (
        openai.OpenAI(base_url=base, api_key=KEY, max_retries=0) as alice,
        openai.OpenAI(base_url=base, api_key=OTHER, max_retries=0) as bob,
    ):
        response = alice.responses.create(model="scripted", input="hi")
        assert alice.responses.retrieve(response.id).output_text == scripted_text(12)
        with pytest.raises(openai.NotFoundError):
            bob.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError):
            bob.responses.cancel(response.id)
        with pytest.raises(openai.NotFoundError):
            bob.responses.create(model="scripted", input="x", previous_response_id=response.id)
