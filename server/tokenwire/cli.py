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

import math
import os
import secrets
import sys
from enum import StrEnum
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError

from tokenwire.edge.keys import key_file_line, new_api_key
from tokenwire.edge.security import check_settings
from tokenwire.providers import ProviderLoadError, create_provider, provider_names
from tokenwire.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.callback()
def main() -> None:
    """Stream LLM tokens over Server-Sent Events and WebSocket."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [env TOKENWIRE_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [env TOKENWIRE_PORT].")] = None,
    provider: Annotated[
        str | None,
        typer.Option(
            help=f"One of: {', '.join(provider_names())}; or module:attribute, an async "
            "generator function or a Provider [env TOKENWIRE_PROVIDER]."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="local: a GGUF path; openai: a model id [env TOKENWIRE_MODEL]."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes [env TOKENWIRE_WORKERS].")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="critical..trace [env TOKENWIRE_LOG_LEVEL].")
    ] = None,
) -> None:
    """Run the server (uvicorn, uvloop and httptools when installed)."""
    flags = {
        "host": host,
        "port": port,
        "provider": provider,
        "model": model,
        "workers": workers,
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
    except (ValidationError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        create_provider(settings)  # fails here, not in each worker; it is built again there
    except ProviderLoadError as exc:
        raise typer.BadParameter(str(exc), param_hint="--provider") from exc
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
    """Print a new random API key (give it to the client) and, on the next line, the line to
    append to TOKENWIRE_API_KEYS_FILE (only the key's SHA-256 digest is stored)."""
    if name is not None and (not name or any(c.isspace() for c in name)):
        raise typer.BadParameter("a name without spaces", param_hint="--name")
    key = new_api_key()
    typer.echo(key)
    typer.echo(key_file_line(key, name))


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
        typer.secho(
            f"tokenwire: cannot reach the stream log at {redacted(settings.stream_log)}: {exc}",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(1) from exc


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
    system: Annotated[str | None, typer.Option(help="A system message to start with.")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="API key, for a server with authentication on.",
            envvar="TOKENWIRE_API_KEY",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Chat in the terminal: replies stream token by token (reasoning dimmed); Ctrl-C stops a
    reply (not the chat); Ctrl-D or /exit quits."""
    from tokenwire_client.chat import run_chat  # the client is only needed here

    raise typer.Exit(
        run_chat(
            url,
            transport=transport.value,
            model=model,
            max_tokens=max_tokens,
            system=system,
            api_key=api_key,
        )
    )


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Run the transport benchmark (SSE vs WebSocket vs common baselines) of a source checkout.

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
