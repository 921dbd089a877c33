"""The ``tokenwire`` command's help and its refusals, as a new user meets them: a real process,
one clear line per mistake, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.helpers import free_port
from tokenwire import __version__


def tokenwire(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOKENWIRE_")}
    return subprocess.run(
        [sys.executable, "-m", "tokenwire.cli", *args],
        env={**clean, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_is_plain_text():
    result = tokenwire("--help")
    assert result.returncode == 0
    assert "``" not in result.stdout and "serve" in result.stdout


def test_serve_help_shows_defaults_and_env_names():
    out = tokenwire("serve", "--help").stdout
    for env, default in (("TOKENWIRE_PORT", "8000"), ("TOKENWIRE_HOST", "127.0.0.1")):
        assert env in out and default in out
    assert "TOKENWIRE_PROVIDER" in out and "local" in out
    assert "TOKENWIRE_STREAM_LOG" in out
    assert "``" not in out


def test_help_paragraphs_are_reflowed_to_the_terminal_not_broken_where_the_docstring_was():
    out = tokenwire("serve", "--help", COLUMNS="200").stdout
    assert "It refuses to start, with one line saying why, on a bad setting" in out
    out = tokenwire("chat", "--help", COLUMNS="200").stdout
    assert "Ctrl-C stops a reply (not the chat); Ctrl-D or /exit quits." in out


def test_version():
    result = tokenwire("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"tokenwire {__version__}"


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The refusal's text: status 2, on stderr, at most two lines, no traceback."""
    assert result.returncode != 0
    text = (result.stderr + result.stdout).strip()
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, text
    return text


def test_a_missing_model_file_is_one_line(tmp_path):
    missing = tmp_path / "nope.gguf"
    text = refusal(tokenwire("serve", "--provider", "local", "--model", str(missing)))
    assert str(missing) in text and "not found" in text


def test_a_port_in_use_is_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        text = refusal(tokenwire("serve", "--provider", "scripted", "--port", str(port)))
    assert f"127.0.0.1:{port}" in text and "in use" in text


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TOKENWIRE_OVERFLOW": "sideways"}, "TOKENWIRE_OVERFLOW"),
        ({"TOKENWIRE_QUEUE_MAXSIZE": "lots"}, "TOKENWIRE_QUEUE_MAXSIZE"),
        ({"TOKENWIRE_PORT": "eighty"}, "TOKENWIRE_PORT"),
        ({"TOKENWIRE_FORWARDED_ALLOW_IPS": "nginx-box"}, "TOKENWIRE_FORWARDED_ALLOW_IPS"),
        ({"TOKENWIRE_ALLOWED_HOSTS": "chat.*.example"}, "TOKENWIRE_ALLOWED_HOSTS"),
    ],
)
def test_a_bad_env_value_names_the_env_var(env, named):
    text = refusal(tokenwire("serve", "--provider", "scripted", **env))
    assert named in text


def test_the_openai_provider_with_nothing_configured_refuses_to_start():
    text = refusal(tokenwire("serve", "--provider", "openai", "--port", str(free_port())))
    assert "TOKENWIRE_OPENAI_BASE_URL" in text


def test_workers_with_the_memory_log_refuse_unless_asked():
    port = str(free_port())
    text = refusal(tokenwire("serve", "--provider", "scripted", "--port", port, "--workers", "2"))
    assert "TOKENWIRE_STREAM_LOG=redis://" in text and "--unshared-log" in text
