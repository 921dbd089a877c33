"""The ``tokenwire`` command: ``tokenwire serve`` runs the server under uvicorn;
``tokenwire chat`` is a terminal chat with a running server; ``tokenwire new-key`` makes an API
key and its ``api_keys_file`` line.

``--provider`` takes a built-in name, a name that an installed package registers in the
entry-point group ``tokenwire.providers``, or ``module:attribute`` naming an async generator
function, a ``Provider`` subclass or instance (the current directory is on ``sys.path``, as
with uvicorn). Every flag mirrors a ``TOKENWIRE_*`` setting; a flag given on the command
line wins over the environment. Flags are passed to worker processes through the environment,
so ``--workers N`` runs N identical workers.
"""

from __future__ import annotations

import errno
import math
import os
import secrets
import socket
import sys
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import uvicorn
from pydantic import ValidationError

from tokenwire import __version__
from tokenwire.edge.keys import key_file_line, new_api_key
from tokenwire.edge.security import check_settings
from tokenwire.providers import ProviderLoadError, create_provider, provider_names
from tokenwire.settings import Settings

HELP = (
    "Stream LLM tokens over Server-Sent Events and WebSocket.\n\n"
    "'tokenwire serve' runs the server (on the bundled local model by default); "
    "'tokenwire chat' chats with a running server in the terminal; 'tokenwire new-key' makes "
    "an API key; 'tokenwire bench' runs the transport benchmark of a source checkout. Every "
    "'serve' flag mirrors a TOKENWIRE_* setting; a flag wins over the environment."
)

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help=HELP, rich_markup_mode="markdown"
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tokenwire {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Stream LLM tokens over Server-Sent Events and WebSocket."""


def _shown(name: str) -> str:
    """``(env TOKENWIRE_<NAME>, default ...)`` for a setting's help (square brackets would be
    taken for rich markup)."""
    default = Settings.model_fields[name].default
    if isinstance(default, Enum):
        default = default.value
    return f"(env TOKENWIRE_{name.upper()}, default {'none' if default is None else default})"


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit status 2: how ``serve`` refuses to start."""
    typer.echo(f"tokenwire serve: {message}", err=True)
    raise typer.Exit(2)


def _settings_error(exc: ValidationError) -> str:
    """A settings error named as the environment variable that set it."""
    problems = []
    for error in exc.errors():
        name = "TOKENWIRE_" + "_".join(str(part) for part in error["loc"]).upper()
        given = error.get("input")
        shown = f"={given!r}" if isinstance(given, str | int | float) else ""
        problems.append(f"{name}{shown}: {error['msg']}")
    return "; ".join(problems)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help=f"Bind address. {_shown('host')}")] = None,
    port: Annotated[int | None, typer.Option(help=f"TCP port. {_shown('port')}")] = None,
    provider: Annotated[
        str | None,
        typer.Option(
            help=f"One of: {', '.join(provider_names())}; or module:attribute, an async "
            f"generator function or a Provider. {_shown('provider')}"
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help=f"local: a GGUF path (default: the bundled SmolLM2); openai: a model id. "
            f"{_shown('model')}"
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes; more than 1 needs a shared stream log "
            f"(TOKENWIRE_STREAM_LOG=redis://...) or --unshared-log. {_shown('workers')}"
        ),
    ] = None,
    stream_log: Annotated[
        str | None,
        typer.Option(help=f"memory, or a redis:// URL shared by workers. {_shown('stream_log')}"),
    ] = None,
    unshared_log: Annotated[
        bool,
        typer.Option(
            "--unshared-log",
            help="Let --workers N run with the memory log: each worker keeps its own streams, "
            f"so a resume that lands on another worker is answered unknown_stream. "
            f"{_shown('unshared_log')}",
        ),
    ] = False,
    log_level: Annotated[
        str | None, typer.Option(help=f"critical..trace. {_shown('log_level')}")
    ] = None,
) -> None:
    """Run the server.

    Under uvicorn (with uvloop and httptools when installed). It refuses to start, with one
    line saying why, on a bad setting, a missing model file, a port in use, an openai provider
    with no upstream configured, or several workers on unshared memory logs."""
    flags: dict[str, Any] = {
        "host": host,
        "port": port,
        "provider": provider,
        "model": model,
        "workers": workers,
        "stream_log": stream_log,
        "unshared_log": unshared_log or None,
        "log_level": log_level,
    }
    for name, value in flags.items():
        if value is not None:
            os.environ[f"TOKENWIRE_{name.upper()}"] = str(value)
    if os.getcwd() not in sys.path:  # `--provider mymodule:generate` from where mymodule is
        sys.path.insert(0, os.getcwd())
    try:
        settings = Settings()
        check_settings(settings)
    except ValidationError as exc:
        _fail(_settings_error(exc))
    except ValueError as exc:
        _fail(str(exc))
    _check_provider(settings)
    _check_workers(settings)
    _check_port(settings.host, settings.port)
    _check_stream_log(settings)
    if settings.token_secret is None:  # one signing secret for every worker of this server
        os.environ["TOKENWIRE_TOKEN_SECRET"] = secrets.token_urlsafe(32)
    uvicorn.run(
        "tokenwire.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        ws_max_size=settings.ws_max_message_size,
        # the app applies forwarded headers itself (edge/proxy.py: uvicorn's middleware with
        # TOKENWIRE_FORWARDED_ALLOW_IPS, after noting the peer that the Host and Origin checks
        # trust); uvicorn's own would hide that peer behind X-Forwarded-For
        proxy_headers=False,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        # httptools with the request head bounded (size: 431; time: closed); see edge/http.py
        http="tokenwire.edge.http:HeadLimitedProtocol",
        # connections end at once on SIGTERM (SSE responses end, WebSockets close 1012); the
        # generations get the drain timeout in the lifespan shutdown
        timeout_graceful_shutdown=max(1, math.ceil(settings.drain_timeout)),
    )


@app.command("new-key")
def new_key(
    name: Annotated[
        str | None, typer.Option(help="A label for logs and metrics (no spaces).")
    ] = None,
) -> None:
    """Print a new API key and its TOKENWIRE_API_KEYS_FILE line.

    The key (first line) goes to the client; the second line, to append to the keys file,
    holds only the key's SHA-256 digest."""
    if name is not None and (not name or any(c.isspace() for c in name)):
        raise typer.BadParameter("a name without spaces", param_hint="--name")
    key = new_api_key()
    typer.echo(key)
    typer.echo(key_file_line(key, name))


def _check_provider(settings: Settings) -> None:
    """The provider can be built, its model file exists, and an openai upstream is named."""
    if settings.provider == "local" and settings.model is not None:
        if not Path(settings.model).is_file():
            _fail(f"model file not found: {settings.model} (--model / TOKENWIRE_MODEL)")
    if settings.provider == "openai" and not (
        settings.openai_base_url or settings.openai_api_key or os.environ.get("OPENAI_API_KEY")
    ):
        _fail(
            "the openai provider needs TOKENWIRE_OPENAI_BASE_URL (an OpenAI-compatible server, "
            "e.g. http://127.0.0.1:8080/v1) or TOKENWIRE_OPENAI_API_KEY (for api.openai.com)"
        )
    try:
        create_provider(settings)  # fails here, not in each worker; it is built again there
    except ProviderLoadError as exc:
        _fail(f"--provider: {exc}")


def _check_workers(settings: Settings) -> None:
    if settings.workers > 1 and settings.stream_log == "memory" and not settings.unshared_log:
        _fail(
            f"--workers {settings.workers} with the memory stream log would keep each stream "
            "on one worker, and resumes landing on another would fail: share a log with "
            "TOKENWIRE_STREAM_LOG=redis://HOST:6379/0, or accept that with --unshared-log"
        )


def _check_port(host: str, port: int) -> None:
    """Bind ``host:port`` once, as uvicorn will, to say plainly when it is taken."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        _fail(f"cannot resolve --host {host}: {exc}")
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                _fail(f"{host}:{port} is in use; choose another with --port / TOKENWIRE_PORT")
            _fail(f"cannot listen on {host}:{port}: {exc.strerror}")


def _check_stream_log(settings: Settings) -> None:
    """Fail before starting any worker if the Redis stream log cannot be reached."""
    if settings.stream_log == "memory":
        return
    from redis import Redis
    from redis.exceptions import RedisError

    from tokenwire.streams.redis_log import redacted

    try:
        with Redis.from_url(settings.stream_log, socket_connect_timeout=5) as client:
            client.ping()
    except RedisError as exc:
        _fail(f"cannot reach the stream log at {redacted(settings.stream_log)}: {exc}")


class ChatTransport(StrEnum):
    SSE = "sse"
    WEBSOCKET = "websocket"


@app.command()
def chat(
    url: Annotated[
        str, typer.Option(help="The server's base URL.", envvar="TOKENWIRE_URL")
    ] = "http://127.0.0.1:8000",
    transport: Annotated[
        ChatTransport, typer.Option(help="How replies travel.")
    ] = ChatTransport.SSE,
    model: Annotated[str | None, typer.Option(help="Model id (default: the server's).")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="Tokens per reply (default: the server's).")
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(min=0, max=2, help="Sampling temperature, 0 to 2 (default: the server's)."),
    ] = None,
    system: Annotated[str | None, typer.Option(help="A system message to start with.")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="API key, for a server with authentication on.",
            envvar="TOKENWIRE_API_KEY",
            show_default=False,
        ),
    ] = None,
    history: Annotated[
        bool,
        typer.Option(
            help="Keep the lines typed in $XDG_STATE_HOME/tokenwire/chat_history "
            "(~/.local/state when unset) for Up/Down in later chats."
        ),
    ] = True,
) -> None:
    """Chat with a running server in the terminal.

    Replies stream token by token (reasoning dimmed); Ctrl-C stops a reply (not the chat);
    Ctrl-D or /exit quits. The prompt has line editing and history; /help lists the commands
    (/clear, /model NAME, /exit), which never reach the model. Exit status 1, at once, when
    no server answers at --url."""
    from tokenwire_client.chat import history_path, run_chat  # the client is only needed here

    raise typer.Exit(
        run_chat(
            url,
            transport=transport.value,
            model=model,
            max_tokens=max_tokens,
            temperature=temperature,
            system=system,
            api_key=api_key,
            history=history_path() if history else None,
        )
    )


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Run the transport benchmark of a source checkout (SSE vs WebSocket vs baselines).

    Results go to $XDG_DATA_HOME/tokenwire/bench/<profile>-<UTC time> (~/.local/share when
    unset), outside the source tree; --out chooses another folder, --report-only re-renders
    the tables and plots of an earlier run's results.json. The harness is benchmark code, not
    part of the installed package: it lives in the repository's benchmarks/transport, found in
    the current directory or a parent. Every option is the harness's own (tokenwire bench
    --help; --quick for the 2-minute profile). Exit status 2 when no checkout is found, else
    the harness's.
    """
    import subprocess
    import sys
    from pathlib import Path

    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        benchmarks = folder / "benchmarks"
        if (benchmarks / "transport" / "__main__.py").is_file():
            break
    else:
        typer.echo(
            "tokenwire bench: benchmarks/transport not found in the current directory or its "
            "parents; run it from a tokenwire source checkout (pip install -e '.[bench]')",
            err=True,
        )
        raise typer.Exit(2)
    path = os.pathsep.join(p for p in (str(benchmarks), os.environ.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "transport", *ctx.args]
    raise typer.Exit(subprocess.call(command, env={**os.environ, "PYTHONPATH": path}))


if __name__ == "__main__":
    app()
