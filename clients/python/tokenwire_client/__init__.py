"""tokenwire_client: a client for tokenwire servers over SSE and WebSocket."""

from tokenwire_client.client import AsyncClient, ClientError, ProtocolError, ServerError
from tokenwire_client.sse import ServerSentEvent, SSEDecoder

__all__ = [
    "AsyncClient",
    "ClientError",
    "ProtocolError",
    "SSEDecoder",
    "ServerError",
    "ServerSentEvent",
]
