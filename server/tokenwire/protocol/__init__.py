"""Wire protocol v1: event models and codecs for SSE, WebSocket and OpenAI chunks. No I/O here."""

from tokenwire.protocol.events import (
    ErrorEvent,
    Event,
    FinishReason,
    ReasoningDelta,
    StreamEnd,
    StreamReset,
    StreamResumed,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
    event_json,
    parse_event,
)
from tokenwire.protocol.requests import ChatMessage, GenerateParams

__all__ = [
    "ChatMessage",
    "ErrorEvent",
    "Event",
    "FinishReason",
    "GenerateParams",
    "ReasoningDelta",
    "StreamEnd",
    "StreamReset",
    "StreamResumed",
    "StreamStart",
    "TextDelta",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallStart",
    "Usage",
    "event_json",
    "parse_event",
]
