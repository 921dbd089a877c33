"""tokenwire behind a real nginx (the README's recipe, tests/nginx.py) in front of a real
``tokenwire serve``: both transports, resume with ``Last-Event-ID``, TLS at the proxy, the
public ``Host`` forwarded or not; and a client that reaches tokenwire directly cannot claim
another host or scheme with forwarded headers."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.helpers import ServerProcess
from tests.nginx import PUBLIC_NAME, Nginx
from tokenwire.providers.scripted import scripted_text

MESSAGES = [{"role": "user", "content": "hi"}]
TOKENS = 8


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path, "server", provider="scripted", scripted_tokens=TOKENS)
    try:
        yield process.start()
    finally:
        process.stop()


def public_client(nginx: Nginx, *, tls: bool) -> httpx.Client:
    """An httpx client as a browser on the page ``nginx.url(tls=tls)`` would be: it connects to
    nginx on 127.0.0.1 but names the public host and sends the page's ``Origin``."""
    port = nginx.tls_port if tls else nginx.http_port
    return httpx.Client(
        base_url=f"{'https' if tls else 'http'}://127.0.0.1:{port}",
        headers={"Host": f"{PUBLIC_NAME}:{port}", "Origin": nginx.url(tls=tls)},
        verify=False,
        timeout=30,
    )


def sse_events(response: httpx.Response) -> list[dict[str, object]]:
    return [
        json.loads(line.removeprefix("data: "))
        for line in response.iter_lines()
        if line.startswith("data: ")
    ]


def stream_and_resume(http: httpx.Client) -> None:
    """A stream over SSE to its end, then resumed from ``Last-Event-ID: 3``: the same events
    from seq 4 on."""
    with http.stream("POST", "/v1/streams", json={"messages": MESSAGES}) as response:
        assert response.status_code == 200, response.read()
        events = sse_events(response)
    assert "".join(str(e.get("delta", "")) for e in events) == scripted_text(TOKENS)
    stream_id = events[0]["stream_id"]
    path = f"/v1/streams/{stream_id}/events"
    with http.stream("GET", path, headers={"Last-Event-ID": "3"}) as response:
        assert response.status_code == 200, response.read()
        resumed = sse_events(response)
    # seq 1 is stream.start, then one token per seq (the live stream may merge deltas)
    assert resumed[0] == {"type": "stream.resumed", "stream_id": stream_id, "after_seq": 3}
    assert "".join(str(e.get("delta", "")) for e in resumed) == scripted_text(TOKENS).removeprefix(
        scripted_text(2)
    )
    assert resumed[-1] == events[-1] and resumed[-1]["type"] == "stream.end"


def generate_over_websocket(nginx: Nginx, *, tls: bool) -> str:
    """One ``generate`` over a WebSocket through nginx, as the page would open it; the text."""
    port = nginx.tls_port if tls else nginx.http_port
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    uri = f"{'wss' if tls else 'ws'}://{PUBLIC_NAME}:{port}/v1/ws"
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    with connect(
        uri,
        sock=sock,
        ssl=context,
        origin=nginx.url(tls=tls),
        open_timeout=30,  # type: ignore[arg-type]  # connect()'s stubs omit open_timeout beside sock=
    ) as ws:
        ws.send(json.dumps({"type": "generate", "request_id": "a", "messages": MESSAGES}))
        text = ""
        while True:
            event = json.loads(ws.recv(timeout=30))
            if event["type"] == "text.delta":
                text += event["delta"]
            if event["type"] in ("stream.end", "error"):
                assert event["type"] == "stream.end", event
                return text


@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls-at-the-proxy"])
def test_the_readme_recipe_carries_both_transports_and_the_page(
    server: ServerProcess, tmp_path: Path, tls: bool
) -> None:
    """The recipe as written, tokenwire with its defaults: the page's own requests carry
    ``Origin: http(s)://chat.example.test:<port>`` while nginx sends ``Host: 127.0.0.1:<port>``;
    the forwarded host and proto make that origin tokenwire's own."""
    with Nginx(tmp_path, server.port) as nginx, public_client(nginx, tls=tls) as http:
        page = http.get("/")
        module = http.get("/web/app.js")
        assert page.status_code == 200 and module.status_code == 200, module.text
        stream_and_resume(http)
        assert generate_over_websocket(nginx, tls=tls) == scripted_text(TOKENS)
        foreign = http.post(
            "/v1/streams", json={"messages": MESSAGES}, headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403, foreign.text


def test_the_public_host_forwarded_as_host_is_served_once_listed(tmp_path: Path) -> None:
    """``proxy_set_header Host $host;`` (no port, on a non-default port): refused with 400
    naming TOKENWIRE_ALLOWED_HOSTS until the public name is listed; then both transports work
    (the Origin check takes the port from ``X-Forwarded-Host: $http_host``)."""
    extra = "proxy_set_header Host $host;"
    plain = ServerProcess(tmp_path, "plain", provider="scripted", scripted_tokens=TOKENS)
    listed = ServerProcess(
        tmp_path,
        "listed",
        provider="scripted",
        scripted_tokens=TOKENS,
        allowed_hosts=PUBLIC_NAME,
    )
    try:
        with Nginx(tmp_path / "1", plain.start().port, extra=extra) as nginx:
            with public_client(nginx, tls=False) as http:
                refused = http.post("/v1/streams", json={"messages": MESSAGES})
        assert refused.status_code == 400, refused.text
        assert "TOKENWIRE_ALLOWED_HOSTS" in refused.json()["error"]["message"]
        with Nginx(tmp_path / "2", listed.start().port, extra=extra) as nginx:
            with public_client(nginx, tls=False) as http:
                assert http.get("/web/app.js").status_code == 200
                stream_and_resume(http)
            assert generate_over_websocket(nginx, tls=False) == scripted_text(TOKENS)
    finally:
        plain.stop()
        listed.stop()


def test_sse_through_nginx_is_not_buffered(tmp_path: Path) -> None:
    """A stream that stalls after 2 tokens: its first events reach the client through nginx
    (``X-Accel-Buffering: no``); a buffering proxy would hold them until the stall ends (10
    minutes; the client's 30 s read timeout fails the test first)."""
    stalled = ServerProcess(
        tmp_path,
        "stalled",
        provider="scripted",
        scripted_tokens=TOKENS,
        scripted_stall_after=2,
        scripted_stall=600,
        heartbeat_interval="",  # no `: ping` to keep a buffered read alive: it times out
    )
    try:
        with Nginx(tmp_path, stalled.start().port) as nginx:
            with public_client(nginx, tls=False) as http:
                with http.stream("POST", "/v1/streams", json={"messages": MESSAGES}) as response:
                    assert response.status_code == 200  # nginx consumes X-Accel-Buffering
                    text = ""
                    for line in response.iter_lines():  # (deltas may be merged)
                        if line.startswith("data: ") and '"text.delta"' in line:
                            text += json.loads(line[6:])["delta"]
                            if text == scripted_text(2):
                                break
        assert text == scripted_text(2)
    finally:
        stalled.stop()


def test_a_direct_client_cannot_claim_another_host_or_scheme(tmp_path: Path) -> None:
    """tokenwire trusts forwarded headers from 127.0.0.1 only; a client connecting from
    127.0.0.2 (another loopback address) that sends them as nginx would is refused, while the
    same request from the trusted address passes."""
    server = ServerProcess(
        tmp_path,
        "direct",
        provider="scripted",
        scripted_tokens=TOKENS,
        forwarded_allow_ips="127.0.0.1",
    )
    claims: list[dict[str, str]] = [
        {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
        {"Forwarded": 'for=1.2.3.4;host="evil.example";proto=https'},
    ]
    try:
        server.start()
        for claim in claims:
            headers = {**claim, "Origin": "https://evil.example"}
            body = {"messages": MESSAGES}
            untrusted = httpx.HTTPTransport(local_address="127.0.0.2")
            with httpx.Client(base_url=server.base_url, transport=untrusted) as http:
                spoofed = http.post("/v1/streams", json=body, headers=headers)
                try:
                    with connect(
                        f"ws://127.0.0.1:{server.port}/v1/ws",
                        sock=socket.create_connection(
                            ("127.0.0.1", server.port), source_address=("127.0.0.2", 0)
                        ),
                        origin="https://evil.example",  # type: ignore[arg-type]  # websockets types origin as its Origin NewType
                        additional_headers=claim,
                        open_timeout=30,
                    ):
                        handshake = "accepted"
                except Exception as exc:  # websockets' InvalidStatus: the refused handshake
                    handshake = repr(exc)
            with httpx.Client(base_url=server.base_url) as http:
                trusted = http.post(
                    "/v1/streams", json=body, headers={**headers, "Accept": "application/json"}
                )
            assert spoofed.status_code == 403, (claim, spoofed.text)
            assert "403" in handshake, (claim, handshake)
            assert trusted.status_code == 201, (claim, trusted.text)
    finally:
        server.stop()
