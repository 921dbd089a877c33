"""Forwarded headers, believed from trusted proxies only: the host and scheme a client asked a
reverse proxy for, which the Host and Origin checks of :mod:`tokenwire.edge.security` use.

A proxy in front of tokenwire (nginx, the README's "Behind nginx") receives the browser's
request for ``https://chat.example.com`` and opens its own connection to ``127.0.0.1:8000``.
What the browser asked for travels in headers the proxy adds:

- ``Forwarded`` (RFC 7239): elements separated by ``,``, one per proxy in order, each made of
  ``name=value`` pairs separated by ``;`` (section 4), values tokens or quoted strings (RFC
  7230 section 3.2.6); ``host`` is the ``Host`` the proxy received and ``proto`` its scheme
  (section 5.3, 5.4). The last element is the nearest proxy's, the only one it vouches for.
- ``X-Forwarded-Host`` and ``X-Forwarded-Proto`` (de facto; nginx ``$http_host`` and
  ``$scheme``): the last comma-separated value, again the nearest proxy's.
- ``X-Forwarded-For``: the client's address, applied by uvicorn's ``ProxyHeadersMiddleware``
  (for logs), with the same list of trusted addresses.

``Forwarded`` wins over the ``X-Forwarded-*`` headers, parameter by parameter. Anyone can send
these headers, so they count only when the connection's peer is in ``forwarded_allow_ips``
(uvicorn's ``--forwarded-allow-ips``; default the loopback addresses); from any other peer they
are ignored. A malformed ``Forwarded`` header or an invalid host or scheme value is ignored too
(the request is then judged by its own ``Host`` and scheme, and most likely refused).

Pure parsing (:func:`parse_forwarded`, :func:`forwarded_of`) is apart from the middleware
(:class:`ForwardedHeaders`), which records the result in ``scope["tokenwire.forwarded"]``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from tokenwire.settings import check_trusted

# RFC 7230 section 3.2.6: token and quoted-string (with quoted-pair)
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PAIR = re.compile(rf"\s*({_TOKEN})=({_TOKEN}|{_QUOTED})\s*")
# RFC 3986 host (reg-name, IPv4, [IPv6]) with an optional port, as in a Host header
_HOST = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


@dataclass(frozen=True)
class Forwarded:
    """What a trusted proxy said the client asked for: ``host`` as in a ``Host`` header
    (``name[:port]``) and ``scheme`` (``http`` or ``https``); ``None`` when it did not say."""

    host: str | None = None
    scheme: str | None = None


NOTHING = Forwarded()


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """The elements of a ``Forwarded`` header (RFC 7239 section 4), each a dict of lower-case
    parameter names to unquoted values, in order (the nearest proxy's last).

    Raises ``ValueError`` for anything that does not follow the grammar (a pair without
    ``=``, an unterminated quoted string, a repeated parameter in one element: section 4
    "each parameter MUST NOT occur more than once per forwarded-element").
    """
    elements: list[dict[str, str]] = [{}]
    position = 0
    while True:
        match = _PAIR.match(value, position)
        if match is not None:
            name, raw = match.group(1).lower(), match.group(2)
            if name in elements[-1]:
                raise ValueError(f"Forwarded parameter {name!r} twice in one element")
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            elements[-1][name] = raw
            position = match.end()
        else:  # an empty pair: "[pair] *( ";" [pair] )"
            while position < len(value) and value[position] in " \t":
                position += 1
        if position == len(value):
            break
        if value[position] == ",":
            elements.append({})
        elif value[position] != ";":
            raise ValueError(f"not a Forwarded pair at {position}: {value[position:][:40]!r}")
        position += 1
    return [e for e in elements if e]


def forwarded_of(headers: Iterable[tuple[bytes, bytes]]) -> Forwarded:
    """The host and scheme the nearest proxy reports in ``Forwarded`` (wins) or
    ``X-Forwarded-Host`` / ``X-Forwarded-Proto`` of raw ASGI headers. Call it only for a
    request from a trusted proxy."""
    values: dict[bytes, list[str]] = {}
    for name, value in headers:
        if name in (b"forwarded", b"x-forwarded-host", b"x-forwarded-proto"):
            values.setdefault(name, []).append(value.decode("latin-1"))
    standard: dict[str, str] = {}
    if b"forwarded" in values:
        try:
            elements = parse_forwarded(", ".join(values[b"forwarded"]))
        except ValueError:
            elements = []
        standard = elements[-1] if elements else {}

    def nearest(parameter: str, header: bytes) -> str | None:
        if parameter in standard:
            return standard[parameter].strip()
        if header in values:
            return ", ".join(values[header]).split(",")[-1].strip()
        return None

    host = nearest("host", b"x-forwarded-host")
    scheme = nearest("proto", b"x-forwarded-proto")
    return Forwarded(
        host=host if host and _HOST.fullmatch(host) else None,
        scheme=_SCHEMES.get((scheme or "").lower()),
    )


def forwarded(scope: Scope) -> Forwarded:
    """What a trusted proxy reported for this request (:data:`NOTHING` for a direct one)."""
    view = scope.get("tokenwire.forwarded")
    return view if isinstance(view, Forwarded) else NOTHING


class TrustedProxies:
    """The peers whose forwarded headers are believed: addresses, networks, or ``*`` (any)."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = check_trusted(list(entries))
        self.entries = entries
        self.any = "*" in entries
        self.networks = [ipaddress.ip_network(e, strict=False) for e in entries if e != "*"]

    def trusts(self, peer: str | None) -> bool:
        """Whether the connection's peer address is a trusted proxy (never for no address)."""
        if self.any:
            return peer is not None
        try:
            address = ipaddress.ip_address(peer or "")
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


class ForwardedHeaders:
    """Pure ASGI middleware, outermost: for a request whose peer is a trusted proxy, puts
    :func:`forwarded_of` in ``scope["tokenwire.forwarded"]`` and its scheme in
    ``scope["scheme"]`` (``ws``/``wss`` for a WebSocket), then lets uvicorn's
    ``ProxyHeadersMiddleware`` set ``scope["client"]`` from ``X-Forwarded-For``.

    The peer must be the connection's own, so uvicorn must not have applied its own proxy
    headers before (``tokenwire serve`` runs uvicorn with ``proxy_headers=False``): after
    that, ``scope["client"]`` is the browser's address, not trusted, and the proxy's headers
    are ignored (its browsers' requests are refused, never wrongly let through).
    """

    def __init__(self, app: ASGIApp, *, trusted: list[str]) -> None:
        self.proxies = TrustedProxies(trusted)
        self.app = ProxyHeadersMiddleware(self._apply, trusted_hosts=self.proxies.entries)  # type: ignore[arg-type]  # uvicorn types ASGI apps with its own _types, not Starlette's
        self.inner = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if self.proxies.trusts(client[0] if client else None):
                scope["tokenwire.forwarded"] = forwarded_of(scope["headers"])
        await self.app(scope, receive, send)  # type: ignore[arg-type]  # uvicorn's own ASGI types, as above

    async def _apply(self, scope: Scope, receive: Receive, send: Send) -> None:
        scheme = forwarded(scope).scheme
        if scheme is not None:
            websocket = scope["type"] == "websocket"
            scope["scheme"] = {"http": "ws", "https": "wss"}[scheme] if websocket else scheme
        await self.inner(scope, receive, send)
