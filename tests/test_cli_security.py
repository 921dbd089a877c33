"""The security side of the command: ``tokenwire new-key``, and ``tokenwire serve`` with keys
(one token signing secret for all workers, permessage-deflate off unless asked for)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest

from tests.helpers import free_port
from tests.security_helpers import ws_connect
from tests.test_cli import start, stop, wait_healthy
from tokenwire.edge.keys import KeyStore


def test_new_key_prints_a_key_and_its_key_file_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tokenwire.cli", "new-key", "--name", "ci-bot"],
        capture_output=True,
        text=True,
        check=True,
    )
    key, line = result.stdout.splitlines()
    assert key.startswith("tw_") and key not in line
    assert line.startswith("sha256:") and line.endswith(" ci-bot")
    path = tmp_path / "keys"
    path.write_text(line + "\n")
    principal = KeyStore([], path).lookup(key)
    assert principal is not None and principal.name == "ci-bot"


def test_new_key_refuses_a_name_with_spaces():
    result = subprocess.run(
        [sys.executable, "-m", "tokenwire.cli", "new-key", "--name", "two words"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "without spaces" in result.stdout + result.stderr


@pytest.mark.slow
def test_tokens_minted_by_one_worker_work_on_every_worker():
    port = free_port()
    key = "tw_cli-workers-key"
    process = start(
        "--provider",
        "scripted",
        "--port",
        str(port),
        "--workers",
        "2",
        "--unshared-log",  # streams stay on their worker; tokens must work on both
        env={"TOKENWIRE_API_KEYS": key},
    )
    try:
        wait_healthy(port, process)
        base = f"http://127.0.0.1:{port}"
        statuses = []
        for _ in range(12):  # new connections: the kernel spreads them over both workers
            token = httpx.post(
                f"{base}/v1/tokens", headers={"Authorization": f"Bearer {key}"}
            ).json()["token"]
            statuses.append(httpx.get(f"{base}/v1/models", params={"token": token}).status_code)
            statuses.append(httpx.get(f"{base}/v1/models").status_code)
    finally:
        output = stop(process)
    assert statuses == [200, 401] * 12
    assert key not in output


def test_serve_keeps_permessage_deflate_off_unless_asked():
    async def extensions(port: int) -> list[str]:
        async with ws_connect(f"http://127.0.0.1:{port}", compression="deflate") as ws:
            return [extension.name for extension in ws.protocol.extensions]

    for env, expected in (({}, []), ({"TOKENWIRE_WS_PER_MESSAGE_DEFLATE": "true"}, None)):
        port = free_port()
        process = start("--provider", "scripted", "--port", str(port), env=env)
        try:
            wait_healthy(port, process)
            negotiated = asyncio.run(extensions(port))
        finally:
            stop(process)
        assert negotiated == (expected if expected is not None else ["permessage-deflate"])


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TOKENWIRE_ALLOWED_ORIGINS": "https://*.example.com"}, "not an origin"),
        ({"TOKENWIRE_AUTH": "required"}, "auth=required"),
        ({"TOKENWIRE_API_KEYS_FILE": "/nonexistent/keys"}, "cannot read"),
    ],
)
def test_serve_refuses_security_settings_that_cannot_work(env, message):
    process = start("--provider", "scripted", "--port", str(free_port()), env=env)
    output, _ = process.communicate(timeout=60)
    assert process.returncode != 0
    assert message in output.decode()
