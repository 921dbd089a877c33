"""``tokenwire chat``: a terminal chat with a tokenwire server, built on ``tokenwire_client``.

Replies are printed token by token as they arrive (rich): the model's reasoning, if it sends
any, dimmed and apart from the answer; tool calls as ``⚙ name(arguments)`` lines once complete.
The conversation is kept and sent with every turn, so the model sees the history. With
authentication on, pass an API key (``--api-key`` or ``TOKENWIRE_API_KEY``): it is sent as
``Authorization: Bearer``. Keys:

- Ctrl-C while a reply streams: cancels it on the server (the stream ends with finish_reason
  ``cancelled``); the partial reply stays in the history and the chat goes on. A second Ctrl-C
  stops waiting for the server's answer.
- Ctrl-C at the prompt discards the line (as in the Python REPL); Ctrl-D or ``/exit`` quits;
  ``/reset`` forgets the conversation.

A lost connection is resumed by the client without a visible trace (``Reconnect`` policy);
one that cannot be resumed is reported and the chat goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

from rich.console import Console

from tokenwire.protocol.events import ReasoningDelta, TextDelta, ToolCallEnd
from tokenwire_client import AsyncClient, ClientError, EventStream

PROMPT = "[bold cyan]you ›[/] "
MODEL = "[bold magenta]model ›[/] "


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
        system: str | None = None,
    ) -> None:
        self.console = console
        self.client = client
        self.model = model
        self.params: dict[str, Any] = {} if max_tokens is None else {"max_tokens": max_tokens}
        self.history: list[dict[str, str]] = []
        if system:
            self.history.append({"role": "system", "content": system})

    def reset(self) -> None:
        self.history = [turn for turn in self.history if turn["role"] == "system"]

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
    system: str | None = None,
    api_key: str | None = None,
    console: Console | None = None,
) -> int:
    """Run the chat loop on this terminal until Ctrl-D or ``/exit``; returns the exit status.
    ``api_key`` is sent as ``Authorization: Bearer`` (a server with authentication on
    refuses streams without it: the error is printed and the chat goes on)."""
    console = console or Console(highlight=False)
    client = AsyncClient(
        url, transport="websocket" if transport == "websocket" else "sse", api_key=api_key
    )
    chat = TerminalChat(console, client, model=model, max_tokens=max_tokens, system=system)
    console.print(
        f"[bold]tokenwire chat[/] · {url} · {transport}\n"
        "[dim]Ctrl-C stops a reply · Ctrl-D or /exit quits · /reset forgets the conversation[/]"
    )
    with asyncio.Runner() as runner:
        try:
            while True:
                try:
                    line = console.input(PROMPT).strip()
                except KeyboardInterrupt:
                    console.print()
                    continue
                except EOFError:
                    console.print()
                    break
                if not line:
                    continue
                if line in ("/exit", "/quit"):
                    break
                if line == "/reset":
                    chat.reset()
                    console.print("[dim]  conversation cleared[/]")
                    continue
                runner.run(chat.reply(line))
        finally:
            runner.run(client.aclose())
    return 0
