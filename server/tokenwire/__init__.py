"""tokenwire: stream LLM tokens over Server-Sent Events and WebSocket from one stream layer."""

__version__ = "0.1.0"
