"""Logs: structured, with a request id, and never a key, a token or message content; also not
in uvicorn's access and WebSocket lines, which print paths with their query strings."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.helpers import scripted_app, serve
from tests.security_helpers import handshake_status, text_of, ws_connect, ws_events
from tokenwire.logs import (
    REDACTED,
    JSONFormatter,
    RedactingFilter,
    RequestIdFilter,
    configure_logging,
    redact,
    request_id_var,
)
from tokenwire.providers.scripted import scripted_text

KEY = "tw_secret-key-0123456789"
WRONG = "tw_wrong-key-9876543210"
PROMPT = "my private prompt 4242"
MESSAGES = [{"role": "user", "content": PROMPT}]


def test_redact_removes_query_tokens_and_bearer_credentials():
    assert (
        redact("GET /v1/ws?token=twt1.a.1.sig HTTP/1.1") == "GET /v1/ws?token=[redacted] HTTP/1.1"
    )
    assert redact("/x?a=1&token=abc&b=2") == "/x?a=1&token=[redacted]&b=2"
    assert redact("Authorization: Bearer tw_abc") == "Authorization: Bearer [redacted]"
    assert redact("/x?mytoken=keep") == "/x?mytoken=keep"


@contextmanager
def captured(*names: str) -> Iterator[io.StringIO]:
    """Every record of these loggers (and their children), formatted with their arguments and
    structured fields, as JSON lines; with the request id, as ``configure_logging`` does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    handler.addFilter(RequestIdFilter())
    handler.setLevel(logging.DEBUG)
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    try:
        yield stream
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(saved[name])


async def test_no_key_token_or_content_in_any_log_line():
    app, _ = scripted_app(api_keys=KEY)
    with serve(app, access_log=True) as server:
        loggers = ("uvicorn", "uvicorn.error", "uvicorn.access", "tokenwire", "websockets.server")
        with captured(*loggers) as logs:
            auth = {"Authorization": f"Bearer {KEY}"}
            async with httpx.AsyncClient(base_url=server.base_url) as http:
                minted = await http.post("/v1/tokens", headers=auth)
                token = minted.json()["token"]
                ok = await http.get("/v1/models", params={"token": token})
                assert ok.status_code == 200
                request_id = "req-logs-test"
                headers = {**auth, "X-Request-Id": request_id}
                streamed = await http.post(
                    "/v1/streams", json={"messages": MESSAGES}, headers=headers
                )
                assert streamed.status_code == 200
                wrong = await http.post(
                    "/v1/streams",
                    json={"messages": MESSAGES},
                    headers={"Authorization": f"Bearer {WRONG}"},
                )
                assert wrong.status_code == 401
                bad_query = await http.get("/v1/models", params={"token": WRONG})
                assert bad_query.status_code == 401
            async with ws_connect(server.base_url, path=f"/v1/ws?token={token}") as ws:
                await ws.send(json.dumps({"type": "generate", "messages": MESSAGES}))
                assert text_of(await ws_events(ws)) == scripted_text(12)
            async with ws_connect(server.base_url) as ws:
                await ws.send(json.dumps({"type": "auth", "token": KEY}))
                await ws.send(json.dumps({"type": "generate", "messages": MESSAGES}))
                assert text_of(await ws_events(ws)) == scripted_text(12)
            status, _ = await handshake_status(server.base_url, path=f"/v1/ws?token={token}x")
            assert status == 401
    text = logs.getvalue()
    for secret in (KEY, WRONG, token, token.rsplit(".", 1)[1], PROMPT):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines()]
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert any("token=[redacted]" in line["message"] for line in access)
    ws_lines = [line for line in lines if "WebSocket /v1/ws" in line["message"]]
    assert any("token=[redacted]" in line["message"] for line in ws_lines)
    refused = [line for line in lines if line["message"] == "request refused"]
    assert {line["code"] for line in refused} == {"unauthorized"} and len(refused) == 3
    ended = [line for line in lines if line["message"] == "stream ended"]
    assert len(ended) == 3
    assert request_id in {line.get("request_id") for line in ended}
    assert all(line.get("request_id") for line in ended)
    assert not [line for line in lines if "without completing handshake" in line["message"]]


def test_configured_json_logs_carry_the_request_id_and_are_redacted(capsys):
    logger = logging.getLogger("tokenwire")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        configure_logging("info", "json")
        reset = request_id_var.set("abc")
        logging.getLogger("tokenwire.test").info(
            "seen %s", "/v1/ws?token=twt1.x.1.sig", extra={"stream_id": "str_1"}
        )
        request_id_var.reset(reset)
    finally:
        logger.handlers, logger.level, logger.propagate = saved
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "seen /v1/ws?token=[redacted]"
    assert line["request_id"] == "abc" and line["stream_id"] == "str_1"
    assert line["level"] == "INFO" and line["logger"] == "tokenwire.test"


def test_uvicorn_loggers_get_the_redacting_filter():
    scripted_app()
    for name in ("uvicorn.access", "uvicorn.error"):
        assert any(isinstance(f, RedactingFilter) for f in logging.getLogger(name).filters)


@pytest.mark.parametrize(
    "line",
    [
        "GET /v1/ws?%74oken=tw1.secret.1.sig HTTP/1.1",
        "GET /v1/streams/s/events?t%6Fk%65n=tw1.secret.1.sig",
        "GET /v1/ws?a=1&%74%6F%6B%65%6E=tw1.secret.1.sig&b=2",
    ],
)
def test_a_percent_encoded_token_parameter_is_redacted(line):
    """The server decodes the query's names (``%74oken`` is ``token``), so redaction must."""
    redacted = redact(line)
    assert "tw1.secret" not in redacted
    assert REDACTED in redacted
