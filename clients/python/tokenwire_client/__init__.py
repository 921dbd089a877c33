"""tokenwire_client: a client for tokenwire servers over SSE and WebSocket.

:class:`AsyncClient` (asyncio) and :class:`Client` (blocking) stream the events of wire
protocol v1 and resume by themselves after a lost connection (:class:`Reconnect`). The
exceptions are drawn in :mod:`tokenwire_client.errors`.
"""

from tokenwire_client.client import AsyncClient, EventStream, Reconnect, ToolCall
from tokenwire_client.errors import (
    ClientError,
    ConnectionLost,
    ProtocolError,
    ServerError,
    StreamFailed,
    StreamReset,
)
from tokenwire_client.sse import ServerSentEvent, SSEDecoder
from tokenwire_client.sync import Client, SyncEventStream

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "ConnectionLost",
    "EventStream",
    "ProtocolError",
    "Reconnect",
    "SSEDecoder",
    "ServerError",
    "ServerSentEvent",
    "StreamFailed",
    "StreamReset",
    "SyncEventStream",
    "ToolCall",
]
