"""Authentication (API keys, hashed key file, signed query tokens, WebSocket ``auth`` message)
and the Origin allowlist, over real uvicorn sockets and in-process."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import openai
import pytest
from httpx_ws import aconnect_ws
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from tests.helpers import asgi_client, scripted_app, serve, wait_for
from tests.security_helpers import (
    GENERATE,
    USER,
    close_code,
    handshake_status,
    post_stream,
    sse_events,
    text_of,
    ws_connect,
    ws_events,
)
from tokenwire.edge.keys import KeyStore, TokenSigner, key_file_line, new_api_key
from tokenwire.edge.security import OriginPolicy, normalize_origin
from tokenwire.providers.scripted import Script, scripted_text
from tokenwire.settings import Settings
from tokenwire_client import AsyncClient, ServerError

KEY = "tw_test-key-alice"
OTHER = "tw_test-key-bob"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- pure parts -------------------------------------------------------------------------------


def test_signed_token_round_trip_expiry_and_tampering():
    signer = TokenSigner(b"secret")
    token, expires = signer.mint("abcd", 30, now=1000.0)
    assert expires == 1030
    assert signer.verify(token, now=1029.0) == "abcd"
    with pytest.raises(Exception, match="expired"):
        signer.verify(token, now=1030.0)
    prefix, key_id, expiry, signature = token.split(".")
    forged = f"{prefix}.{key_id}.{int(expiry) + 3600}.{signature}"
    with pytest.raises(Exception, match="signature"):
        signer.verify(forged, now=1000.0)
    with pytest.raises(Exception, match="signature"):
        TokenSigner(b"other secret").verify(token, now=1000.0)
    with pytest.raises(Exception, match="malformed"):
        signer.verify("twt1.abcd", now=1000.0)


def test_key_file_holds_digests_only_and_names(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# team keys\n{key_file_line(KEY, 'alice')}\n\n{key_file_line(OTHER)}\n")
    assert KEY not in path.read_text()
    store = KeyStore([], path)
    alice, bob = store.lookup(KEY), store.lookup(OTHER)
    assert alice is not None and alice.name == "alice" and len(alice.key_id) == 16
    assert bob is not None and bob.name == f"key_{bob.key_id}"
    assert store.lookup("tw_unknown") is None
    assert store.by_id(alice.key_id) == alice


def test_key_file_with_a_bad_line_is_refused_by_line_number(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"{key_file_line(KEY)}\n{KEY}\n")
    with pytest.raises(ValueError, match="line 2") as caught:
        KeyStore([], path)
    assert KEY not in str(caught.value)


def test_new_keys_are_random_and_long():
    keys = {new_api_key() for _ in range(100)}
    assert len(keys) == 100 and all(len(k) > 40 and k.startswith("tw_") for k in keys)


@pytest.mark.parametrize(
    ("origin", "normalized"),
    [
        ("https://App.Example.com", "https://app.example.com"),
        ("https://app.example.com:443/", "https://app.example.com"),
        ("http://localhost:8000", "http://localhost:8000"),
    ],
)
def test_origins_are_normalized(origin, normalized):
    assert normalize_origin(origin) == normalized


@pytest.mark.parametrize(
    "bad", ["*", "https://*.example.com", "app.example.com", "https://a.com/path", "null"]
)
def test_wildcards_and_non_origins_are_refused_in_settings(bad):
    with pytest.raises(ValueError):
        OriginPolicy([bad])


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser
        ("https://app.example.com", True),
        ("https://APP.example.com:443", True),
        ("http://testserver", True),  # the server's own origin
        ("https://app.example.com.evil.net", False),
        ("https://evil-app.example.com", False),
        ("https://evil.com/https://app.example.com", False),
        ("http://app.example.com", False),  # another scheme is another origin
        ("https://app.example.com:8443", False),
        ("null", False),
        ("garbage", False),
    ],
)
def test_origin_allowlist_is_exact(origin, allowed):
    policy = OriginPolicy(["https://app.example.com"])
    scope = {"type": "http", "scheme": "http", "headers": [(b"host", b"testserver")]}
    assert policy.allows(origin, scope) is allowed


# -- settings ---------------------------------------------------------------------------------


def test_keys_and_origins_are_comma_separated_in_the_environment(monkeypatch):
    monkeypatch.setenv("TOKENWIRE_API_KEYS", f"{KEY}, {OTHER}")
    monkeypatch.setenv("TOKENWIRE_ALLOWED_ORIGINS", "https://a.example,https://b.example")
    settings = Settings()
    assert [k.get_secret_value() for k in settings.api_keys] == [KEY, OTHER]
    assert KEY not in repr(settings)
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]


def test_auth_required_without_keys_refuses_to_start():
    with pytest.raises(ValueError, match="auth=required"):
        scripted_app(auth="required")


def test_no_keys_on_a_public_address_warns_loudly(caplog):
    with caplog.at_level(logging.WARNING, logger="tokenwire"):
        scripted_app(host="0.0.0.0")
    assert "AUTHENTICATION IS OFF" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tokenwire"):
        scripted_app(host="127.0.0.1")
        scripted_app(host="0.0.0.0", api_keys=KEY)
    assert "AUTHENTICATION IS OFF" not in caplog.text


async def test_auth_off_ignores_configured_keys():
    app, _ = scripted_app(api_keys=KEY, auth="off")
    async with asgi_client(app) as http:
        response = await post_stream(http, "")
    assert response.status_code == 200
    assert text_of(sse_events(response.text)) == scripted_text(12)


# -- HTTP -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing credentials"),
        (bearer("tw_wrong"), "unknown or revoked API key"),
        ({"Authorization": f"Basic {KEY}"}, "Bearer"),
        (bearer("twt1.0000.99999999999.forged"), "signature"),
    ],
)
async def test_http_without_a_valid_key_is_401(headers, message):
    app, provider = scripted_app(api_keys=KEY)
    async with asgi_client(app) as http:
        for route in ("/v1/streams", "/v1/chat/completions"):
            response = await http.post(route, json={"messages": USER}, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer")
            error = response.json()["error"]
            assert error["code"] == "unauthorized" and message in error["message"]
            if route == "/v1/streams":
                assert error["retryable"] is False
            else:  # OpenAI's error shape on the OpenAI-compatible routes
                assert error["type"] == "authentication_error" and error["param"] is None
        assert (await http.get("/v1/models", headers=headers)).status_code == 401
        assert (await http.get("/metrics", headers=headers)).status_code == 401
        assert (await http.get("/healthz", headers=headers)).status_code == 200
    assert provider.records == []


async def test_http_with_a_key_streams_over_both_sdk_transports(transport):
    app, _ = scripted_app(Script(tokens=20), api_keys=f"{OTHER},{KEY}")
    with serve(app) as server:
        async with AsyncClient(server.base_url, transport=transport, api_key=KEY) as client:
            assert await client.text(USER) == scripted_text(20)
        async with AsyncClient(server.base_url, transport=transport, api_key="nope") as client:
            with pytest.raises(ServerError) as caught:
                await client.text(USER)
    if transport == "sse":
        assert (caught.value.status, caught.value.code) == (401, "unauthorized")


async def test_openai_sdk_gets_an_authentication_error():
    app, _ = scripted_app(api_keys=KEY)
    with serve(app) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="wrong")
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="scripted", messages=USER)
        good = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=KEY)
        answer = await good.chat.completions.create(model="scripted", messages=USER)
        assert answer.choices[0].message.content == scripted_text(12)
        await client.close()
        await good.close()


# -- signed query tokens ----------------------------------------------------------------------


async def mint(http: httpx.AsyncClient, key: str, **body: object) -> dict:
    response = await http.post("/v1/tokens", json=body or None, headers=bearer(key))
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


async def test_query_token_works_for_get_and_websocket_not_for_post():
    app, _ = scripted_app(Script(tokens=8), api_keys=KEY, token_ttl=30)
    with serve(app) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            minted = await mint(http, KEY)
            token = minted["token"]
            assert minted["expires_in"] == 30 and minted["expires_at"] > time.time()
            assert (await http.get("/v1/models", params={"token": token})).status_code == 200
            assert (await http.get("/v1/models", headers=bearer(token))).status_code == 200
            refused = await http.post(
                "/v1/streams", params={"token": token}, json={"messages": USER}
            )
            assert refused.status_code == 401  # query tokens only on GET and WebSocket
            accepted = await post_stream(http, "", headers=bearer(token))
            assert text_of(sse_events(accepted.text)) == scripted_text(8)
            # a token cannot mint tokens: they would never expire
            renewed = await http.post("/v1/tokens", headers=bearer(token))
            assert renewed.status_code == 401
            assert (await http.post("/v1/tokens", json={"ttl": 31}, headers=bearer(KEY))).json()[
                "error"
            ]["message"] == "ttl: must be in [1, 30.0] seconds"
        async with ws_connect(server.base_url, path=f"/v1/ws?token={token}") as ws:
            await ws.send(json.dumps(GENERATE))
            assert text_of(await ws_events(ws)) == scripted_text(8)
        status, body = await handshake_status(server.base_url, path="/v1/ws?token=" + KEY)
        assert status == 401 and "signed token" in body["error"]["message"]


async def test_expired_query_token_is_401_on_http_and_websocket():
    app, _ = scripted_app(api_keys=KEY)
    with serve(app) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            minted = await mint(http, KEY, ttl=1)
            token = minted["token"]
            assert (await http.get("/v1/models", params={"token": token})).status_code == 200
            await wait_for(lambda: time.time() >= minted["expires_at"], within=5)
            expired = await http.get("/v1/models", params={"token": token})
            assert expired.status_code == 401
            assert "token expired" in expired.json()["error"]["message"]
        status, body = await handshake_status(server.base_url, path=f"/v1/ws?token={token}")
        assert status == 401 and "token expired" in body["error"]["message"]


async def test_revoking_a_key_in_the_key_file_revokes_it_and_its_tokens(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"{key_file_line(KEY, 'alice')}\n{key_file_line(OTHER, 'bob')}\n")
    app, _ = scripted_app(Script(tokens=6), api_keys_file=str(path))
    with serve(app) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            token = (await mint(http, KEY))["token"]
            async with ws_connect(server.base_url, additional_headers=bearer(KEY)) as ws:
                await ws.send(json.dumps(GENERATE))
                assert text_of(await ws_events(ws)) == scripted_text(6)
                path.write_text(f"{key_file_line(OTHER, 'bob')}\n")  # alice is revoked

                async def revoked() -> bool:
                    response = await http.get("/v1/models", headers=bearer(KEY))
                    return response.status_code == 401

                deadline = time.monotonic() + 10
                while not await revoked():
                    assert time.monotonic() < deadline, "the key file was not re-read"
                    await asyncio.sleep(0.2)
                assert (await http.get("/v1/models", params={"token": token})).status_code == 401
                assert (await http.get("/v1/models", headers=bearer(OTHER))).status_code == 200
                # the open socket of the revoked key can start no new stream
                await ws.send(json.dumps(GENERATE))
                [error] = await ws_events(ws)
                assert error["type"] == "error" and error["code"] == "unauthorized"
            status, _ = await handshake_status(server.base_url, additional_headers=bearer(KEY))
            assert status == 401


# -- WebSocket handshake and first-message auth -----------------------------------------------


async def test_websocket_handshake_without_a_valid_key_is_denied_before_accept():
    app, provider = scripted_app(api_keys=KEY)
    with serve(app) as server:
        status, body = await handshake_status(
            server.base_url, additional_headers=bearer("tw_wrong")
        )
        assert status == 401 and body["error"]["code"] == "unauthorized"
        async with ws_connect(server.base_url, additional_headers=bearer(KEY)) as ws:
            await ws.send(json.dumps(GENERATE))
            assert text_of(await ws_events(ws)) == scripted_text(12)
    assert len(provider.records) == 1


async def test_websocket_handshake_denied_in_process_is_a_close_before_accept():
    app, _ = scripted_app(api_keys=KEY)
    async with asgi_client(app) as http:
        with pytest.raises(Exception) as caught:
            async with aconnect_ws("/v1/ws", http, headers=bearer("tw_wrong")):
                pass
    assert getattr(caught.value, "code", None) == 1008


async def test_websocket_first_message_auth():
    app, provider = scripted_app(api_keys=KEY, auth_timeout=0.5)
    with serve(app) as server:
        async with ws_connect(server.base_url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": KEY}))
            await ws.send(json.dumps(GENERATE))
            assert text_of(await ws_events(ws)) == scripted_text(12)
        async with ws_connect(server.base_url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": "tw_wrong"}))
            assert await close_code(ws) == 1008
        async with ws_connect(server.base_url) as ws:
            await ws.send(json.dumps(GENERATE))  # not authenticated yet
            assert await close_code(ws) == 1008
        async with ws_connect(server.base_url) as ws:
            started = time.monotonic()
            assert await close_code(ws) == 1008  # silence: auth_timeout
            assert time.monotonic() - started < 5
        async with ws_connect(server.base_url) as ws:
            await ws.send(b"\xff\xfe not json")
            assert await close_code(ws) == 1008
    assert len(provider.records) == 1


async def test_websocket_first_message_auth_in_process():
    app, _ = scripted_app(api_keys=KEY)
    async with asgi_client(app) as http:
        async with aconnect_ws("/v1/ws", http) as ws:
            await ws.send_text(json.dumps({"type": "auth", "token": KEY}))
            await ws.send_text(json.dumps({"type": "ping", "id": 7}))
            assert json.loads(await ws.receive_text()) == {"type": "pong", "id": 7}


async def test_streams_are_visible_only_to_their_key():
    app, _ = scripted_app(Script(tokens=200, interval=0.01), api_keys=f"{KEY},{OTHER}")
    async with asgi_client(app) as http, aconnect_ws("/v1/ws", http, headers=bearer(KEY)) as ws:
        await ws.send_text(json.dumps(GENERATE))
        start = json.loads(await ws.receive_text())
        stream_id = start["stream_id"]
        other = await http.post(f"/v1/streams/{stream_id}/cancel", headers=bearer(OTHER))
        assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
        own = await http.post(f"/v1/streams/{stream_id}/cancel", headers=bearer(KEY))
        assert own.status_code == 202
        while (frame := json.loads(await ws.receive_text()))["type"] != "stream.end":
            pass
        assert frame["finish_reason"] == "cancelled"


# -- Origin -----------------------------------------------------------------------------------

GOOD = "https://chat.example.com"
EVIL = "https://evil.example.net"


async def test_starlette_cors_middleware_does_not_protect_websockets():
    """The reason the Origin check is our own: CORSMiddleware lets any Origin's WebSocket in."""

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hijacked")
        await websocket.close()

    bare = Starlette(
        routes=[WebSocketRoute("/ws", echo)],
        middleware=[Middleware(CORSMiddleware, allow_origins=[GOOD])],
    )
    with serve(bare) as server:
        async with ws_connect(server.base_url, path="/ws", origin=EVIL) as ws:
            assert await ws.recv() == "hijacked"
    app, _ = scripted_app(allowed_origins=GOOD)
    with serve(app) as server:
        status, body = await handshake_status(server.base_url, origin=EVIL)
    assert status == 403 and body["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    "evil", [EVIL, GOOD + ".evil.net", "https://evil-chat.example.com", "null"]
)
async def test_websocket_from_an_unlisted_origin_is_403_and_listed_ones_pass(evil):
    app, provider = scripted_app(api_keys=KEY, allowed_origins=f"https://other.example,{GOOD}")
    with serve(app) as server:
        status, _ = await handshake_status(
            server.base_url, origin=evil, additional_headers=bearer(KEY)
        )
        assert status == 403
        for origin in (GOOD, server.base_url, None):  # listed, same-origin, not a browser
            async with ws_connect(
                server.base_url, origin=origin, additional_headers=bearer(KEY)
            ) as ws:
                await ws.send(json.dumps(GENERATE))
                assert text_of(await ws_events(ws)) == scripted_text(12)
    assert len(provider.records) == 3


async def test_websocket_same_origin_only_without_an_allowlist():
    app, _ = scripted_app()
    with serve(app) as server:
        status, _ = await handshake_status(server.base_url, origin=GOOD)
        assert status == 403
        async with ws_connect(server.base_url, origin=server.base_url) as ws:
            await ws.send(json.dumps({"type": "ping", "id": 1}))
            assert json.loads(await ws.recv())["type"] == "pong"


async def test_http_cors_uses_the_same_allowlist():
    app, provider = scripted_app(allowed_origins=GOOD)
    async with asgi_client(app) as http:
        allowed = await post_stream(http, "", headers={"Origin": GOOD})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == GOOD
        assert "x-stream-id" in allowed.headers["access-control-expose-headers"].lower()
        evil = await post_stream(http, "", headers={"Origin": EVIL})
        assert evil.status_code == 403 and evil.json()["error"]["code"] == "forbidden"
        assert "access-control-allow-origin" not in evil.headers
        preflight = {"Access-Control-Request-Method": "POST"}
        preflight["Access-Control-Request-Headers"] = "authorization,content-type"
        ok = await http.options("/v1/streams", headers={"Origin": GOOD, **preflight})
        assert ok.status_code == 200
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        bad = await http.options("/v1/streams", headers={"Origin": EVIL, **preflight})
        assert bad.status_code in (400, 403)
        assert "access-control-allow-origin" not in bad.headers
    assert len(provider.records) == 1


async def test_drive_by_post_to_an_open_local_server_is_refused():
    """No keys on 127.0.0.1: a web page in the user's browser still cannot start streams."""
    app, provider = scripted_app()
    with serve(app) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.post(
                "/v1/streams",
                content=json.dumps({"messages": USER}),
                headers={"Origin": EVIL, "Content-Type": "text/plain"},
            )
    assert response.status_code == 403
    assert provider.records == []


async def test_request_ids_are_echoed_or_made():
    app, _ = scripted_app()
    async with asgi_client(app) as http:
        given = await http.get("/healthz", headers={"X-Request-Id": "abc-123"})
        made = await http.get("/healthz", headers={"X-Request-Id": "bad id"})
    assert given.headers["x-request-id"] == "abc-123"
    assert made.headers["x-request-id"] not in ("", "bad id")
    assert len(made.headers["x-request-id"]) == 16


async def test_an_sse_streams_start_carries_its_request_id():
    """``stream.start``'s ``request_id`` is the response's ``X-Request-Id``, given or made."""
    app, _ = scripted_app()
    async with asgi_client(app) as http:
        given = await post_stream(http, "", headers={"X-Request-Id": "abc-123"})
        made = await post_stream(http, "")
    assert sse_events(given.text)[0]["request_id"] == "abc-123"
    assert sse_events(made.text)[0]["request_id"] == made.headers["x-request-id"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{", 400, "not valid JSON"),
        (b'{"ttl": 0}', 422, "ttl: must be in [1, 60.0] seconds"),
        (b'{"ttl": true}', 422, "ttl: must be a number"),
        (b'{"ttl": 5, "scope": "all"}', 422, "expected {'ttl': seconds}"),
        (b"[]", 422, "expected {'ttl': seconds}"),
    ],
)
async def test_token_requests_with_a_bad_body_are_refused_by_name(body, status, message):
    app, _ = scripted_app(api_keys=KEY)
    async with asgi_client(app) as http:
        response = await http.post("/v1/tokens", content=body, headers=bearer(KEY))
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and message in error["message"]


async def test_tokens_are_minted_with_auth_off_too():
    app, _ = scripted_app()
    async with asgi_client(app) as http:
        response = await http.post("/v1/tokens")
        assert response.status_code == 201
        token = response.json()["token"]
        assert (await http.get("/v1/models", params={"token": token})).status_code == 200


async def test_a_detached_stream_resumes_with_its_own_key_only():
    app, _ = scripted_app(Script(tokens=8, interval=0.2), api_keys=f"{KEY},{OTHER}")
    with serve(app) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            created = await http.post(
                "/v1/streams",
                json={"messages": USER, "on_disconnect": "detach"},
                headers={**bearer(KEY), "Accept": "application/json"},
            )
            assert created.status_code == 201
            events_url = created.json()["events_url"]
            assert (await http.get(events_url)).status_code == 401
            token = (await mint(http, KEY))["token"]
            other = (await mint(http, OTHER))["token"]
            refused = await http.get(events_url, params={"token": other})  # still running
            assert refused.status_code == 404
            own = await http.get(events_url, params={"token": token})
            assert own.status_code == 200
            assert text_of(sse_events(own.text)) == scripted_text(8)
