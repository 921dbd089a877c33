"""A stream belongs to the key that created it, for as long as the log keeps it and on every
worker that shares the log: another key's resume and cancel (SSE or WebSocket) are answered
not_found, never with the stream's events."""

from __future__ import annotations

import json

import httpx
from httpx_ws import aconnect_ws

from tests.helpers import asgi_client, scripted_app, serve
from tests.security_helpers import USER, sse_events, text_of, ws_connect
from tokenwire.providers.scripted import Script, scripted_text

KEY = "tw_test-key-alice"
OTHER = "tw_test-key-bob"
KEYS = f"{KEY},{OTHER}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def refused_as_unknown(response: httpx.Response) -> bool:
    """An SSE resume answered 404 not_found."""
    return response.status_code == 404 and response.json()["error"]["code"] == "not_found"


async def test_an_ended_stream_is_not_readable_by_another_key():
    app, _ = scripted_app(Script(tokens=6), api_keys=KEYS)
    async with asgi_client(app) as http:
        created = await http.post("/v1/streams", json={"messages": USER}, headers=bearer(KEY))
        stream_id = created.headers["x-stream-id"]
        assert sse_events(created.text)[-1]["type"] == "stream.end"
        url = f"/v1/streams/{stream_id}/events"
        other = await http.get(url, headers=bearer(OTHER))
        assert refused_as_unknown(other), other.text
        assert scripted_text(6) not in other.text
        cancel = await http.post(f"/v1/streams/{stream_id}/cancel", headers=bearer(OTHER))
        assert cancel.status_code == 404
        async with aconnect_ws("/v1/ws", http, headers=bearer(OTHER)) as ws:
            await ws.send_text(json.dumps({"type": "resume", "stream_id": stream_id}))
            frame = json.loads(await ws.receive_text())
        assert frame["type"] == "error" and frame["code"] == "not_found", frame
        own = await http.get(url, headers=bearer(KEY))
        assert text_of(sse_events(own.text)) == scripted_text(6)


async def test_a_live_stream_of_another_worker_is_not_readable_or_cancellable(redis_server):
    script = Script(tokens=400, interval=0.01)
    app_a, provider_a = scripted_app(script, stream_log=redis_server.url, api_keys=KEYS)
    app_b, _ = scripted_app(script, stream_log=redis_server.url, api_keys=KEYS)
    with serve(app_a) as a, serve(app_b) as b:
        async with httpx.AsyncClient(timeout=30) as http:
            created = await http.post(
                a.base_url + "/v1/streams",
                json={"messages": USER, "on_disconnect": "detach"},
                headers={**bearer(KEY), "Accept": "application/json"},
            )
            stream_id = created.json()["stream_id"]
            url = f"{b.base_url}/v1/streams/{stream_id}/events"
            other = await http.get(url, headers={**bearer(OTHER), "Last-Event-ID": "1"})
            assert refused_as_unknown(other), other.text
            cancel = await http.post(
                f"{b.base_url}/v1/streams/{stream_id}/cancel", headers=bearer(OTHER)
            )
            assert cancel.status_code == 404, cancel.text
            async with ws_connect(b.base_url, additional_headers=bearer(OTHER)) as ws:
                await ws.send(json.dumps({"type": "cancel", "stream_id": stream_id}))
                await ws.send(json.dumps({"type": "resume", "stream_id": stream_id}))
                replies = [json.loads(await ws.recv()) for _ in range(2)]
            assert replies[0]["type"] == "error" and replies[0]["code"] == "not_found"
            assert replies[1]["type"] == "error" and replies[1]["code"] == "not_found"
            assert provider_a.records[0].closed_at is None  # still running
            own = await http.post(
                f"{b.base_url}/v1/streams/{stream_id}/cancel", headers=bearer(KEY)
            )
            assert own.status_code == 202
