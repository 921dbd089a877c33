"""The Vercel AI SDK's UI message stream (``useChat``'s wire format), for ``ai`` 7.x (tested with
7.0.173). Pure: no I/O.

Two parts:

- **Requests**: :class:`ChatRequest` is the body that the SDK's ``DefaultChatTransport`` posts
  (``packages/ai/src/ui/http-chat-transport.ts``): ``{id, messages: UIMessage[], trigger,
  messageId?}`` plus the transport's ``body`` fields. :meth:`ChatRequest.to_params` turns the
  UI messages into chat messages as the SDK's own ``convertToModelMessages``
  (``packages/ai/src/ui/convert-to-model-messages.ts``) does, and refuses what tokenwire
  cannot carry with an :class:`~tokenwire.errors.InvalidRequest` (HTTP 400) whose ``param``
  names the field (``messages.1.parts.0.type``, ``top_k``...).
- **Chunks**: :class:`UIMessageEncoder` turns one stream's events (wire protocol v1, from
  ``stream.start``) into UI message chunks (``packages/ai/src/ui-message-stream/
  ui-message-chunks.ts``); :func:`encode_sse` frames them as the SDK's
  ``JsonToSseTransformStream`` does, and :data:`DONE` ends the body.

Event mapping (one log event -> zero or more chunks):

=====================  ======================================================================
``stream.start``       ``start {messageId}``, ``start-step``
``stream.queued``      ``data-queued {data: {position}, transient: true}`` (``onData`` only)
``text.delta``         (``text-start {id}`` when a text part opens) ``text-delta {id, delta}``
``reasoning.delta``    (``reasoning-start {id}``) ``reasoning-delta {id, delta}``
``tool_call.start``    ``tool-input-start {toolCallId, toolName}``
``tool_call.delta``    ``tool-input-delta {toolCallId, inputTextDelta}``
``tool_call.end``      ``tool-input-available {toolCallId, toolName, input}`` (the arguments
                       parsed as JSON; arguments that are not JSON: ``tool-input-error``)
``error``              ``error {errorText}``
``stream.end``         the open part's ``*-end``, ``finish-step``, then ``finish
                       {finishReason, messageMetadata}``, or ``abort`` when cancelled
=====================  ======================================================================

A text or reasoning delta of the other kind, and a tool call, close the open part first (its
``*-end``): parts never interleave, as in the model's output. Part ids (``txt_0``, ``rs_1``...)
count the parts of the message, so the chunks are a pure function of the log: a replay from
seq 1 on any worker yields the same chunks (deltas that a live consumer got merged arrive
split, with the same text). The SDK's reducer builds the message from ``start``
(``packages/ai/src/ui/process-ui-message-stream.ts``): a text delta without its
``text-start`` throws, so a resume must replay from the stream's first event.

``messageMetadata`` of ``finish`` (and of the ``message-metadata`` chunk before an ``abort``):
``{"model", "finishReason" (tokenwire's), "usage": {"inputTokens", "outputTokens",
"totalTokens", "outputTokenDetails": {"reasoningTokens"}}}`` (tokens; the details only when
known; ``usage`` null when nothing was counted).

Strict chunks: the SDK validates every chunk against its schema, and some of its builds use
strict objects, so no chunk carries a key that the schema does not name (tokenwire's seq
travels as the SSE ``id:`` line, which the SDK's parser ignores).
"""

from __future__ import annotations

import json
import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokenwire.errors import InvalidRequest
from tokenwire.protocol.events import (
    ErrorEvent,
    Event,
    FinishReason,
    ReasoningDelta,
    StreamEnd,
    StreamQueued,
    StreamReset,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenwire.protocol.requests import OPTIONAL_FIELDS, invalid_request

HEADERS = {
    # packages/ai/src/ui-message-stream/ui-message-stream-headers.ts (content-type is the SSE
    # transport's own)
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "X-Vercel-AI-UI-Message-Stream": "v1",
}

DONE = b"data: [DONE]\n\n"
"""The last frame of a UI message stream body."""

MAX_CHAT_ID_LENGTH = 256

FINISH_REASONS: dict[FinishReason, str] = {
    FinishReason.STOP: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.TOOL_CALLS: "tool-calls",
    FinishReason.CONTENT_FILTER: "content-filter",
    FinishReason.ERROR: "error",
    FinishReason.TIMEOUT: "interrupted",
}
"""tokenwire's finish reason -> the SDK's (``FinishReason`` of ``packages/ai/src/types/
language-model.ts``). ``timeout`` (a server deadline cut the output) is ``interrupted``:
"output may be incomplete". ``cancelled`` is not finished but aborted (an ``abort`` chunk)."""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# -- chunks ---------------------------------------------------------------------------------


def usage_metadata(usage: Usage | None) -> dict[str, Any] | None:
    """The usage as the SDK names its fields (``LanguageModelUsage``): tokens in, out, total,
    and the reasoning tokens among those out when known."""
    if usage is None:
        return None
    body: dict[str, Any] = {
        "inputTokens": usage.prompt_tokens,
        "outputTokens": usage.completion_tokens,
        "totalTokens": usage.total_tokens,
    }
    if usage.reasoning_tokens is not None:
        body["outputTokenDetails"] = {"reasoningTokens": usage.reasoning_tokens}
    return body


class UIMessageEncoder:
    """The UI message chunks of one stream, as one assistant message ``message_id``.

    Feed it the stream's events in seq order from ``stream.start`` (a replay from seq 1, then
    live): see the module docstring for the mapping. Stateful: one encoder per consumer.
    :attr:`ended` tells whether ``stream.end`` has been fed.
    """

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.model: str | None = None
        self.ended = False
        self._parts = 0  # text and reasoning parts opened so far (for their ids)
        self._open: tuple[str, str] | None = None  # (kind "text" | "reasoning", part id)
        self._calls: dict[int, tuple[str, str]] = {}  # tool call index -> (call id, name)

    def encode(self, event: Event) -> list[dict[str, Any]]:
        """The chunks (dicts, ready for JSON) that ``event`` stands for; none for events the
        SDK has no chunk for (``stream.resumed``)."""
        out: list[dict[str, Any]] = []
        if isinstance(event, TextDelta | ReasoningDelta):
            kind = "text" if isinstance(event, TextDelta) else "reasoning"
            part_id = self._part(kind, out)
            out.append({"type": f"{kind}-delta", "id": part_id, "delta": event.delta})
        elif isinstance(event, ToolCallDelta):
            call = self._calls.get(event.index)
            if call is not None:
                out.append(
                    {
                        "type": "tool-input-delta",
                        "toolCallId": call[0],
                        "inputTextDelta": event.delta,
                    }
                )
        elif isinstance(event, StreamStart):
            self.model = event.model
            out.append({"type": "start", "messageId": self.message_id})
            out.append({"type": "start-step"})
        elif isinstance(event, StreamQueued):
            out.append(
                {"type": "data-queued", "data": {"position": event.position}, "transient": True}
            )
        elif isinstance(event, ToolCallStart):
            self._close(out)
            self._calls[event.index] = (event.call_id, event.name)
            out.append(
                {"type": "tool-input-start", "toolCallId": event.call_id, "toolName": event.name}
            )
        elif isinstance(event, ToolCallEnd):
            out.append(_tool_input(event))
        elif isinstance(event, ErrorEvent):
            out.append({"type": "error", "errorText": event.message})
        elif isinstance(event, StreamReset):
            out.append(
                {"type": "error", "errorText": f"the stream cannot be served ({event.reason})"}
            )
        elif isinstance(event, StreamEnd):
            self._end(event, out)
        return out

    def _part(self, kind: str, out: list[dict[str, Any]]) -> str:
        """The id of the open part of ``kind``, opening one (and closing another) if need be."""
        if self._open is not None and self._open[0] == kind:
            return self._open[1]
        self._close(out)
        part_id = f"{'txt' if kind == 'text' else 'rs'}_{self._parts}"
        self._parts += 1
        self._open = (kind, part_id)
        out.append({"type": f"{kind}-start", "id": part_id})
        return part_id

    def _close(self, out: list[dict[str, Any]]) -> None:
        if self._open is not None:
            kind, part_id = self._open
            out.append({"type": f"{kind}-end", "id": part_id})
            self._open = None

    def metadata(self, end: StreamEnd) -> dict[str, Any]:
        """The ``messageMetadata`` of the end (see the module docstring)."""
        return {
            "model": self.model,
            "finishReason": end.finish_reason.value,
            "usage": usage_metadata(end.usage),
        }

    def _end(self, end: StreamEnd, out: list[dict[str, Any]]) -> None:
        self._close(out)
        self.ended = True
        out.append({"type": "finish-step"})
        if end.finish_reason is FinishReason.CANCELLED:
            # the SDK's own streamText sends a bare abort (no reason: strict older schemas)
            out.append({"type": "message-metadata", "messageMetadata": self.metadata(end)})
            out.append({"type": "abort"})
            return
        out.append(
            {
                "type": "finish",
                "finishReason": FINISH_REASONS[end.finish_reason],
                "messageMetadata": self.metadata(end),
            }
        )


def _tool_input(end: ToolCallEnd) -> dict[str, Any]:
    """``tool-input-available`` with the arguments parsed (empty arguments: ``{}``), or
    ``tool-input-error`` with the raw text when they are not JSON."""
    try:
        parsed = json.loads(end.arguments) if end.arguments.strip() else {}
    except ValueError as exc:
        return {
            "type": "tool-input-error",
            "toolCallId": end.call_id,
            "toolName": end.name,
            "input": end.arguments,
            "errorText": f"the tool call's arguments are not valid JSON: {exc}",
        }
    return {
        "type": "tool-input-available",
        "toolCallId": end.call_id,
        "toolName": end.name,
        "input": parsed,
    }


def encode_sse(chunks: list[dict[str, Any]], seq: int | None = None) -> bytes:
    """SSE frames of chunks as the SDK's ``JsonToSseTransformStream`` writes them
    (``data: <JSON>``, a blank line), each with ``id: <seq>`` first when ``seq`` is given
    (the SDK's parser reads ``data`` only, WHATWG HTML 9.2.6 lets a client keep the id)."""
    head = f"id: {seq}\n" if seq is not None else ""
    return "".join(f"{head}data: {_dumps(chunk)}\n\n" for chunk in chunks).encode()


class UIMessageSSE:
    """The SSE codec of one UI message stream: :class:`UIMessageEncoder`'s chunks framed by
    :func:`encode_sse` with the event's seq as ``id:``, and :data:`DONE` after ``stream.end``.
    Fed from seq 1, like the encoder."""

    def __init__(self, message_id: str) -> None:
        self.encoder = UIMessageEncoder(message_id)

    def __call__(self, event: Event) -> bytes:
        frames = encode_sse(self.encoder.encode(event), getattr(event, "seq", None))
        return frames + DONE if isinstance(event, StreamEnd) else frames


def new_message_id() -> str:
    """A new assistant message id (``msg_`` + 22 URL-safe characters)."""
    return "msg_" + secrets.token_urlsafe(16)


# -- requests -------------------------------------------------------------------------------


class _Loose(BaseModel):
    # UI message parts carry what the SDK's state keeps (providerMetadata, state, title...):
    # the fields read here are validated, the rest is not tokenwire's to judge.
    model_config = ConfigDict(extra="ignore")


class UIMessage(_Loose):
    """A UI message (``packages/ai/src/ui/ui-messages.ts``): ``role`` and ``parts``; ``id``
    names the assistant message that a continuation extends."""

    id: str | None = None
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, Any]]


PASSED_ON = (
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    *OPTIONAL_FIELDS,
)
"""The body fields besides the transport's own that a chat request hands on to the generation
(:class:`~tokenwire.protocol.requests.GenerateParams` fields, validated there); any other is
refused, named."""


class ChatRequest(BaseModel):
    """The body of ``POST /api/chat`` as ``DefaultChatTransport`` sends it: ``id`` (the chat),
    ``messages`` (UI messages, at least one), ``trigger`` (``submit-message`` or
    ``regenerate-message``), ``messageId`` (the message to regenerate, when defined), and the
    transport's ``body`` fields: those of :data:`PASSED_ON` (``temperature``, ``max_tokens``,
    ``tools``...) go to the generation, any other is refused by :meth:`refused`."""

    model_config = ConfigDict(extra="allow")

    id: Annotated[str, Field(min_length=1, max_length=MAX_CHAT_ID_LENGTH)]
    messages: Annotated[list[UIMessage], Field(min_length=1)]
    trigger: Literal["submit-message", "regenerate-message"] | None = None
    messageId: str | None = None  # noqa: N815  # the SDK's spelling

    @classmethod
    def parse(cls, data: Any) -> ChatRequest:
        """The validated body. Raises :class:`InvalidRequest` naming the first bad field
        (``messages: Field required``), then the first refused one."""
        if not isinstance(data, dict):
            raise InvalidRequest("the body must be a JSON object")
        try:
            body = cls.model_validate(data)
        except ValidationError as exc:
            raise invalid_request(exc) from exc
        for key in body.model_extra or {}:
            if key not in PASSED_ON:
                raise InvalidRequest(
                    f"{key}: unknown body field (tokenwire takes {', '.join(PASSED_ON[:6])}, "
                    "and the optional GenerateParams fields)",
                    param=key,
                )
        return body

    def response_message_id(self) -> str:
        """The id of the assistant message the response builds: the last message's when it is
        an assistant's (a continuation, e.g. after tool results), else a new one (the SDK's
        ``getResponseUIMessageId``)."""
        last = self.messages[-1]
        if last.role == "assistant" and last.id:
            return last.id
        return new_message_id()

    def to_params(self) -> dict[str, Any]:
        """The fields of a :class:`~tokenwire.protocol.requests.GenerateParams` (not validated
        yet): the converted messages and the passed-on body fields. Raises
        :class:`InvalidRequest` naming the part (see :func:`model_messages`)."""
        fields = {key: value for key, value in (self.model_extra or {}).items()}
        fields["messages"] = model_messages(self.messages)
        return fields


def _refuse(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {why}", param=param)


_DROPPED = ("reasoning", "reasoning-file", "source-url", "source-document", "custom")
"""Assistant parts that are not part of the prompt (the model's reasoning, citations,
provider-specific content)."""


def model_messages(messages: list[UIMessage]) -> list[dict[str, Any]]:
    """UI messages as chat messages (OpenAI's shape), as ``convertToModelMessages`` does:

    - system: its text parts joined;
    - user: text parts, and image ``file`` parts (a URL or ``data:`` URL) as ``image_url``
      content; ``data-*`` parts are left out (the SDK's default);
    - assistant: split into steps at each ``step-start``; per step one assistant turn with the
      text and the tool calls (``tool-<name>`` and ``dynamic-tool`` parts: ``input`` as the
      arguments' JSON), then one ``tool`` turn per call with its result (``output-available``:
      the output, a string as it is, else its JSON; ``output-error``: the error text;
      ``output-denied``: the denial). Reasoning, sources, ``custom`` and ``data-*`` parts
      are left out; a ``steering-message`` part becomes a user turn between two steps.

    Raises :class:`InvalidRequest` naming the part (``messages.2.parts.1.type``): an unknown
    part type, a file that is not an image, an image outside a user message, a tool call
    still without its result (``input-available``, ``approval-requested``...).
    """
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if message.role == "system":
            texts = []
            for j, part in enumerate(message.parts):
                kind = _part_type(part, f"{where}.parts.{j}")
                if kind == "text":
                    texts.append(_text(part, f"{where}.parts.{j}"))
                elif kind != "step-start" and not kind.startswith("data-"):
                    raise _refuse(
                        f"{where}.parts.{j}.type", f"a system message takes text, not {kind!r}"
                    )
            out.append({"role": "system", "content": "".join(texts)})
        elif message.role == "user":
            out.append(_user(message.parts, where))
        else:
            out.extend(_assistant(message.parts, where))
    return out


def _part_type(part: dict[str, Any], where: str) -> str:
    kind = part.get("type")
    if not isinstance(kind, str):
        raise _refuse(f"{where}.type", "required: every part has a type")
    return kind


def _text(part: dict[str, Any], where: str) -> str:
    text = part.get("text")
    if not isinstance(text, str):
        raise _refuse(f"{where}.text", "a text part's text must be a string")
    return text


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    media_type = part.get("mediaType")
    url = part.get("url")
    if not isinstance(url, str) or not url:
        raise _refuse(f"{where}.url", "a file part needs its url (a URL or a data: URL)")
    if not isinstance(media_type, str) or not media_type.startswith("image/"):
        raise _refuse(
            f"{where}.mediaType",
            f"only image files are supported (image/*), got {media_type!r}",
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _user(parts: list[dict[str, Any]], where: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        at = f"{where}.parts.{j}"
        kind = _part_type(part, at)
        if kind == "text":
            content.append({"type": "text", "text": _text(part, at)})
        elif kind == "file":
            content.append(_image(part, at))
        elif kind.startswith("data-") or kind == "step-start":
            continue
        else:
            raise _refuse(f"{at}.type", f"unknown part type {kind!r} in a user message")
    if all(item["type"] == "text" for item in content):
        return {"role": "user", "content": "".join(item["text"] for item in content)}
    return {"role": "user", "content": content}


def _tool_name(part: dict[str, Any], kind: str, where: str) -> str:
    if kind == "dynamic-tool":
        name = part.get("toolName")
        if not isinstance(name, str) or not name:
            raise _refuse(f"{where}.toolName", "a dynamic-tool part needs its toolName")
        return name
    return kind.removeprefix("tool-")


def _tool_result(part: dict[str, Any], state: str, where: str) -> str:
    if state == "output-available":
        output = part.get("output")
        return output if isinstance(output, str) else _dumps(output)
    if state == "output-error":
        error = part.get("errorText")
        return error if isinstance(error, str) else "the tool failed"
    approval = part.get("approval")
    reason = approval.get("reason") if isinstance(approval, dict) else None
    return reason if isinstance(reason, str) else "Tool call execution denied."


_RESULT_STATES = ("output-available", "output-error", "output-denied")


def _assistant(parts: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []

    def step() -> None:
        if texts or calls:
            turn: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
            if calls:
                turn["tool_calls"] = list(calls)
            elif turn["content"] is None:
                turn["content"] = ""
            out.append(turn)
        out.extend(results)
        texts.clear()
        calls.clear()
        results.clear()

    for j, part in enumerate(parts):
        at = f"{where}.parts.{j}"
        kind = _part_type(part, at)
        if kind == "text":
            texts.append(_text(part, at))
        elif kind == "step-start":
            step()
        elif kind.startswith("tool-") or kind == "dynamic-tool":
            state = part.get("state")
            if state == "input-streaming":
                continue  # an unfinished call: the SDK leaves it out too
            if state not in _RESULT_STATES:
                raise _refuse(
                    f"{at}.state",
                    f"tool call {part.get('toolCallId')!r} has no result yet (state {state!r}): "
                    "add its output before sending",
                )
            call_id = part.get("toolCallId")
            if not isinstance(call_id, str) or not call_id:
                raise _refuse(f"{at}.toolCallId", "a tool part needs its toolCallId")
            name = _tool_name(part, kind, at)
            raw = part.get("input", part.get("rawInput"))
            arguments = raw if isinstance(raw, str) else _dumps({} if raw is None else raw)
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            )
            results.append(
                {"role": "tool", "tool_call_id": call_id, "content": _tool_result(part, state, at)}
            )
        elif kind == "steering-message":
            step()
            inner = part.get("parts")
            if not isinstance(inner, list):
                raise _refuse(f"{at}.parts", "a steering message needs its parts")
            out.append(_user(inner, f"{at}"))
        elif kind == "file":
            raise _refuse(f"{at}.type", "files in an assistant message are not supported")
        elif kind in _DROPPED or kind.startswith("data-"):
            continue
        else:
            raise _refuse(f"{at}.type", f"unknown part type {kind!r} in an assistant message")
    step()
    return out
