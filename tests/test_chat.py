"""``tokenwire chat`` as a person uses it: a real process on a pseudo-terminal (pexpect)
against a real uvicorn with the scripted provider. One exchange, then Ctrl-C during a long
reply stops the reply (cancelled on the server) but not the program, and the conversation,
partial reply included, goes on. Reasoning is printed dimmed, tool calls once complete, and
``--api-key`` / ``TOKENWIRE_API_KEY`` log in to a server with authentication on. The prompt
edits lines and recalls earlier ones (Up), kept in the user's state folder between chats;
slash commands never reach the model; ``--temperature`` does; with no server, the chat says
so at once and how to start one."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pexpect
from starlette.applications import Starlette

from tests.helpers import free_port, scripted_app, serve
from tokenwire.app import create_app
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.scripted import (
    MODEL_ID,
    Script,
    ScriptedProvider,
    scripted_reasoning_token,
    scripted_text,
    scripted_token,
    scripted_tool_calls,
)
from tokenwire.settings import Settings

PROMPT = "you ›"
KEY = "tw_chat-test-key-0123456789"
UP, LEFT = "\x1b[A", "\x1b[D"  # the keys' escape sequences on an xterm


def test_chat_exchange_then_ctrl_c_stops_the_reply_not_the_program(transport, tmp_path):
    seen: list[GenerateParams] = []

    def script_for(params: GenerateParams) -> Script:
        seen.append(params)
        if "long" in params.messages[-1].content:
            return Script(tokens=5000, interval=0.01)
        return Script(tokens=12, interval=0.005)

    app, provider = scripted_app()
    provider.script_for = script_for
    with serve(app) as server:
        child = spawn_chat(server.base_url, transport, state=tmp_path)
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


def spawn_chat(
    server_url: str, transport: str, *args: str, state: Path, cwd: Path | None = None, **env: str
) -> pexpect.spawn:
    """The chat on a pseudo-terminal; ``state`` is its XDG_STATE_HOME (the prompt history)."""
    base = {k: v for k, v in os.environ.items() if k != "TOKENWIRE_API_KEY"}
    return pexpect.spawn(
        sys.executable,
        ["-m", "tokenwire.cli", "chat", "--url", server_url, "--transport", transport, *args],
        env={
            **base,
            "TERM": "xterm-256color",
            "COLUMNS": "200",
            "XDG_STATE_HOME": str(state),
            **env,
        },
        cwd=cwd,
        encoding="utf-8",
        dimensions=(40, 200),
        timeout=30,
    )


def test_reasoning_is_dimmed_and_tool_calls_are_shown(transport, tmp_path):
    app, _ = scripted_app(Script(tokens=6, reasoning_tokens=4, tool_calls=1, interval=0.002))
    with serve(app) as server:
        child = spawn_chat(server.base_url, transport, state=tmp_path)
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


def test_api_key_from_the_option_or_the_environment(transport, tmp_path):
    app, _ = scripted_app(Script(tokens=5), api_keys=KEY)
    with serve(app) as server:
        runs = {
            "none": spawn_chat(server.base_url, transport, state=tmp_path),
            "option": spawn_chat(server.base_url, transport, "--api-key", KEY, state=tmp_path),
            "env": spawn_chat(server.base_url, transport, state=tmp_path, TOKENWIRE_API_KEY=KEY),
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


def recording_app() -> tuple[Starlette, list[GenerateParams]]:
    """A scripted server that serves MODEL_ID and "other", records every request it gets and
    answers each with 5 tokens."""
    seen: list[GenerateParams] = []

    class TwoModels(ScriptedProvider):
        @property
        def models(self) -> list[str]:
            return [MODEL_ID, "other"]

    def script_for(params: GenerateParams) -> Script:
        seen.append(params)
        return Script(tokens=5)

    provider = TwoModels(script_for=script_for)
    return create_app(Settings(provider="scripted"), provider=provider), seen


def exchange(child: pexpect.spawn, line: str) -> None:
    """Send ``line`` and wait for the reply's summary and the next prompt."""
    child.send(line + "\r")
    child.expect_exact("5 tokens")
    child.expect_exact(PROMPT)


def quit_chat(child: pexpect.spawn) -> None:
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before


def test_slash_commands_are_handled_here_never_sent_to_the_model(tmp_path):
    app, seen = recording_app()
    with serve(app) as server:
        child = spawn_chat(server.base_url, "sse", state=tmp_path)
        try:
            child.expect_exact(PROMPT)
            child.sendline("/help")
            for command in ("/help", "/clear", "/model", "/exit"):
                child.expect_exact(command)
            child.expect_exact(PROMPT)
            child.sendline("/frobnicate now")
            child.expect_exact("unknown command /frobnicate")
            child.expect_exact(PROMPT)
            child.sendline("/model")
            child.expect_exact(f"model: {MODEL_ID} (the server's default)")
            child.expect_exact(f"served: {MODEL_ID}, other")
            child.expect_exact(PROMPT)

            exchange(child, "first")
            child.send("/cl\t\r")  # Tab completes a command
            child.expect_exact("conversation cleared")
            child.expect_exact(PROMPT)
            exchange(child, "second")
            child.sendline("/model other")
            child.expect_exact("model: other")
            child.expect_exact(PROMPT)
            exchange(child, "third")
            exchange(child, "//etc/hosts is a file")  # a doubled slash sends one
            child.sendline("/exit")
            child.expect(pexpect.EOF)
            child.close()
            assert child.exitstatus == 0, child.before
        finally:
            child.close(force=True)
    asked = [[(m.role, m.content) for m in params.messages] for params in seen]
    assert asked[0] == [("user", "first")]
    assert asked[1] == [("user", "second")]  # /clear forgot "first" and its reply
    assert [turn for _, turn in asked[2]] == ["second", scripted_text(5), "third"]
    assert asked[3][-1] == ("user", "/etc/hosts is a file")
    assert len(seen) == 4  # /help, /frobnicate, /model, /clear and /exit: none reached it
    assert [params.model for params in seen] == [None, None, "other", "other"]


def test_temperature_and_max_tokens_reach_the_provider(tmp_path):
    app, seen = recording_app()
    with serve(app) as server:
        child = spawn_chat(
            server.base_url,
            "websocket",
            "--temperature",
            "0.3",
            "--max-tokens",
            "40",
            state=tmp_path,
        )
        try:
            child.expect_exact(PROMPT)
            exchange(child, "hi")
            quit_chat(child)
        finally:
            child.close(force=True)
    assert [(p.temperature, p.max_tokens) for p in seen] == [(0.3, 40)]


def test_the_prompt_edits_lines_and_recalls_history_across_chats(tmp_path):
    state, cwd = tmp_path / "state", tmp_path / "cwd"
    cwd.mkdir()
    app, seen = recording_app()
    with serve(app) as server:
        child = spawn_chat(server.base_url, "sse", state=state, cwd=cwd)
        try:
            child.expect_exact(PROMPT)
            child.send("never sent")
            # Ctrl-C once readline has echoed the line, as a person would press it: an interrupt
            # that arrives while readline handles a key (not in its select) is only seen at the
            # next key, and the terminal flushes the keys still pending on an interrupt
            child.expect_exact("never sent")
            child.sendintr()  # Ctrl-C at the prompt discards the line
            child.expect_exact(PROMPT)
            exchange(child, "wrld" + LEFT * 3 + "o")  # the cursor moves; "o" goes after "w"
            exchange(child, UP)  # the line just sent, again
            quit_chat(child)
            first = child.before
        finally:
            child.close(force=True)
        history = state / "tokenwire" / "chat_history"
        lines = history.read_text().splitlines()
        assert lines[-1] == "world" and lines.count("world") == 1 and "never sent" not in lines
        assert stat.S_IMODE(history.stat().st_mode) == 0o600
        assert list(cwd.iterdir()) == []  # nothing written where the chat was started

        child = spawn_chat(server.base_url, "sse", state=state, cwd=cwd)  # a new chat
        try:
            child.expect_exact(PROMPT)
            exchange(child, UP)  # recalls the last chat's line
            quit_chat(child)
        finally:
            child.close(force=True)
    assert [params.messages[-1].content for params in seen] == ["world"] * 3
    assert len(seen[2].messages) == 1  # a new chat, a new conversation
    assert "^[[A" not in first


def test_no_server_is_reported_at_once_with_how_to_start_one():
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tokenwire.cli", "chat", "--url", url, "--no-history"],
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "100", "NO_COLOR": "1"},
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert url in line and "tokenwire serve" in line and "no server answers" in line
    assert "Traceback" not in result.stdout + result.stderr
    assert elapsed < 5  # generous: it gives up after one try of at most 2 s


def test_a_server_that_is_not_tokenwire_is_named_as_such():
    with serve(Starlette()) as server:  # answers 404 to everything
        result = subprocess.run(
            [sys.executable, "-m", "tokenwire.cli", "chat", "--url", server.base_url],
            input="hello\n",
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "100", "NO_COLOR": "1"},
        )
    assert result.returncode == 1
    assert "not a tokenwire server" in result.stderr and "HTTP 404" in result.stderr
