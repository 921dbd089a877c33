"""The request head before any route runs (``tokenwire serve``: uvicorn + httptools): a head
over ``http_max_header_size`` bytes is answered 431, and a head not complete within
``http_header_timeout`` seconds is closed (slowloris). Real server processes, raw sockets."""

from __future__ import annotations

import json
import socket

from tests.helpers import ServerProcess


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (the socket's timeout bounds each read)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_an_oversized_request_head_is_answered_431_and_closed(tmp_path):
    server = ServerProcess(
        tmp_path, "headers", provider="scripted", http_max_header_size=16384
    ).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Flood: ")
            try:
                for _ in range(64):  # 4 MB of one header that never ends
                    sock.sendall(b"a" * 65536)
            except OSError:
                pass  # the server answered and closed while we were still sending
            reply = _read_all(sock)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431 "), reply[:200]
        assert json.loads(body)["error"]["code"] == "payload_too_large"
        # the server still serves everyone else
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert _read_all(sock).startswith(b"HTTP/1.1 200 ")
    finally:
        server.stop()


def test_a_request_head_that_never_completes_is_closed(tmp_path):
    """Slowloris: a head that trickles in never completes; the server closes the connection
    after ``http_header_timeout`` seconds (the socket timeout only bounds a broken test)."""
    server = ServerProcess(
        tmp_path, "slowloris", provider="scripted", http_header_timeout=1
    ).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
            reply = _read_all(sock)  # b"" (closed) or a 408; never a hang
        assert reply == b"" or reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    finally:
        server.stop()
