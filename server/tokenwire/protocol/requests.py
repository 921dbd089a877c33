"""Request models: what a client may ask for, over HTTP and WebSocket alike.

Validation errors name the offending field (``messages.0.role: ...``) through
:func:`describe_validation_error`, which both transports use for their ``invalid_request`` answers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from tokenwire.errors import InvalidRequest

MAX_ID_LENGTH = 128

Role = Literal["system", "developer", "user", "assistant", "tool"]
"""Who speaks a message (OpenAI chat roles; ``tool`` carries a tool's result)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    """A text part of a multi-part message content (OpenAI ``{"type": "text", "text"}``)."""

    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    """An image by URL or ``data:`` URL; ``detail`` as OpenAI defines it."""

    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Strict):
    """An image part of a user message (OpenAI ``{"type": "image_url", "image_url": {...}}``)."""

    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Strict):
    """A function a model called: its name and its arguments (JSON text, as the model wrote it).
    ``parsed_arguments`` is what the openai SDK's parse helpers add when a client sends a
    completion's message back as it got it: the SDK's own reading of ``arguments``, not an API
    field, so never sent on."""

    name: str
    arguments: str
    parsed_arguments: Any = Field(default=None, exclude=True)


class MessageToolCall(_Strict):
    """One tool call of an earlier assistant turn (OpenAI ``message.tool_calls[]``). ``index``
    is what the openai SDK's stream accumulation leaves on a call (the chunk's index, not an
    API field of a message): accepted, never sent on."""

    id: Annotated[str, Field(min_length=1)]
    type: Literal["function"] = "function"
    function: FunctionCall
    index: int | None = Field(default=None, exclude=True)


class ChatMessage(_Strict):
    """One conversation turn (OpenAI's chat message, every role).

    ``content`` is the message's text: a string as given, a list of text parts joined, ``""``
    for a null content (allowed on an assistant turn with ``tool_calls`` only). A list that holds
    other parts (``image_url``) is kept as given in :attr:`parts`, sent as such upstream.
    ``tool_calls`` belongs to assistant turns, ``tool_call_id`` (required) to ``tool`` turns;
    :func:`check_conversation` enforces that (HTTP 400). An assistant turn's
    ``reasoning_content`` / ``reasoning`` (a reasoning model's completion, sent back as it came)
    is the ``reasoning_history`` capability: passed upstream by the ``openai`` provider,
    refused by a provider that cannot take it.
    """

    role: Role
    content: str = ""
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    # Fields of a completion's message that a client sends back with it (the openai SDK echoes
    # them): output-only (``annotations``, ``audio``, ``function_call``: tokenwire never
    # produces them, so null) or the SDK's own parse result (``parsed``); never sent on.
    annotations: list[Any] | None = Field(default=None, exclude=True)
    audio: None = Field(default=None, exclude=True)
    function_call: None = Field(default=None, exclude=True)
    parsed: Any = Field(default=None, exclude=True)
    _parts: list[TextPart | ImagePart] | None = PrivateAttr(default=None)
    _null_content: bool = PrivateAttr(default=False)

    @model_validator(mode="wrap")
    @classmethod
    def _content_forms(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(data, ChatMessage):  # already parsed: keep what it holds
            return handler(data)
        parts: list[TextPart | ImagePart] | None = None
        null = False
        if isinstance(data, dict) and "content" in data:
            content = data["content"]
            if content is None:
                null = True
                data = {**data, "content": ""}
            elif isinstance(content, list):
                parts = _CONTENT_PARTS.validate_python(content)
                text = "".join(part.text for part in parts if isinstance(part, TextPart))
                data = {**data, "content": text}
                if all(isinstance(part, TextPart) for part in parts):
                    parts = None  # plain text: the joined string says it all
        elif isinstance(data, dict) and "content" not in data:
            null = True  # OpenAI: content is optional on assistant turns with tool_calls
        message = handler(data)
        if isinstance(message, ChatMessage):
            message._parts = parts
            message._null_content = null
        return message

    @property
    def parts(self) -> list[TextPart | ImagePart] | None:
        """The content's parts when they are not all text (images), else ``None``."""
        return self._parts

    @property
    def null_content(self) -> bool:
        """Whether the content was null or absent (``content`` is then ``""``)."""
        return self._null_content

    def to_openai(self) -> dict[str, Any]:
        """The message as OpenAI's chat API takes it (for an OpenAI-compatible upstream)."""
        out: dict[str, Any] = {"role": self.role}
        if self._parts is not None:
            out["content"] = [part.model_dump(exclude_none=True) for part in self._parts]
        elif self._null_content and self.tool_calls:
            out["content"] = None
        else:
            out["content"] = self.content
        for key in ("name", "tool_call_id", "refusal", "reasoning_content", "reasoning"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.tool_calls:
            out["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        return out


_CONTENT_PARTS: TypeAdapter[list[TextPart | ImagePart]] = TypeAdapter(list[ContentPart])

_FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class FunctionDefinition(_Strict):
    """A function the model may call: ``parameters`` is a JSON Schema of ``type: object``
    (checked by :func:`check_conversation`); ``strict`` asks for exact schema adherence."""

    name: Annotated[str, Field(pattern=_FUNCTION_NAME)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(_Strict):
    """A tool offered to the model (OpenAI ``tools[]``): only ``function`` tools exist."""

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    """``tool_choice`` that forces one function: ``{"type": "function", "function": {name}}``."""

    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(_Strict):
    name: Annotated[str, Field(pattern=_FUNCTION_NAME)]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    """OpenAI ``response_format``: ``text``, ``json_object``, or ``json_schema`` with its schema."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    def to_openai(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, by_alias=True)


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


class GenerateParams(BaseModel):
    """What to generate: the fields shared by ``POST /v1/streams``, WebSocket ``generate`` and
    (translated) ``POST /v1/chat/completions``. Every field means what OpenAI's Chat
    Completions API reference says it means.

    ``max_tokens`` is in tokens; ``temperature`` in [0, 2]; ``top_p`` in (0, 1];
    ``presence_penalty`` and ``frequency_penalty`` in [-2, 2]; ``logit_bias`` maps token ids to
    [-100, 100]. ``model`` defaults to the provider's default model. ``on_disconnect`` chooses
    what happens to the generation if the client goes away: ``cancel`` stops it, ``detach``
    lets it run on for the server's grace period. ``extra_body``: fields sent as they are to an
    OpenAI-compatible upstream (e.g. vLLM's ``top_k``); only the ``openai`` provider takes it.

    A field is either honoured by the chosen provider or refused (HTTP 400 naming the field and
    the provider, see :meth:`requested_fields` and ``Provider.honours``), never ignored.
    """

    model_config = ConfigDict(extra="forbid")

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    model: str | None = None
    max_tokens: Annotated[int | None, Field(ge=1, strict=True)] = None  # "5", true: refused
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    top_p: Annotated[float | None, Field(gt=0, le=1)] = None
    stop: str | list[str] | None = None
    seed: int | None = None
    on_disconnect: Literal["cancel", "detach"] | None = None  # default: the server's setting
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: ReasoningEffort | None = None
    presence_penalty: Annotated[float | None, Field(ge=-2, le=2)] = None
    frequency_penalty: Annotated[float | None, Field(ge=-2, le=2)] = None
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = None
    user: Annotated[str | None, Field(max_length=256)] = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prediction: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    extra_body: dict[str, Any] | None = None

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is not None:
            for key in value:
                if not key.isdecimal():
                    raise ValueError(f"keys must be token ids (decimal integers), got {key!r}")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def requested_fields(self) -> list[tuple[str, str]]:
        """What this request asks of a provider beyond plain text turns, as (capability,
        field path) pairs: ``("tools", "tools")``, ``("tool_calls", "messages.2.tool_calls")``,
        ``("tool_messages", "messages.3.role")``, ``("image_url", "messages.0.content")``,
        ``("name", "messages.1.name")``, ``("extra_body", "extra_body.top_k")``... A provider
        honours a capability or the request is refused naming the path (HTTP 400)."""
        wanted: list[tuple[str, str]] = []
        for field in OPTIONAL_FIELDS:
            if getattr(self, field) is not None:
                wanted.append((field, field))
        for key in self.extra_body or {}:
            wanted.append(("extra_body", f"extra_body.{key}"))
        for i, message in enumerate(self.messages):
            if message.tool_calls:
                wanted.append(("tool_calls", f"messages.{i}.tool_calls"))
            if message.role == "tool":
                wanted.append(("tool_messages", f"messages.{i}.role"))
            if message.parts is not None:
                wanted.append(("image_url", f"messages.{i}.content"))
            for key in ("name", "refusal"):
                if getattr(message, key) is not None:
                    wanted.append((key, f"messages.{i}.{key}"))
            for key in ("reasoning_content", "reasoning"):
                if getattr(message, key) is not None:
                    wanted.append(("reasoning_history", f"messages.{i}.{key}"))
        return wanted


OPTIONAL_FIELDS = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "user",
    "metadata",
    "store",
    "service_tier",
    "prediction",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
)
"""The fields of :class:`GenerateParams` that a provider may not honour. The core ones every
provider honours: ``messages`` as text turns, ``model``, ``max_tokens``, ``temperature``,
``top_p``, ``stop``, ``seed`` and ``on_disconnect``."""

CAPABILITIES = frozenset(
    OPTIONAL_FIELDS
    + ("extra_body", "tool_calls", "tool_messages", "image_url", "name", "refusal")
    + ("reasoning_history",)
)
"""Every capability :meth:`GenerateParams.requested_fields` names: what a provider declares it
honours (``Provider.honours``)."""


def check_conversation(params: GenerateParams) -> None:
    """The checks of a request's meaning that its shape cannot say, as OpenAI makes them.

    Raises :class:`InvalidRequest` (HTTP 400) naming the field: a ``tool`` message without
    ``tool_call_id``; ``tool_call_id`` or ``tool_calls`` on a role that has none; a null
    content outside an assistant turn with ``tool_calls``; images outside a user turn; a
    function's ``parameters`` that is not a JSON Schema of ``type: object``; two tools of one
    name; ``tool_choice`` or ``parallel_tool_calls`` without ``tools``, or naming no offered
    tool; ``response_format`` ``json_schema`` without its schema.
    """
    for i, message in enumerate(params.messages):
        where = f"messages.{i}"
        if message.role == "tool":
            if not message.tool_call_id:
                raise _refused(
                    f"{where}.tool_call_id", "a tool message must name the call it answers"
                )
        elif message.tool_call_id is not None:
            raise _refused(f"{where}.tool_call_id", "only a tool message has one")
        if message.tool_calls is not None and message.role != "assistant":
            raise _refused(f"{where}.tool_calls", "only an assistant message has them")
        if message.null_content and not (message.role == "assistant" and message.tool_calls):
            raise _refused(
                f"{where}.content", "required (null only on an assistant message with tool_calls)"
            )
        if message.parts is not None and message.role != "user":
            raise _refused(f"{where}.content", "image parts belong to user messages only")
    names: set[str] = set()
    for i, tool in enumerate(params.tools or []):
        function = tool.function
        if function.name in names:
            raise _refused(f"tools.{i}.function.name", f"{function.name!r} is offered twice")
        names.add(function.name)
        if function.parameters is not None:
            problem = schema_problem(function.parameters)
            if problem:
                raise _refused(
                    f"tools.{i}.function.parameters",
                    f"invalid schema for function {function.name!r}: {problem}",
                )
    if params.tools is None:
        for key in ("tool_choice", "parallel_tool_calls"):
            if getattr(params, key) is not None:
                raise _refused(key, "only allowed when tools are given")
    elif isinstance(params.tool_choice, NamedToolChoice):
        if params.tool_choice.function.name not in names:
            name = params.tool_choice.function.name
            raise _refused("tool_choice.function.name", f"no tool named {name!r}")
    fmt = params.response_format
    if fmt is not None and fmt.type == "json_schema":
        if fmt.json_schema is None or fmt.json_schema.schema_ is None:
            raise _refused("response_format.json_schema.schema", "required for json_schema")
        problem = schema_problem(fmt.json_schema.schema_)
        if problem:
            raise _refused("response_format.json_schema.schema", problem)


def _refused(path: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {why}", param=path)


_SCHEMA_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


def schema_problem(schema: dict[str, Any]) -> str | None:
    """What is wrong with a function's parameters schema (``None``: nothing found): it must be
    a JSON Schema object of ``type: "object"``; ``properties`` an object of schemas;
    ``required`` a list of strings; every ``type`` one of JSON Schema's. A structural check,
    not a full meta-schema validation."""
    if schema.get("type", "object") != "object":
        return f"schema must be a JSON Schema of type 'object', got type {schema['type']!r}"
    return _subschema_problem(schema, "")


def _subschema_problem(schema: Any, at: str) -> str | None:
    if not isinstance(schema, dict):
        return f"{at or 'schema'} must be an object, got {type(schema).__name__}"
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    for item in kinds:
        if item not in _SCHEMA_TYPES:
            return f"{at + '.' if at else ''}type {item!r} is not a JSON Schema type"
    required = schema.get("required")
    if required is not None and not (
        isinstance(required, list) and all(isinstance(name, str) for name in required)
    ):
        return f"{at + '.' if at else ''}required must be a list of property names"
    properties = schema.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            return f"{at + '.' if at else ''}properties must be an object"
        for name, sub in properties.items():
            problem = _subschema_problem(sub, f"{at + '.' if at else ''}properties.{name}")
            if problem:
                return problem
    items = schema.get("items")
    if isinstance(items, dict):
        return _subschema_problem(items, f"{at + '.' if at else ''}items")
    return None


class GenerateMessage(GenerateParams):
    """WebSocket client message: start a stream. ``request_id`` is echoed in ``stream.start``."""

    type: Literal["generate"]
    request_id: Annotated[str | None, Field(max_length=MAX_ID_LENGTH)] = None


class CancelMessage(BaseModel):
    """WebSocket client message: stop a stream (``stream.end`` with finish_reason cancelled)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["cancel"]
    stream_id: Annotated[str, Field(max_length=MAX_ID_LENGTH)]


class ResumeMessage(BaseModel):
    """WebSocket client message: replay a stream's events after ``after_seq``, then go live."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["resume"]
    stream_id: Annotated[str, Field(max_length=MAX_ID_LENGTH)]
    after_seq: Annotated[int, Field(ge=0)] = 0


class PingMessage(BaseModel):
    """WebSocket client message: an application-level ping, answered by a ``pong`` with its id."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["ping"]
    id: Annotated[str, Field(max_length=MAX_ID_LENGTH)] | int | None = None


ClientMessage = Annotated[
    GenerateMessage | CancelMessage | ResumeMessage | PingMessage,
    Field(discriminator="type"),
]
CLIENT_MESSAGE_ADAPTER: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


def describe_validation_error(exc: ValidationError, *, limit: int = 3) -> str:
    """One line naming each failing field, e.g. ``messages.0.role: Input should be 'user'``."""
    parts = []
    for error in exc.errors(include_url=False)[:limit]:
        location = ".".join(str(part) for part in error["loc"]) or "body"
        parts.append(f"{location}: {error['msg']}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def invalid_request(exc: ValidationError) -> InvalidRequest:
    """A 400 for a body that failed validation: :func:`describe_validation_error`'s text, and
    ``param`` the first failing field's path (``messages.0.role``; ``None`` for the body)."""
    first = exc.errors(include_url=False)[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    return InvalidRequest(describe_validation_error(exc), param=param)
