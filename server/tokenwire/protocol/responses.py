"""OpenAI Responses API wire format (OpenAI API reference, "Responses": "Create a model
response", "The response object", "Streaming events"; the WebSocket mode guide). Pure: no I/O.

Three parts:

- **Requests**: :class:`ResponsesRequest` is the body of ``POST /v1/responses`` (and of a
  WebSocket ``response.create`` message); :meth:`ResponsesRequest.to_params` maps its
  ``instructions``, ``input`` items and options onto a provider-neutral
  :class:`~tokenwire.protocol.requests.GenerateParams`, refusing what it cannot carry with an
  :class:`~tokenwire.errors.InvalidRequest` (HTTP 400) whose ``param`` names the field
  (``input[2].type``, ``tools[0].type``, ``reasoning.summary``...).
- **Records**: :class:`ResponseRecord`, what a response is besides its events (id, the request's
  echo, the conversation context, owner), stored as JSON beside the stream log so that any
  worker can serve retrieve, cancel and ``previous_response_id``.
- **Events**: :class:`ResponsesEncoder` turns one stream's events (wire protocol v1, in seq
  order) into Responses events, and keeps the Response object they describe.

Event mapping (one log event -> one or more Responses events):

=====================  ======================================================================
``stream.start``       ``response.created``, ``response.in_progress``
``reasoning.delta``    (a new ``reasoning`` item: ``response.output_item.added``,
                       ``response.content_part.added``) ``response.reasoning_text.delta``
``text.delta``         (a new ``message`` item: ``response.output_item.added``,
                       ``response.content_part.added``) ``response.output_text.delta``
``tool_call.start``    ``response.output_item.added`` (a ``function_call`` item)
``tool_call.delta``    ``response.function_call_arguments.delta``
``tool_call.end``      ``response.function_call_arguments.done``, ``response.output_item.done``
``error``              nothing (its code and message go in the terminal ``response.failed``)
``stream.end``         the open item's ``*.done`` events, then ``response.completed``
                       (stop, tool_calls), ``response.incomplete`` (length, content_filter,
                       cancelled) or ``response.failed`` (error, timeout)
=====================  ======================================================================

Opening a new reasoning or message item first closes the open one (its ``.done`` events).

``sequence_number``: the Responses events that the *unmerged* log produces, numbered 0, 1, 2...
in order: a pure function of the log, so a replay from seq 1 (any worker, memory or Redis)
reproduces every number exactly, and ``starting_after=N`` is "replay from the log's start,
send what is numbered above N". A live consumer may get adjacent deltas merged into one
(coalescing, write merging: seqs ``p+1..s`` in one event of seq ``s``); the encoder then numbers
the events that open an item as the first of those deltas would have been, and the merged
delta with the number of the *last* one (it skips the numbers in between), so any number a
client saw names the same point in the text as in the unmerged replay: resume is exact, with
no gap and no duplicate. Events that a stream log never holds (a log reader's failure notice,
an eviction notice: they repeat the last seq) take the next number.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tokenwire.errors import ErrorCode, InvalidRequest
from tokenwire.protocol.events import (
    ErrorEvent,
    Event,
    FinishReason,
    ReasoningDelta,
    StreamEnd,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenwire.protocol.openai import error_object

ResponseStatus = Literal["queued", "in_progress", "completed", "incomplete", "cancelled", "failed"]
"""The ``status`` of a Response object."""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# -- requests -------------------------------------------------------------------------------


class ResponsesRequest(BaseModel):
    """The body of ``POST /v1/responses`` (OpenAI API reference, "Create a model response").

    ``input``: a string (one user message) or a list of items: messages (``role`` user,
    system, developer or assistant; ``content`` a string or parts ``input_text``,
    ``input_image`` (``image_url``), ``output_text``, ``refusal``), ``function_call``
    (``call_id``, ``name``, ``arguments``), ``function_call_output`` (``call_id``,
    ``output``) and ``reasoning`` items (their text rides on the next assistant turn).
    ``max_output_tokens`` is in tokens; ``temperature`` in [0, 2]; ``top_p`` in (0, 1];
    ``metadata`` at most 16 string pairs. Fields this model does not name are refused by
    :meth:`refused` (HTTP 400 naming the field), as are ``include``, ``truncation: auto`` and
    reasoning summaries, which tokenwire's stream cannot carry.
    """

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: str | list[Any] | None = None
    instructions: str | None = None
    max_output_tokens: Annotated[int | None, Field(ge=1)] = None
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    top_p: Annotated[float | None, Field(gt=0, le=1)] = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    metadata: Annotated[dict[str, str] | None, Field(max_length=16)] = None
    store: bool | None = None
    stream: bool | None = None
    background: bool | None = None
    previous_response_id: str | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    stream_options: dict[str, Any] | None = None

    def refused(self) -> tuple[str, str] | None:
        """The first field that tokenwire cannot honour whatever the provider, and why."""
        for key in self.model_extra or {}:
            return key, f"unrecognized request argument supplied: {key}"
        if self.include:
            return "include", "tokenwire's stream carries no extra output data"
        if self.truncation == "auto":
            return "truncation", "tokenwire does not truncate a conversation ('disabled' only)"
        for key in self.stream_options or {}:
            if key != "include_obfuscation":
                return f"stream_options.{key}", f"unknown stream option {key!r}"
        for key, value in (self.reasoning or {}).items():
            if key == "effort":
                continue
            if key in ("summary", "generate_summary") and value is None:
                continue
            if key in ("summary", "generate_summary"):
                return (
                    f"reasoning.{key}",
                    "reasoning summaries are not produced (reasoning text is)",
                )
            return f"reasoning.{key}", f"unknown reasoning option {key!r}"
        return None

    @property
    def wants_store(self) -> bool:
        """``store`` (default true, as OpenAI)."""
        return self.store is not False

    def echo(self, model: str) -> dict[str, Any]:
        """The request's fields as the Response object repeats them (``model`` resolved)."""
        return {
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "metadata": dict(self.metadata or {}),
            "model": model,
            "parallel_tool_calls": self.parallel_tool_calls is not False,
            "previous_response_id": self.previous_response_id,
            "reasoning": (
                {"effort": self.reasoning.get("effort"), "summary": None}
                if self.reasoning is not None
                else None
            ),
            "store": self.wants_store,
            "temperature": self.temperature,
            "text": {"format": dict((self.text or {}).get("format") or {"type": "text"})},
            "tool_choice": self.tool_choice if self.tool_choice is not None else "auto",
            "tools": list(self.tools or []),
            "top_p": self.top_p,
            "truncation": "disabled",
            "user": self.user,
        }

    def to_params(
        self, context: list[dict[str, Any]], *, keep_reasoning: bool = True
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The fields of a :class:`GenerateParams` (not validated yet) and the conversation
        (chat messages, to keep for a later ``previous_response_id``: ``context`` then this
        request's input; ``instructions`` are not part of it, as at OpenAI).
        ``keep_reasoning``: whether ``reasoning`` input items ride on the next assistant turn
        (for a provider that takes reasoning history) or are left out.

        Raises :class:`InvalidRequest` naming the field (``input[1].type``, ``tools[0].type``,
        ``tool_choice``, ``text.format.type``...)."""
        conversation = list(context) + input_messages(self.input, keep_reasoning=keep_reasoning)
        messages = list(conversation)
        if self.instructions is not None:
            messages.insert(0, {"role": "system", "content": self.instructions})
        if not messages:
            raise InvalidRequest(
                "input: required (no input and no previous response)", param="input"
            )
        fields: dict[str, Any] = {
            "messages": messages,
            "model": self.model,
            "max_tokens": self.max_output_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if self.tools is not None:
            fields["tools"] = [_tool(i, tool) for i, tool in enumerate(self.tools)]
        if self.tool_choice is not None:
            fields["tool_choice"] = _tool_choice(self.tool_choice)
        if self.parallel_tool_calls is not None:
            fields["parallel_tool_calls"] = self.parallel_tool_calls
        if self.reasoning is not None and self.reasoning.get("effort") is not None:
            fields["reasoning_effort"] = self.reasoning["effort"]
        for key, value in (self.text or {}).items():
            if key == "format":
                fmt = _text_format(value)
                if fmt is not None:
                    fields["response_format"] = fmt
            elif key == "verbosity":
                if value is not None:
                    fields["verbosity"] = value
            else:
                raise InvalidRequest(f"text.{key}: unknown text option", param=f"text.{key}")
        for key in ("user", "safety_identifier", "prompt_cache_key", "service_tier"):
            if getattr(self, key) is not None:
                fields[key] = getattr(self, key)
        return fields, conversation


PARAM_NAMES = {
    "max_tokens": "max_output_tokens",
    "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
    "verbosity": "text.verbosity",
    "messages": "input",
}
"""GenerateParams field -> the Responses request field it comes from (for error ``param``)."""


def responses_param(path: str | None) -> str | None:
    """The Responses name of a :class:`GenerateParams` field path (``messages.3.tool_calls``
    -> ``input``, ``reasoning_effort`` -> ``reasoning.effort``); others as given."""
    if path is None:
        return None
    head = path.split(".", 1)[0]
    if head in PARAM_NAMES:
        return PARAM_NAMES[head]
    return path


def _refuse(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {why}", param=param)


def _tool(i: int, tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise _refuse(
            f"tools[{i}].type", f"only function tools are supported, got {tool.get('type')!r}"
        )
    unknown = set(tool) - {"type", "name", "description", "parameters", "strict"}
    if unknown:
        raise _refuse(f"tools[{i}].{sorted(unknown)[0]}", "unknown field of a function tool")
    function = {
        key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool
    }
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict[str, Any]) -> Any:
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise _refuse(
                "tool_choice", f"must be none, auto, required or a function, got {choice!r}"
            )
        return choice
    if (
        choice.get("type") == "function"
        and isinstance(choice.get("name"), str)
        and len(choice) == 2
    ):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _refuse("tool_choice", "only {'type': 'function', 'name': ...} is supported")


def _text_format(fmt: Any) -> dict[str, Any] | None:
    if not isinstance(fmt, dict):
        raise _refuse("text.format", "must be an object")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {
            key: fmt[key] for key in ("name", "description", "schema", "strict") if key in fmt
        }
        return {"type": "json_schema", "json_schema": schema}
    raise _refuse("text.format.type", f"must be text, json_object or json_schema, got {kind!r}")


_ROLES = ("user", "system", "developer", "assistant")


def input_messages(
    given: str | list[Any] | None, *, keep_reasoning: bool = True
) -> list[dict[str, Any]]:
    """The chat messages (OpenAI Chat Completions shape) that ``input`` stands for.

    Consecutive ``function_call`` items join the assistant turn before them (or make one with
    null content); ``function_call_output`` items become ``tool`` messages; a ``reasoning``
    item's text becomes the ``reasoning_content`` of the next assistant turn. Raises
    :class:`InvalidRequest` naming the item (``input[3].type``) for an unknown item or part."""
    if given is None:
        return []
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    messages: list[dict[str, Any]] = []
    reasoning: list[str] = []
    calls_open = False  # the last message is an assistant turn that function_calls may join

    def assistant(message: dict[str, Any]) -> dict[str, Any]:
        if reasoning:
            message["reasoning_content"] = "".join(reasoning)
            reasoning.clear()
        return message

    for i, item in enumerate(given):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _refuse(where, "an input item must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise _refuse(f"{where}.role", f"must be one of {', '.join(_ROLES)}, got {role!r}")
            content = _content(where, item.get("content"))
            message: dict[str, Any] = {"role": role, "content": content}
            messages.append(assistant(message) if role == "assistant" else message)
            calls_open = role == "assistant"
        elif kind == "function_call":
            call = {
                "id": _string(item, "call_id", where),
                "type": "function",
                "function": {
                    "name": _string(item, "name", where),
                    "arguments": _string(item, "arguments", where),
                },
            }
            if calls_open:
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append(
                    assistant({"role": "assistant", "content": None, "tool_calls": [call]})
                )
                calls_open = True
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _content(f"{where}.output", output)
            if not isinstance(text, str):
                raise _refuse(f"{where}.output", "a function call output must be text")
            messages.append(
                {"role": "tool", "tool_call_id": _string(item, "call_id", where), "content": text}
            )
            calls_open = False
        elif kind == "reasoning":
            for part in item.get("content") or [] if keep_reasoning else []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    reasoning.append(part["text"])
        else:
            raise _refuse(f"{where}.type", f"unsupported input item type {kind!r}")
    return messages


def _string(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise _refuse(f"{where}.{key}", "required (a string)")
    return value


def _content(where: str, content: Any) -> str | list[dict[str, Any]]:
    """A message's content as a chat message's: a string, or parts (text and image_url)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _refuse(f"{where}.content", "must be a string or a list of parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise _refuse(f"{at}.image_url", "required (file_id images are not supported)")
            image: dict[str, Any] = {"url": url}
            if part.get("detail") is not None:
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise _refuse(f"{at}.type", f"unsupported content part type {kind!r}")
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


# -- records --------------------------------------------------------------------------------


class ResponseRecord(BaseModel):
    """What the stream log keeps of a response besides its events (as JSON, see
    :meth:`tokenwire.streams.log.StreamLog.put_document`): ``id`` (``resp_...``), the
    ``stream_id`` of its generation, ``created_at`` (unix seconds), the request's ``echo`` (see
    :meth:`ResponsesRequest.echo`), the ``context`` (chat messages, without instructions) that
    a ``previous_response_id`` continues from, its owner's ``key_id`` and ``background``."""

    model_config = ConfigDict(extra="forbid")

    id: str
    stream_id: str
    created_at: int
    echo: dict[str, Any]
    context: list[dict[str, Any]]
    key_id: str | None = None
    background: bool = False


def record_key(response_id: str) -> str:
    """The document key of a response record."""
    return f"response:{response_id}"


# -- events ---------------------------------------------------------------------------------


_TERMINAL: dict[FinishReason, tuple[str, ResponseStatus]] = {
    FinishReason.STOP: ("response.completed", "completed"),
    FinishReason.TOOL_CALLS: ("response.completed", "completed"),
    FinishReason.LENGTH: ("response.incomplete", "incomplete"),
    FinishReason.CONTENT_FILTER: ("response.incomplete", "incomplete"),
    FinishReason.CANCELLED: ("response.incomplete", "cancelled"),
    FinishReason.ERROR: ("response.failed", "failed"),
    FinishReason.TIMEOUT: ("response.failed", "failed"),
}

_INCOMPLETE_REASONS = {
    FinishReason.LENGTH: "max_output_tokens",
    FinishReason.CONTENT_FILTER: "content_filter",
}


def usage_body(usage: Usage | None) -> dict[str, Any] | None:
    """The Response object's ``usage`` (tokens): input, output (with reasoning) and total."""
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
        "total_tokens": usage.total_tokens,
    }


class _Item:
    """One output item under construction."""

    __slots__ = ("kind", "id", "output_index", "parts", "call_id", "name", "done")

    def __init__(self, kind: str, item_id: str, output_index: int) -> None:
        self.kind = kind  # message, reasoning, function_call
        self.id = item_id
        self.output_index = output_index
        self.parts: list[str] = []  # text, reasoning text, or arguments
        self.call_id = ""
        self.name = ""
        self.done = False

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def body(self, status: str) -> dict[str, Any]:
        if self.kind == "function_call":
            return {
                "id": self.id,
                "type": "function_call",
                "status": status,
                "call_id": self.call_id,
                "name": self.name,
                "arguments": self.text,
            }
        content = [self.part()] if status != "in_progress" else []
        if self.kind == "reasoning":
            return {
                "id": self.id,
                "type": "reasoning",
                "status": status,
                "summary": [],
                "content": content,
            }
        return {
            "id": self.id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def part(self, text: str | None = None) -> dict[str, Any]:
        text = self.text if text is None else text
        if self.kind == "reasoning":
            return {"type": "reasoning_text", "text": text}
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class ResponsesEncoder:
    """The Responses events of one response's stream, and the Response object they build.

    Feed it the stream's events in order, from ``stream.start`` (see the module docstring for
    the mapping and the numbering). ``after``: events numbered up to it are built (they change
    the object) but not returned: the ``starting_after`` of a resume. ``lane``: the WebSocket
    ``stream_id`` that every event then carries. Stateful: one encoder per consumer.
    """

    def __init__(
        self,
        response_id: str,
        created_at: int,
        echo: dict[str, Any],
        *,
        background: bool = False,
        after: int = -1,
        lane: str | None = None,
    ) -> None:
        self.response_id = response_id
        self.created_at = created_at
        self.echo = echo
        self.background = background
        self.after = after
        self.lane = lane
        self.status: ResponseStatus = "queued" if background else "in_progress"
        self.items: list[_Item] = []
        self.calls: dict[int, _Item] = {}  # tool call index -> its item
        self.open: _Item | None = None  # the open message or reasoning item
        self.usage: Usage | None = None
        self.error: dict[str, Any] | None = None
        self.incomplete_details: dict[str, Any] | None = None
        self.completed_at: int | None = None
        self.next_number = 0  # the sequence_number of the next event
        self.last_seq = 0  # the seq of the last log event fed
        self.ended = False
        self._failure: ErrorEvent | None = None
        self._suffix = response_id.removeprefix("resp_")

    @property
    def last_number(self) -> int:
        """The sequence_number of the last event built (-1: none yet)."""
        return self.next_number - 1

    # -- the Response object ---------------------------------------------------------------

    def response(self) -> dict[str, Any]:
        """The Response object as the events so far describe it (OpenAI's "The response
        object"; ``created_at``/``completed_at`` in unix seconds, ``usage`` in tokens)."""
        output = [item.body(self._item_status(item)) for item in self.items]
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "background": self.background,
            "completed_at": self.completed_at,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            **self.echo,
            "output": output,
            "usage": usage_body(self.usage),
        }

    def _item_status(self, item: _Item) -> str:
        if item.done:
            return "completed"
        return "incomplete" if self.ended else "in_progress"

    @property
    def failure(self) -> ErrorEvent | None:
        """The stream's ``error`` event, if it failed."""
        return self._failure

    def output_messages(self, *, reasoning: bool) -> list[dict[str, Any]]:
        """The output as chat messages, for a conversation that continues it: one assistant
        turn with the text, the complete function calls as ``tool_calls`` and (``reasoning``)
        the reasoning text as ``reasoning_content``; none if the output is empty."""
        text = self.output_text()
        calls = [item for item in self.items if item.kind == "function_call" and item.done]
        thought = "".join(item.text for item in self.items if item.kind == "reasoning")
        if not text and not calls:
            return []
        message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
        if calls:
            message["tool_calls"] = [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.text},
                }
                for call in calls
            ]
        if reasoning and thought:
            message["reasoning_content"] = thought
        return [message]

    def output_text(self) -> str:
        """The text of every message item, joined (what the SDKs' ``output_text`` gives)."""
        return "".join(item.text for item in self.items if item.kind == "message")

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, event: Event) -> list[dict[str, Any]]:
        """The Responses events (dicts, ``sequence_number`` set) that ``event`` stands for
        and that come after :attr:`after`."""
        seq: int | None = getattr(event, "seq", None)
        if seq is None:  # stream.resumed, stream.reset: nothing to say
            return []
        span = seq - self.last_seq if seq > self.last_seq else 1  # deltas merged: > 1
        self.last_seq = max(self.last_seq, seq)
        out: list[dict[str, Any]] = []
        if isinstance(event, TextDelta | ReasoningDelta):
            kind = "message" if isinstance(event, TextDelta) else "reasoning"
            item = self.open
            if item is None or item.kind != kind:
                self._close_open(out)
                item = self._open(kind, out)
            item.parts.append(event.delta)
            name = (
                "response.output_text.delta"
                if kind == "message"
                else "response.reasoning_text.delta"
            )
            body: dict[str, Any] = {
                "item_id": item.id,
                "output_index": item.output_index,
                "content_index": 0,
                "delta": event.delta,
            }
            if kind == "message":
                body["logprobs"] = []
            self._emit(out, name, body, skip=span - 1)
        elif isinstance(event, ToolCallDelta):
            call = self.calls.get(event.index)
            if call is not None:
                call.parts.append(event.delta)
                body = {"item_id": call.id, "output_index": call.output_index, "delta": event.delta}
                self._emit(out, "response.function_call_arguments.delta", body, skip=span - 1)
        elif isinstance(event, StreamStart):
            self._emit(out, "response.created", {"response": self.response()})
            self.status = "in_progress"
            self._emit(out, "response.in_progress", {"response": self.response()})
        elif isinstance(event, ToolCallStart):
            self._close_open(out)
            call = self._new_item("function_call")
            call.call_id, call.name = event.call_id, event.name
            self.calls[event.index] = call
            self._emit(
                out,
                "response.output_item.added",
                {"output_index": call.output_index, "item": call.body("in_progress")},
            )
        elif isinstance(event, ToolCallEnd):
            call = self.calls.get(event.index)
            if call is not None and not call.done:
                call.parts = [event.arguments]
                call.done = True
                where = {"item_id": call.id, "output_index": call.output_index}
                self._emit(
                    out,
                    "response.function_call_arguments.done",
                    {**where, "arguments": event.arguments},
                )
                self._emit(
                    out,
                    "response.output_item.done",
                    {"output_index": call.output_index, "item": call.body("completed")},
                )
        elif isinstance(event, ErrorEvent):
            self._failure = event
        elif isinstance(event, StreamEnd):
            self._end(event, out)
        return [body for body in out if body["sequence_number"] > self.after]

    def _emit(
        self, out: list[dict[str, Any]], name: str, body: dict[str, Any], *, skip: int = 0
    ) -> None:
        self.next_number += skip
        event = {"type": name, "sequence_number": self.next_number, **body}
        if self.lane is not None:
            event["stream_id"] = self.lane
        self.next_number += 1
        out.append(event)

    def _new_item(self, kind: str) -> _Item:
        prefix = {"message": "msg", "reasoning": "rs", "function_call": "fc"}[kind]
        index = len(self.items)
        item = _Item(kind, f"{prefix}_{self._suffix}_{index}", index)
        self.items.append(item)
        return item

    def _open(self, kind: str, out: list[dict[str, Any]]) -> _Item:
        item = self._new_item(kind)
        self.open = item
        self._emit(
            out,
            "response.output_item.added",
            {"output_index": item.output_index, "item": item.body("in_progress")},
        )
        self._emit(
            out,
            "response.content_part.added",
            {
                "item_id": item.id,
                "output_index": item.output_index,
                "content_index": 0,
                "part": item.part(""),
            },
        )
        return item

    def _close_open(self, out: list[dict[str, Any]], status: str = "completed") -> None:
        item, self.open = self.open, None
        if item is None:
            return
        item.done = status == "completed"
        where = {"item_id": item.id, "output_index": item.output_index, "content_index": 0}
        if item.kind == "message":
            self._emit(
                out, "response.output_text.done", {**where, "text": item.text, "logprobs": []}
            )
        else:
            self._emit(out, "response.reasoning_text.done", {**where, "text": item.text})
        self._emit(out, "response.content_part.done", {**where, "part": item.part()})
        self._emit(
            out,
            "response.output_item.done",
            {"output_index": item.output_index, "item": item.body(status)},
        )

    def _end(self, end: StreamEnd, out: list[dict[str, Any]]) -> None:
        name, status = _TERMINAL[end.finish_reason]
        item_status = "completed" if status == "completed" else "incomplete"
        self._close_open(out, item_status)
        self.ended = True
        for call in self.calls.values():  # a call without its end is incomplete
            if not call.done:
                self._emit(
                    out,
                    "response.output_item.done",
                    {"output_index": call.output_index, "item": call.body("incomplete")},
                )
        self.status = status
        self.usage = end.usage
        self.completed_at = int(time.time()) if status == "completed" else None
        if end.finish_reason in _INCOMPLETE_REASONS:
            self.incomplete_details = {"reason": _INCOMPLETE_REASONS[end.finish_reason]}
        if status == "failed":
            failure = self._failure
            if failure is not None:
                code = (
                    "rate_limit_exceeded"
                    if failure.code is ErrorCode.RATE_LIMITED
                    else "server_error"
                )
                self.error = {"code": code, "message": failure.message}
            else:
                self.error = {
                    "code": "server_error",
                    "message": "the stream exceeded its maximum duration",
                }
        self._emit(out, name, {"response": self.response()})


def encode_sse(events: list[dict[str, Any]]) -> bytes:
    """SSE frames of Responses events, as OpenAI sends them: ``event: <type>``,
    ``data: <compact JSON>``, a blank line; no ``id:``, no ``[DONE]``."""
    return "".join(
        f"event: {event['type']}\ndata: {_dumps(event)}\n\n" for event in events
    ).encode()


def encode_json(events: list[dict[str, Any]]) -> list[str]:
    """WebSocket text frames of Responses events: one compact JSON object each."""
    return [_dumps(event) for event in events]


def ws_error(
    code: ErrorCode | str,
    message: str,
    *,
    status: int,
    param: str | None = None,
    lane: str | None = None,
) -> str:
    """A WebSocket-mode error frame (openai ``ResponseWsError``): ``{"type": "error",
    "status": <HTTP status>, "error": {...}}``, with ``stream_id`` when the request named a
    lane."""
    frame: dict[str, Any] = {
        "type": "error",
        "status": status,
        "error": error_object(code, message, param=param),
    }
    if lane is not None:
        frame["stream_id"] = lane
    return _dumps(frame)
