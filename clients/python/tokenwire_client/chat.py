"""``tokenwire chat``: a terminal chat with a tokenwire server, built on ``tokenwire_client``.

Replies are printed token by token as they arrive (rich): the model's reasoning, if it sends
any, dimmed and apart from the answer; tool calls as ``⚙ name(arguments)`` lines once complete.
The conversation is kept and sent with every turn, so the model sees the history. With
authentication on, pass an API key (``--api-key`` or ``TOKENWIRE_API_KEY``): it is sent as
``Authorization: Bearer``.

The prompt is edited with the terminal's readline (GNU readline or libedit, Python's
:mod:`readline`; plain ``input()`` where there is none, e.g. on Windows): arrows, Ctrl-A/E,
Ctrl-R, and Up/Down through the lines typed before, in this chat and earlier ones. That history
is kept in ``$XDG_STATE_HOME/tokenwire/chat_history`` (``~/.local/state`` when unset; 1,000
lines, file mode 0600), not in the current directory; ``--no-history`` keeps it in memory only.
Tab completes slash commands.

Slash commands are handled here, never sent to the model (:data:`COMMANDS`): ``/help``,
``/clear`` (``/reset``), ``/model [name]``, ``/exit`` / ``/quit``; any other ``/word`` is
refused as unknown, and ``//text`` sends ``/text``. Keys:

- Ctrl-C while a reply streams: cancels it on the server (the stream ends with finish_reason
  ``cancelled``); the partial reply stays in the history and the chat goes on. A second Ctrl-C
  stops waiting for the server's answer.
- Ctrl-C at the prompt discards the line (as in the Python REPL); Ctrl-D quits.

Before the first prompt the chat asks ``GET /healthz`` (:data:`PROBE_TIMEOUT`): when no
tokenwire server answers, :func:`run_chat` prints one line naming the URL and how to start a
server, and returns 1. Afterwards a lost connection is resumed by the client without a visible
trace (``Reconnect`` policy); one that cannot be resumed is reported and the chat goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from rich.console import Console

from tokenwire.protocol.events import ReasoningDelta, TextDelta, ToolCallEnd
from tokenwire_client import AsyncClient, ClientError, EventStream

PROMPT = "[bold cyan]you ›[/] "
MODEL = "[bold magenta]model ›[/] "

COMMANDS = {
    "/help": "list these commands",
    "/clear": "forget the conversation (the system message stays); /reset too",
    "/model [name]": "show the model and the server's models, or switch to name",
    "/exit": "quit (also /quit, Ctrl-D)",
}
"""The slash commands and their help lines (``/reset`` and ``/quit`` are aliases)."""

HISTORY_LINES = 1000
PROBE_TIMEOUT = 2.0
"""Seconds the first ``GET /healthz`` may take (connect and answer) before the chat says that
no server answers."""

_SGR = re.compile(r"(\x1b\[[0-9;]*m)")


def history_path(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the prompt history is kept: ``$XDG_STATE_HOME/tokenwire/chat_history``, with
    ``~/.local/state`` when XDG_STATE_HOME is unset or empty (XDG Base Directory
    Specification: state that should persist between restarts, such as history)."""
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tokenwire" / "chat_history"


def _readline() -> ModuleType | None:
    """Python's readline module when both ends are a terminal (``input()`` uses it only
    then), else None."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return None
    try:
        import readline
    except ImportError:  # Windows, or a Python built without it
        return None
    return readline


class LineReader:
    """The prompt: ``read()`` returns one line, raising ``EOFError`` on Ctrl-D and
    ``KeyboardInterrupt`` on Ctrl-C. With readline, the line is edited in place and Up/Down
    walk the history, loaded from ``history`` (if given) and written back by ``close()``
    (the last :data:`HISTORY_LINES` lines). A history file that cannot be read or written is
    skipped with a note, never an error."""

    def __init__(self, console: Console, history: Path | None) -> None:
        self.console = console
        self.readline = _readline()
        self.history = history if self.readline is not None else None
        with console.capture() as capture:
            console.print(PROMPT, end="")
        prompt = capture.get()
        if self.readline is not None:
            # readline must not count escape sequences as columns: RL_PROMPT_START_IGNORE
            # (\x01) and RL_PROMPT_END_IGNORE (\x02) around each (GNU Readline manual, 2.3)
            prompt = _SGR.sub("\x01\\1\x02", prompt)
            self._set_up(self.readline)
        self.prompt = prompt

    def _set_up(self, readline: ModuleType) -> None:
        readline.set_completer(self._complete)
        readline.set_completer_delims(" \t\n")
        if "libedit" in (readline.__doc__ or ""):  # macOS: libedit's syntax
            readline.parse_and_bind("bind ^I rl_complete")
        else:
            readline.parse_and_bind("tab: complete")
        readline.set_history_length(HISTORY_LINES)
        if self.history is None:
            return
        try:
            self.history.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.history.exists():
                readline.read_history_file(str(self.history))
        except OSError as exc:
            self._skip_history(exc)

    def _skip_history(self, exc: OSError) -> None:
        self.console.print(
            f"[dim]  history not kept ({self.history}: {exc.strerror or exc})[/]", emoji=False
        )
        self.history = None

    def _complete(self, text: str, state: int) -> str | None:
        assert self.readline is not None
        if not self.readline.get_line_buffer().startswith("/"):
            return None
        names = [name.split()[0] for name in COMMANDS] + ["/quit"]
        matches = [name for name in names if name.startswith(text)]
        return matches[state] if state < len(matches) else None

    def read(self) -> str:
        return input(self.prompt)

    def close(self) -> None:
        if self.readline is None or self.history is None:
            return
        try:
            self.readline.write_history_file(str(self.history))
            self.history.chmod(0o600)  # what was typed may be private
        except OSError as exc:
            self._skip_history(exc)


async def probe(client: AsyncClient) -> str | None:
    """Ask the server's ``GET /healthz`` once, within :data:`PROBE_TIMEOUT` seconds. Returns
    None when a tokenwire server answers, else one line saying what is wrong (no retry: a
    server that is not running does not start by being waited for)."""
    url = client.base_url
    try:
        response = await client.http.get(f"{url}/healthz", timeout=PROBE_TIMEOUT)
    except httpx.TimeoutException:
        reason = f"no answer within {PROBE_TIMEOUT:g} s"
    except httpx.ConnectError:
        reason = "cannot connect"
    except httpx.TransportError as exc:
        reason = str(exc) or type(exc).__name__
    else:
        try:
            healthy = response.status_code == 200 and "status" in response.json()
        except ValueError:
            healthy = False
        if healthy:
            return None
        return (
            f"{url} is not a tokenwire server (GET /healthz answered HTTP "
            f"{response.status_code}); point --url / TOKENWIRE_URL at one"
        )
    return (
        f"no server answers at {url} ({reason}); start one with `tokenwire serve` "
        "(`make serve` in a source checkout) or point --url / TOKENWIRE_URL at yours"
    )


class TerminalChat:
    """One conversation: ``history`` of ``{"role", "content"}`` turns and the streaming of
    each reply to ``console``."""

    def __init__(
        self,
        console: Console,
        client: AsyncClient,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        system: str | None = None,
    ) -> None:
        self.console = console
        self.client = client
        self.model = model
        self.params: dict[str, Any] = {}
        if max_tokens is not None:
            self.params["max_tokens"] = max_tokens
        if temperature is not None:
            self.params["temperature"] = temperature
        self.history: list[dict[str, str]] = []
        if system:
            self.history.append({"role": "system", "content": system})

    def reset(self) -> None:
        self.history = [turn for turn in self.history if turn["role"] == "system"]

    async def command(self, line: str) -> bool:
        """Run the slash command ``line`` (see :data:`COMMANDS`); False when it quits."""
        name, _, argument = line.partition(" ")
        argument = argument.strip()
        if name in ("/exit", "/quit"):
            return False
        if name == "/help":
            width = max(len(usage) for usage in COMMANDS)
            for usage, text in COMMANDS.items():
                self._note(f"{usage:<{width}}  {text}")
            self._note(f"{'//text':<{width}}  send /text to the model")
        elif name in ("/clear", "/reset"):
            self.reset()
            self._note("conversation cleared")
        elif name == "/model":
            await self._model(argument)
        else:
            self._note(f"unknown command {name}; /help lists the commands", style="yellow")
        return True

    async def _model(self, name: str) -> None:
        """``/model``: the model in use and the server's list; ``/model NAME``: switch."""
        try:
            served = [str(model["id"]) for model in await self.client.models()]
        except ClientError as exc:
            served = []
            self._note(f"GET /v1/models: {exc}", style="red")
        if name:
            self.model = name
            self._note(f"model: {name}")
            if served and name not in served:
                self._note(f"{name} is not in the server's list; it will say if it cannot serve it")
            return
        if self.model is not None:
            self._note(f"model: {self.model}")
        elif served:
            self._note(f"model: {served[0]} (the server's default)")
        if served:
            self._note(f"served: {', '.join(served)}  (/model NAME switches)")

    def _note(self, text: str, style: str = "dim") -> None:
        self.console.print(f"  {text}", style=style, markup=False, emoji=False, highlight=False)

    async def reply(self, text: str) -> EventStream:
        """Send ``text`` and print the reply as it streams. SIGINT cancels the reply (the
        stream then ends with finish_reason ``cancelled``); it does not raise."""
        self.history.append({"role": "user", "content": text})
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        stream = self.client.stream(list(self.history), model=self.model, **self.params)
        interrupts = 0

        def on_sigint() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts == 1:
                loop.create_task(stream.cancel())
            else:
                task.cancel()

        started = time.monotonic()
        first: float | None = None
        failed = False
        self.console.print(MODEL, end="")
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            async with stream:
                # what the line being printed holds: the reply's start, reasoning or answer text
                part = "start"
                async for event in stream:
                    if isinstance(event, ReasoningDelta):
                        first = first or time.monotonic()
                        if part != "reasoning":
                            if part != "start":
                                self.console.print()
                            self.console.print("thinking: ", style="dim italic", end="")
                            part = "reasoning"
                        self._write(event.delta, "dim")
                    elif isinstance(event, TextDelta):
                        first = first or time.monotonic()
                        if part == "reasoning":
                            self.console.print()
                            self.console.print(" " * 8, end="")  # under the reply's label
                        part = "text"
                        self._write(event.delta, None)
                    elif isinstance(event, ToolCallEnd):
                        if part != "start":
                            self.console.print()
                            self.console.print(" " * 8, end="")
                        part = "tool"
                        self._write(f"⚙ {event.name}({event.arguments})", "yellow")
        except asyncio.CancelledError:
            if interrupts < 2:
                raise
            with contextlib.suppress(asyncio.CancelledError):
                await stream.aclose()  # cancels the detached stream on the server
        except ClientError as exc:
            failed = True
            self.console.print()
            self.console.print(f"[red]error:[/] {exc}", markup=True, emoji=False)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        self.console.print()
        summary = self._summary(stream, started, first, failed)
        self.console.print(summary, style="dim", markup=False, emoji=False)
        if stream.text:
            self.history.append({"role": "assistant", "content": stream.text})
        return stream

    def _write(self, text: str, style: str | None) -> None:
        self.console.print(text, end="", style=style, markup=False, emoji=False, soft_wrap=True)

    @staticmethod
    def _summary(stream: EventStream, started: float, first: float | None, failed: bool) -> str:
        end = stream.end
        parts = []
        if failed:
            parts.append("✗ failed")
        elif end is None or end.finish_reason == "cancelled":
            parts.append("⏹ stopped")
        elif end.finish_reason != "stop":
            parts.append(str(end.finish_reason))
        if stream.error is not None:
            parts.append(f"{stream.error.code}: {stream.error.message}")
        tokens = end.usage.completion_tokens if end and end.usage else None
        if tokens is not None:
            parts.append(f"{tokens} tokens")
        if first is not None:
            parts.append(f"TTFT {1000 * (first - started):.0f} ms")
            elapsed = time.monotonic() - first
            if tokens and tokens > 1 and elapsed > 0:
                parts.append(f"{(tokens - 1) / elapsed:.1f} tok/s")
        if stream.reconnects:
            parts.append(f"resumed ×{stream.reconnects}")
        return "  " + " · ".join(parts or ["no reply"])


def run_chat(
    url: str,
    *,
    transport: str = "sse",
    model: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    system: str | None = None,
    api_key: str | None = None,
    history: Path | None = None,
    console: Console | None = None,
) -> int:
    """Run the chat loop on this terminal until Ctrl-D or ``/exit``; returns the exit status:
    0, or 1 when no tokenwire server answers at ``url`` (one line on stderr, see
    :func:`probe`). ``api_key`` is sent as ``Authorization: Bearer`` (a server with
    authentication on refuses streams without it: the error is printed and the chat goes on).
    ``history`` is the prompt history file (None: in memory only)."""
    console = console or Console(highlight=False)
    client = AsyncClient(
        url, transport="websocket" if transport == "websocket" else "sse", api_key=api_key
    )
    chat = TerminalChat(
        console,
        client,
        model=model,
        max_tokens=max_tokens,
        temperature=temperature,
        system=system,
    )
    with asyncio.Runner() as runner:
        try:
            problem = runner.run(probe(client))
            if problem is not None:
                Console(stderr=True, highlight=False).print(
                    f"tokenwire chat: {problem}", markup=False, emoji=False, soft_wrap=True
                )
                return 1
            console.print(
                f"[bold]tokenwire chat[/] · {url} · {transport}\n"
                "[dim]Ctrl-C stops a reply · Ctrl-D or /exit quits · /help lists commands[/]"
            )
            reader = LineReader(console, history)
            try:
                while True:
                    try:
                        line = reader.read().strip()
                    except KeyboardInterrupt:
                        console.print()
                        continue
                    except EOFError:
                        console.print()
                        break
                    if not line:
                        continue
                    if line.startswith("/") and not line.startswith("//"):
                        if not runner.run(chat.command(line)):
                            break
                        continue
                    runner.run(chat.reply(line.removeprefix("/")))
            finally:
                reader.close()
        finally:
            runner.run(client.aclose())
    return 0
