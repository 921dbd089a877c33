"""Forwarded headers (tokenwire.edge.proxy) and the Host and Origin checks that use them: the
``Forwarded`` grammar (RFC 7239) as byte-exact tables, who is trusted, which hosts are served;
then in-process, the app with forwarded headers from a trusted and an untrusted peer, and the
demo page's static files fetched with a foreign ``Origin``. (A real nginx in front of a real
server: tests/test_behind_nginx.py.)"""

from __future__ import annotations

import httpx
import pytest
from httpx_ws import aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from starlette.applications import Starlette

from tests.helpers import scripted_app
from tokenwire.edge.proxy import Forwarded, TrustedProxies, forwarded_of, parse_forwarded
from tokenwire.edge.security import HostPolicy

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("header", "elements"),
    [
        (
            "for=192.0.2.60;proto=http;by=203.0.113.43",
            [{"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}],
        ),
        ('For="[2001:db8:cafe::17]:4711"', [{"for": "[2001:db8:cafe::17]:4711"}]),
        ("for=192.0.2.43, for=198.51.100.17", [{"for": "192.0.2.43"}, {"for": "198.51.100.17"}]),
        ('host="a.example:8443";proto=https', [{"host": "a.example:8443", "proto": "https"}]),
        ('host="a\\"b"', [{"host": 'a"b'}]),
        ('for="x,y";host=h', [{"for": "x,y", "host": "h"}]),
        (" for=a ; host=h ,for=b", [{"for": "a", "host": "h"}, {"for": "b"}]),
        ("for=a;", [{"for": "a"}]),
        ("", []),
    ],
)
def test_forwarded_elements(header: str, elements: list[dict[str, str]]) -> None:
    """RFC 7239 section 4 (its examples first) and section 7.1 (quoted IPv6 with a port)."""
    assert parse_forwarded(header) == elements


@pytest.mark.parametrize(
    "header", ["for", "for=a=b", 'host="unterminated', "for=a;for=b", "for=a host=b", "for=a/b"]
)
def test_malformed_forwarded_is_refused(header: str) -> None:
    with pytest.raises(ValueError):
        parse_forwarded(header)


@pytest.mark.parametrize(
    ("headers", "view"),
    [
        ([], Forwarded()),
        (
            [(b"x-forwarded-host", b"chat.example:8080"), (b"x-forwarded-proto", b"https")],
            Forwarded("chat.example:8080", "https"),
        ),
        # the nearest proxy's word: the last element, the last value
        (
            [(b"forwarded", b"host=evil.example;proto=http, host=chat.example;proto=https")],
            Forwarded("chat.example", "https"),
        ),
        ([(b"x-forwarded-host", b"evil.example, chat.example")], Forwarded("chat.example")),
        # Forwarded wins, parameter by parameter
        (
            [
                (b"x-forwarded-host", b"old.example"),
                (b"x-forwarded-proto", b"https"),
                (b"forwarded", b'host="chat.example"'),
            ],
            Forwarded("chat.example", "https"),
        ),
        ([(b"x-forwarded-proto", b"wss")], Forwarded(scheme="https")),
        # nonsense is ignored, never believed
        ([(b"x-forwarded-proto", b"gopher")], Forwarded()),
        ([(b"x-forwarded-host", b"a.example/path")], Forwarded()),
        ([(b"x-forwarded-host", b"a.example:99999999")], Forwarded()),
        (
            [(b"forwarded", b"host=a;host=b"), (b"x-forwarded-host", b"c.example")],
            Forwarded("c.example"),
        ),
        ([(b"x-forwarded-host", b"[::1]:8000")], Forwarded("[::1]:8000")),
    ],
)
def test_what_a_proxy_forwarded(headers: list[tuple[bytes, bytes]], view: Forwarded) -> None:
    assert forwarded_of(headers) == view


def test_trusted_proxies() -> None:
    proxies = TrustedProxies(["127.0.0.1", "::1", "10.0.0.0/8"])
    assert proxies.trusts("127.0.0.1") and proxies.trusts("::1") and proxies.trusts("10.2.3.4")
    assert proxies.trusts("::ffff:10.0.0.1")  # an IPv4 peer on a dual-stack socket
    assert not proxies.trusts("127.0.0.2") and not proxies.trusts("11.0.0.1")
    assert not proxies.trusts(None) and not proxies.trusts("nginx") and not proxies.trusts("")
    assert TrustedProxies(["*"]).trusts("203.0.113.9") and not TrustedProxies([]).trusts("::1")
    with pytest.raises(ValueError, match="nginx-box"):
        TrustedProxies(["nginx-box"])


@pytest.mark.parametrize(
    ("allowed", "loopback", "host", "forwarded", "served"),
    [
        ([], True, "127.0.0.1:8000", None, True),
        ([], True, "localhost", None, True),
        ([], True, "[::1]:8000", None, True),
        ([], True, "evil.example:8000", None, False),  # DNS rebinding
        ([], True, None, None, False),
        ([], True, "127.0.0.1:8000", "chat.example:8443", True),  # nginx's proxy_pass Host
        ([], False, "anything.example", "anything.example", True),
        (["chat.example"], True, "chat.example", None, True),  # proxy_set_header Host $host
        (["chat.example"], True, "127.0.0.1:8000", "chat.example:8443", True),
        (["chat.example"], True, "127.0.0.1:8000", "evil.example", False),
        (["chat.example"], True, "evil.example", "chat.example", False),
        (["chat.example"], False, "127.0.0.1:8000", None, False),
        (["*.example.com"], False, "a.example.com", None, True),
        (["*.example.com"], False, "example.com", None, False),
        (["*.example.com"], False, "a.example.com.evil.net", None, False),
        (["*"], False, "whatever", "anything", True),
    ],
)
def test_which_hosts_are_served(
    allowed: list[str], loopback: bool, host: str | None, forwarded: str | None, served: bool
) -> None:
    reason = HostPolicy(allowed, loopback_bind=loopback).refusal(host, forwarded)
    assert (reason is None) == served, reason
    if reason is not None:
        assert "TOKENWIRE_ALLOWED_HOSTS" in reason


@pytest.mark.parametrize("pattern", ["chat.*.example", "*example.com", "*.", "**.example"])
def test_bad_host_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="TOKENWIRE_ALLOWED_HOSTS"):
        HostPolicy([pattern], loopback_bind=True)


def client_from(app: Starlette, peer: str) -> httpx.AsyncClient:
    transport = ASGIWebSocketTransport(app, client=(peer, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")


PUBLIC = {
    "Origin": "https://chat.example:8443",
    "X-Forwarded-Host": "chat.example:8443",
    "X-Forwarded-Proto": "https",
}


@pytest.mark.parametrize(
    "proxy",
    [
        {"X-Forwarded-Host": "chat.example:8443", "X-Forwarded-Proto": "https"},
        {"Forwarded": 'for=198.51.100.7;host="chat.example:8443";proto=https'},
    ],
)
async def test_the_public_origin_is_believed_from_a_trusted_peer_only(
    proxy: dict[str, str],
) -> None:
    app, _ = scripted_app(forwarded_allow_ips="10.0.0.5")
    headers = {**proxy, "Origin": "https://chat.example:8443", "Accept": "application/json"}
    async with app.router.lifespan_context(app):
        async with client_from(app, "10.0.0.5") as proxied:
            created = await proxied.post(
                "/v1/streams", json={"messages": MESSAGES}, headers=headers
            )
            async with aconnect_ws("/v1/ws", proxied, headers=dict(headers)) as ws:
                await ws.send_json({"type": "generate", "request_id": "a", "messages": MESSAGES})
                assert (await ws.receive_json())["type"] == "stream.start"
        async with client_from(app, "10.0.0.6") as direct:
            spoofed = await direct.post("/v1/streams", json={"messages": MESSAGES}, headers=headers)
            try:
                async with aconnect_ws("/v1/ws", direct, headers=dict(headers)):
                    accepted = True
            except Exception:  # the handshake was refused (httpx-ws raises its upgrade error)
                accepted = False
    assert created.status_code == 201, created.text
    # where to resume: the public URL (a client behind the proxy cannot reach 127.0.0.1:8000)
    assert created.json()["events_url"].startswith("https://chat.example:8443/v1/streams/")
    assert spoofed.status_code == 403 and not accepted
    message = spoofed.json()["error"]["message"]
    assert "'https://chat.example:8443'" in message and "'http://127.0.0.1:8000'" in message


async def test_the_demo_page_and_its_modules_need_no_origin_match() -> None:
    """A module script is fetched with ``Origin`` (a CORS request), so a proxy that forwards
    nothing must still serve the page; the API behind it keeps its Origin check."""
    app, _ = scripted_app()
    foreign = {"Origin": "http://chat.example:8080"}
    async with app.router.lifespan_context(app), client_from(app, "127.0.0.1") as http:
        page = await http.get("/", headers=foreign)
        module = await http.get("/web/app.js", headers=foreign)
        api = await http.get("/v1/models", headers=foreign)
        posted = await http.post("/web/app.js", headers=foreign)
    assert page.status_code == 200 and module.status_code == 200
    assert api.status_code == 403 and posted.status_code == 403
