"""The ``tokenwire`` command: ``tokenwire serve`` runs the server under uvicorn.

Every flag mirrors a ``TOKENWIRE_*`` setting; a flag given on the command line wins over the
environment. Flags are passed to worker processes through the environment, so
``--workers N`` runs N identical workers.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError

from tokenwire.providers import PROVIDERS
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
        typer.Option(help=f"One of: {', '.join(PROVIDERS)} [env TOKENWIRE_PROVIDER]."),
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
    try:
        settings = Settings()
        if settings.provider not in PROVIDERS:
            raise typer.BadParameter(
                f"unknown provider {settings.provider!r}; choose one of: {', '.join(PROVIDERS)}",
                param_hint="--provider",
            )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    uvicorn.run(
        "tokenwire.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        ws_max_size=settings.ws_max_message_size,
    )


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Run the transport benchmark (SSE vs WebSocket vs common baselines) of a source checkout.

    The harness is benchmark code, not part of the installed package: it lives in the
    repository's benchmarks/transport, found in the current directory or a parent. Every option
    is the harness's own (``tokenwire bench --help``; ``--quick`` for the 2-minute profile). Exit
    status 2 when no checkout is found, else the harness's.
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
