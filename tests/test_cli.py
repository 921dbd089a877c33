"""``tokenwire serve`` as a user runs it: a real process, flags and ``TOKENWIRE_*`` env."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.helpers import free_port


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tokenwire.cli", "serve", *args]
    return subprocess.Popen(
        command,
        env={**os.environ, "COLUMNS": "300", "NO_COLOR": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stdout.read().decode())
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("server did not become healthy")


def stop(process: subprocess.Popen[bytes]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return output.decode()


def test_serve_flags_win_over_env():
    port = free_port()
    process = start(
        "--provider",
        "scripted",
        "--port",
        str(port),
        env={
            "TOKENWIRE_PROVIDER": "local",
            "TOKENWIRE_PORT": "1",
            "TOKENWIRE_SCRIPTED_TOKENS": "5",
        },
    )
    try:
        health = wait_healthy(port, process)
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/streams",
            json={"messages": [{"role": "user", "content": "hi"}]},
        )
    finally:
        output = stop(process)
    assert health["provider"] == "scripted" and health["stream_log"] == "memory"
    assert '"completion_tokens":5' in response.text  # TOKENWIRE_SCRIPTED_TOKENS applied
    # uvicorn shuts down cleanly, then re-raises the signal it caught (exit status -SIGTERM)
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Finished server process" in output
    assert "Traceback" not in output


def test_unknown_provider_is_a_clear_cli_error():
    process = start("--provider", "nope", "--port", str(free_port()))
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "unknown provider 'nope'" in output.decode()
    assert "local, openai, scripted" in output.decode()


@pytest.mark.slow
def test_serve_with_two_workers():
    port = free_port()
    process = start(
        "--provider", "scripted", "--port", str(port), "--workers", "2", "--unshared-log"
    )
    try:
        wait_healthy(port, process)
        texts = {
            httpx.post(
                f"http://127.0.0.1:{port}/v1/streams",
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
            ).text.count('"finish_reason":"length"')
            for _ in range(6)
        }
    finally:
        stop(process)
    assert texts == {1}  # every request streamed to its max_tokens
