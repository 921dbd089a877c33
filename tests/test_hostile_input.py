"""Input an attacker sends to see what breaks: deeply nested JSON in every parser (bodies,
WebSocket messages, the pre-auth ``auth`` message), and values that only look valid. Each gets
a clear 4xx or ``error`` frame; a WebSocket stays open."""

from __future__ import annotations

import json

from httpx_ws import aconnect_ws

from tests.helpers import asgi_client, scripted_app

NESTED = "[" * 1000 + "]" * 1000  # 2 KB: past Python's recursion limit in json.loads
NESTED_OBJECT = '{"type": "generate", "messages": ' + NESTED + "}"


async def test_deeply_nested_json_is_a_400_on_every_body_parser():
    app, _ = scripted_app()
    async with asgi_client(app) as http:
        for path in ("/v1/streams", "/v1/chat/completions", "/v1/tokens"):
            for body in (NESTED, NESTED_OBJECT):
                response = await http.post(
                    path, content=body, headers={"Content-Type": "application/json"}
                )
                assert response.status_code in (400, 422), (path, response.text)
                error = response.json()["error"]
                assert error["code"] == "invalid_request", (path, error)


async def test_deeply_nested_json_on_a_websocket_is_an_error_frame_and_the_socket_stays_open():
    app, _ = scripted_app()
    async with asgi_client(app) as http, aconnect_ws("/v1/ws", http) as ws:
        for body in (NESTED, NESTED_OBJECT):
            await ws.send_text(body)
            frame = json.loads(await ws.receive_text())
            assert frame["type"] == "error" and frame["code"] == "invalid_request", frame
        await ws.send_text(json.dumps({"type": "ping", "id": 1}))
        assert json.loads(await ws.receive_text()) == {"type": "pong", "id": 1}


async def test_a_deeply_nested_auth_message_closes_1008():
    app, _ = scripted_app(api_keys="tw_test-key-alice")
    async with asgi_client(app) as http, aconnect_ws("/v1/ws", http) as ws:
        await ws.send_text(NESTED)
        try:
            await ws.receive_text()
        except Exception as exc:  # httpx-ws raises WebSocketDisconnect with the close code
            assert getattr(exc, "code", None) == 1008, repr(exc)
        else:
            raise AssertionError("the socket stayed open without authentication")


async def test_dns_rebinding_a_foreign_host_is_refused_even_when_it_matches_the_origin():
    """An attacker's page on evil.example, whose name now resolves to 127.0.0.1: the browser
    sends Host = Origin = evil.example. A server bound to loopback only answers loopback
    names (allowed_hosts)."""
    app, provider = scripted_app()
    rebound = {"Host": "evil.example", "Origin": "http://evil.example"}
    async with asgi_client(app) as http:
        created = await http.post(
            "/v1/streams",
            json={"messages": [{"role": "user", "content": "hi"}], "on_disconnect": "detach"},
            headers={**rebound, "Accept": "application/json"},
        )
        assert created.status_code == 400, created.text
        assert created.json()["error"]["code"] == "invalid_request"
        try:
            async with aconnect_ws("/v1/ws", http, headers=rebound):
                accepted = True
        except Exception:  # the handshake was refused (httpx-ws raises its upgrade error)
            accepted = False
        assert not accepted
        own = await http.get("/healthz", headers={"Host": "127.0.0.1:8000"})
        assert own.status_code == 200
    assert provider.records == []


async def test_values_that_only_look_valid_are_refused():
    """``max_tokens`` of ``"5"`` or ``true`` (a string, a bool), a cursor of non-ASCII digits
    (ARABIC-INDIC DIGIT THREE), a token ``ttl`` under a second (it would be minted expired)."""
    key = "tw_test-key-alice"
    app, provider = scripted_app(api_keys=key)
    auth = {"Authorization": f"Bearer {key}"}
    async with asgi_client(app) as http:
        for max_tokens in ("5", True, 5.0):
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
            response = await http.post("/v1/streams", json=body, headers=auth)
            assert response.status_code == 422, (max_tokens, response.text)
            assert "max_tokens" in response.json()["error"]["message"]
        cursor = await http.get(
            "/v1/streams/str_x/events", params={"last_event_id": "\u0663"}, headers=auth
        )
        assert cursor.status_code == 400, cursor.text
        minted = await http.post("/v1/tokens", json={"ttl": 0.5}, headers=auth)
        assert minted.status_code == 422, minted.text
        assert "ttl" in minted.json()["error"]["message"]
    assert provider.records == []
