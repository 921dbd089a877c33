"""Transports: the same events over SSE (sse.py) and WebSocket (websocket.py), or collected for
a non-streamed answer (collect.py); one interface (base.py) and one delivery loop (pump.py)
whose decisions are delivery.py's."""

from tokenwire.transports.base import Transport
from tokenwire.transports.pump import pump

__all__ = ["Transport", "pump"]
