"""``tokenwire chat`` as a person uses it: a real process on a pseudo-terminal (pexpect)
against a real uvicorn with the scripted provider. One exchange, then Ctrl-C during a long
reply stops the reply (cancelled on the server) but not the program, and the conversation,
partial reply included, goes on. Reasoning is printed dimmed, tool calls once complete, and
``--api-key`` / ``TOKENWIRE_API_KEY`` log in to a server with authentication on."""

from __future__ import annotations

import os
import sys

import pexpect

from tests.helpers import scripted_app, serve
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.scripted import (
    Script,
    scripted_reasoning_token,
    scripted_text,
    scripted_token,
    scripted_tool_calls,
)

PROMPT = "you ›"
KEY = "tw_chat-test-key-0123456789"


def test_chat_exchange_then_ctrl_c_stops_the_reply_not_the_program(transport):
    seen: list[GenerateParams] = []

    def script_for(params: GenerateParams) -> Script:
        seen.append(params)
        if "long" in params.messages[-1].content:
            return Script(tokens=5000, interval=0.01)
        return Script(tokens=12, interval=0.005)

    app, provider = scripted_app()
    provider.script_for = script_for
    with serve(app) as server:
        child = pexpect.spawn(
            sys.executable,
            ["-m", "tokenwire.cli", "chat", "--url", server.base_url, "--transport", transport],
            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "200"},
            encoding="utf-8",
            dimensions=(40, 200),
            timeout=30,
        )
        try:
            child.expect_exact(PROMPT)
            child.sendline("hello")
            child.expect_exact(scripted_text(12))
            child.expect_exact("12 tokens")
            child.expect_exact(PROMPT)

            child.sendline("tell me a long story")
            child.expect_exact(scripted_text(8))  # tokens are arriving
            child.sendintr()  # Ctrl-C, through the terminal's line discipline
            child.expect_exact("stopped")
            child.expect_exact(PROMPT)
            assert child.isalive()

            child.sendline("and now?")
            child.expect_exact(scripted_text(12))
            child.expect_exact(PROMPT)
            child.sendeof()  # Ctrl-D quits
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        long_reply = provider.records[1]
        assert child.exitstatus == 0, child.before
    assert long_reply.closed_at is not None and long_reply.produced < 5000
    # history: the partial reply of the stopped turn is part of the conversation
    third = [(m.role, m.content) for m in seen[2].messages]
    assert [role for role, _ in third] == ["user", "assistant", "user", "assistant", "user"]
    assert third[1][1] == scripted_text(12)
    partial = third[3][1]
    assert len(partial.split()) >= 8 and scripted_text(5000).startswith(partial)


def spawn_chat(server_url: str, transport: str, *args: str, **env: str) -> pexpect.spawn:
    base = {k: v for k, v in os.environ.items() if k != "TOKENWIRE_API_KEY"}
    return pexpect.spawn(
        sys.executable,
        ["-m", "tokenwire.cli", "chat", "--url", server_url, "--transport", transport, *args],
        env={**base, "TERM": "xterm-256color", "COLUMNS": "200", **env},
        encoding="utf-8",
        dimensions=(40, 200),
        timeout=30,
    )


def test_reasoning_is_dimmed_and_tool_calls_are_shown(transport):
    app, _ = scripted_app(Script(tokens=6, reasoning_tokens=4, tool_calls=1, interval=0.002))
    with serve(app) as server:
        child = spawn_chat(server.base_url, transport)
        try:
            child.expect_exact(PROMPT)
            child.sendline("what is the weather?")
            child.expect_exact("thinking: ")
            # rich's dim style (SGR 2) on the reasoning (deltas may arrive merged), then the
            # answer on a line of its own
            child.expect_exact(f"\x1b[2m{scripted_reasoning_token(0)}")
            child.expect_exact(scripted_token(0))
            between = child.before
            ((_, name, _),) = scripted_tool_calls(1)
            child.expect_exact(f"⚙ {name}(")
            child.expect_exact("tool_calls")  # the finish reason, in the summary line
            child.expect_exact(PROMPT)
            child.sendeof()
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
    assert "\n" in between and "\x1b[2m" not in between.rsplit("\n", 1)[1]


def test_api_key_from_the_option_or_the_environment(transport):
    app, _ = scripted_app(Script(tokens=5), api_keys=KEY)
    with serve(app) as server:
        runs = {
            "none": spawn_chat(server.base_url, transport),
            "option": spawn_chat(server.base_url, transport, "--api-key", KEY),
            "env": spawn_chat(server.base_url, transport, TOKENWIRE_API_KEY=KEY),
        }
        seen = {}
        try:
            for name, child in runs.items():
                child.expect_exact(PROMPT)
                child.sendline("hello")
                index = child.expect_exact([scripted_text(5), "unauthorized"])
                seen[name] = "reply" if index == 0 else "unauthorized"
                child.expect_exact(PROMPT)
                assert child.isalive()  # a refusal is reported; the chat goes on
                child.sendeof()
                child.expect(pexpect.EOF)
        finally:
            for child in runs.values():
                child.close(force=True)
    assert seen == {"none": "unauthorized", "option": "reply", "env": "reply"}
