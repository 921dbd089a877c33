"""Server settings, read from the environment (prefix ``TOKENWIRE_``) and from CLI flags.

Durations are in seconds; ``None`` disables a timeout or heartbeat where the field allows it.
A variable set but empty (``TOKENWIRE_FIRST_TOKEN_TIMEOUT=``) means ``None`` for such a
field ("empty: none" in docs/settings.md); for any other field it is an error naming it.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class OverflowPolicy(StrEnum):
    """What a subscription does when its bounded queue is full."""

    BLOCK = "block"  # the producer (and so the provider) waits
    COALESCE = "coalesce"  # queued text deltas merge into one event (lossless)
    DISCONNECT = "disconnect"  # a consumer that stays full is evicted (slow_consumer)


class DisconnectPolicy(StrEnum):
    """What happens to a generation when its client goes away."""

    CANCEL = "cancel"  # stop the provider
    DETACH = "detach"  # keep generating for a grace period so that a client may resume


def check_trusted(entries: list[str]) -> list[str]:
    """``forwarded_allow_ips`` entries as given, once each is known to be ``*``, an IP address
    or a network (``10.0.0.0/8``). Raises ``ValueError`` naming the first bad entry."""
    for entry in entries:
        if entry != "*":
            try:
                if "/" in entry:
                    ipaddress.ip_network(entry, strict=False)
                else:
                    ipaddress.ip_address(entry)
            except ValueError:
                raise ValueError(f"not an IP address, network or '*': {entry!r}") from None
    return entries


class Settings(BaseSettings):
    """All of tokenwire's settings; each is also an env variable ``TOKENWIRE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="TOKENWIRE_", extra="ignore")

    # server
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    workers: Annotated[int, Field(ge=1)] = 1
    unshared_log: bool = False  # let workers > 1 run on memory logs of their own
    log_level: str = "info"

    # provider
    provider: str = "local"  # built-in name, tokenwire.providers entry point, or module:attribute
    model: str | None = None  # local: a GGUF path (default: the bundled SmolLM2); openai: model id
    max_tokens: Annotated[int, Field(ge=1)] = 512  # default when a request gives none
    max_tokens_limit: Annotated[int, Field(ge=1)] = 4096  # upper bound a request may ask for
    local_n_ctx: Annotated[int, Field(ge=128)] = 2048  # context tokens per slot (per stream)
    # llama.cpp threads for decode steps (every running stream's next token; None: half the
    # CPUs) and for steps that prefill prompt tokens (None: as local_threads)
    local_threads: Annotated[int | None, Field(ge=1)] = None
    local_prefill_threads: Annotated[int | None, Field(ge=1)] = None
    local_parallel: Annotated[int, Field(ge=1, le=64)] = 4  # slots: streams decoded together
    # prompt tokens prefilled per decode step (shared by new streams): bounds how long a long
    # prompt holds up the running streams' next token
    local_prefill_chunk: Annotated[int, Field(ge=16, le=4096)] = 128
    local_prompt_cache: bool = True  # a slot keeps its last prompt's KV cells for reuse
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    openai_timeout: Annotated[float, Field(gt=0)] = 60.0
    scripted_tokens: Annotated[int, Field(ge=0)] = 32
    scripted_ttft: Annotated[float, Field(ge=0)] = 0.0
    scripted_interval: Annotated[float, Field(ge=0)] = 0.0
    scripted_jitter: Annotated[float, Field(ge=0)] = 0.0
    scripted_error_after: Annotated[int | None, Field(ge=0)] = None
    scripted_stall_after: Annotated[int | None, Field(ge=0)] = None
    scripted_stall: Annotated[float, Field(ge=0)] = 0.0
    scripted_reasoning_tokens: Annotated[int, Field(ge=0)] = 0  # before the text
    scripted_tool_calls: Annotated[int, Field(ge=0)] = 0  # after the text; finish: tool_calls
    scripted_tool_call_pieces: Annotated[int, Field(ge=1)] = 4  # argument deltas per call
    scripted_interleave_tool_calls: bool = False  # parallel calls' pieces alternate

    # streams
    queue_maxsize: Annotated[int, Field(ge=1)] = 64
    overflow: OverflowPolicy = OverflowPolicy.BLOCK
    on_disconnect: DisconnectPolicy = DisconnectPolicy.CANCEL
    slow_consumer_timeout: Annotated[float, Field(gt=0)] = 5.0  # overflow=disconnect: evict after
    detach_grace: Annotated[float, Field(ge=0)] = 60.0  # on_disconnect=detach: cancel after
    first_token_timeout: Annotated[float | None, Field(gt=0)] = 120.0
    max_stream_duration: Annotated[float | None, Field(gt=0)] = 900.0

    # resume: the stream log (memory, or a redis:// URL shared by every worker and host)
    stream_log: str = "memory"
    stream_log_max_events: Annotated[int, Field(ge=1)] = 10_000  # kept per stream
    stream_log_max_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024  # kept per stream
    stream_log_ttl: Annotated[float, Field(gt=0)] = 300.0  # an ended stream stays resumable
    stream_log_lease: Annotated[float, Field(gt=0)] = 10.0  # redis: a silent owner is gone after
    # redis: connections readers may hold at once (the writer has its own); more: 503
    stream_log_max_readers: Annotated[int, Field(ge=1)] = 64
    reconnect_delay: Annotated[float, Field(ge=0)] = 1.0  # SSE `retry:` sent to clients
    drain_timeout: Annotated[float, Field(ge=0)] = 30.0  # shutdown: generations may finish

    # liveness
    heartbeat_interval: Annotated[float | None, Field(gt=0)] = 15.0  # SSE `: ping` when idle
    send_timeout: Annotated[float | None, Field(gt=0)] = 30.0  # bound on every write
    write_delay: Annotated[float, Field(ge=0, le=1)] = 0.005  # seconds between writes of text
    ws_ping_interval: Annotated[float | None, Field(gt=0)] = 20.0  # RFC 6455 ping frames
    ws_ping_timeout: Annotated[float | None, Field(gt=0)] = 20.0  # no pong: close 1011
    ws_max_message_size: Annotated[int, Field(ge=1024)] = 65536  # bytes; larger: close 1009
    log_format: Literal["text", "json"] = "text"
    # Python's gc threshold0 while the app runs: container allocations (net of deallocations)
    # between young collections; None keeps Python's (700). See docs/settings.md.
    gc_young_threshold: Annotated[int | None, Field(ge=1)] = None

    # demo page
    web_dir: str | None = None  # serve GET / from this directory instead of the bundled page

    # security and limits (docs/security.md); lists are comma-separated in the environment
    auth: Literal["auto", "required", "off"] = "auto"  # auto: required once a key is configured
    api_keys: Annotated[list[SecretStr], NoDecode] = []
    api_keys_file: Path | None = None  # lines `sha256:<hex> [name]`, re-read when it changes
    token_secret: SecretStr | None = None  # signs query tokens; None: random per process
    token_ttl: Annotated[float, Field(ge=1, le=3600)] = 60.0  # longest query-token lifetime
    auth_timeout: Annotated[float, Field(gt=0)] = 5.0  # WebSocket first `auth` message within
    allowed_origins: Annotated[list[str], NoDecode] = []  # exact; same-origin always allowed
    # Host header allowlist (DNS rebinding): exact names or `*.example.com` (Starlette's
    # TrustedHostMiddleware); empty: loopback names when `host` is loopback, else any host
    allowed_hosts: Annotated[list[str], NoDecode] = []
    # peers whose Forwarded / X-Forwarded-* headers are believed (uvicorn's
    # --forwarded-allow-ips): addresses, networks (10.0.0.0/8) or *; see edge/proxy.py
    forwarded_allow_ips: Annotated[list[str], NoDecode] = ["127.0.0.1", "::1"]
    max_body_size: Annotated[int, Field(ge=1024)] = 1048576  # bytes; larger: 413
    # `tokenwire serve` (edge/http.py): a request head (request line + headers) over this many
    # bytes: 431; a head not complete this many seconds after the connection opened or its
    # previous response ended: the connection is closed; None: no limit
    http_max_header_size: Annotated[int, Field(ge=1024)] = 65536
    http_header_timeout: Annotated[float | None, Field(gt=0)] = 10.0
    max_messages: Annotated[int, Field(ge=1)] = 256  # per request
    max_input_chars: Annotated[int, Field(ge=1)] = 262144  # all message contents together
    max_streams: Annotated[int, Field(ge=1)] = 512  # live streams per server process
    max_streams_per_key: Annotated[int, Field(ge=1)] = 32  # live streams per API key
    max_ws_connections: Annotated[int, Field(ge=1)] = 1024  # open WebSockets per process
    max_ws_connections_per_key: Annotated[int, Field(ge=1)] = 32
    # WebSockets waiting for their first-message `auth` (at most auth_timeout s each), counted
    # apart from max_ws_connections; more: close 1013
    max_ws_unauthenticated: Annotated[int, Field(ge=1)] = 256
    ws_messages_per_minute: Annotated[int | None, Field(ge=1)] = 240  # per socket; None: no limit
    ws_per_message_deflate: bool = False  # RFC 7692; the size limit applies decompressed
    metrics: bool = True  # GET /metrics (behind auth like every route when auth is on)

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object, info: ValidationInfo) -> object:
        """An empty value of a field that takes ``None`` is ``None``."""
        if value == "" and info.field_name is not None:
            field = cls.model_fields[info.field_name]
            if type(None) in get_args(field.annotation):
                return None
        return value

    @field_validator(
        "api_keys", "allowed_origins", "allowed_hosts", "forwarded_allow_ips", mode="before"
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return check_trusted(value)

    @field_validator("stream_log")
    @classmethod
    def _known_stream_log(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("stream_log must be 'memory' or a redis:// URL")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        levels = ("critical", "error", "warning", "info", "debug", "trace")
        if value.lower() not in levels:
            raise ValueError(f"log_level must be one of {', '.join(levels)}")
        return value.lower()
