"""``tokenwire chat`` as a person uses it: a real process on a pseudo-terminal (pexpect)
against a real uvicorn with the scripted provider. One exchange, then Ctrl-C during a long
reply stops the reply (cancelled on the server) but not the program, and the conversation,
partial reply included, goes on."""

from __future__ import annotations

import os
import sys

import pexpect

from tests.helpers import scripted_app, serve
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.scripted import Script, scripted_text

PROMPT = "you ›"


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
