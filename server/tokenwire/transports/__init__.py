"""Transports: the same events over SSE (sse.py) and WebSocket (websocket.py)."""

from tokenwire.transports.base import Transport, pump

__all__ = ["Transport", "pump"]
