"""``Client``: the blocking face of :class:`~tokenwire_client.AsyncClient`, for scripts.

    with Client("http://127.0.0.1:8000") as client:
        for event in client.stream([{"role": "user", "content": "Hi"}]):
            if event.type == "text.delta":
                print(event.delta, end="", flush=True)

It owns one event loop (``asyncio.Runner``) on the calling thread and runs the async client
on it, so resume, backoff and the exceptions are exactly the async client's. Each stream is
driven by one task of that loop (the WebSocket session must be opened and closed in the same
task); between two ``next()`` calls the loop does not run and the server's backpressure holds
the stream. Not for use inside a running event loop (use ``AsyncClient`` there), nor from
several threads at once. Ctrl-C during ``next()`` raises ``KeyboardInterrupt`` as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

from tokenwire.protocol.events import ErrorEvent, Event, StreamEnd
from tokenwire_client.client import AsyncClient, EventStream, ToolCall

_END = object()


class Client:
    """Blocking client; takes :class:`~tokenwire_client.AsyncClient`'s arguments."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        self._runner = asyncio.Runner()
        self._client = AsyncClient(base_url, **kwargs)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP client and the event loop (idempotent)."""
        if self._runner.get_loop().is_closed():
            return
        self._runner.run(self._client.aclose())
        self._runner.close()

    def stream(
        self, messages: Sequence[dict[str, Any]], *, model: str | None = None, **params: Any
    ) -> SyncEventStream:
        """Start a stream; iterate it for its events (see :meth:`AsyncClient.stream`)."""
        return SyncEventStream(self._runner, self._client.stream(messages, model=model, **params))

    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models`` (see :meth:`AsyncClient.models`)."""
        return self._runner.run(self._client.models())

    def text(self, messages: Sequence[dict[str, Any]], **params: Any) -> str:
        """Stream and return the whole generated text. Raises :class:`StreamFailed` when the
        stream ends with an ``error`` event (see :meth:`AsyncClient.text`)."""
        with self.stream(messages, **params) as stream:
            for _ in stream:
                pass
        return stream.result()


class SyncEventStream:
    """Blocking iterator over one stream's events, with the async stream's state."""

    def __init__(self, runner: asyncio.Runner, stream: EventStream) -> None:
        self._runner = runner
        self._stream = stream
        self._queue: asyncio.Queue[Any] | None = None
        self._driver: asyncio.Task[None] | None = None

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=1)
            self._driver = self._runner.get_loop().create_task(self._drive(self._queue))
        item = self._runner.run(self._get(self._queue))
        if item is _END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        event: Event = item  # what _drive puts that is neither _END nor an exception
        return event

    def __enter__(self) -> SyncEventStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def _drive(self, queue: asyncio.Queue[Any]) -> None:
        try:
            async for event in self._stream:
                await queue.put(event)
            await queue.put(_END)
        except Exception as exc:
            await queue.put(exc)
        finally:
            await self._stream.aclose()

    @staticmethod
    async def _get(queue: asyncio.Queue[Any]) -> Any:
        return await queue.get()

    def cancel(self) -> None:
        """Ask the server to end the stream; iteration goes on up to ``stream.end``."""
        self._runner.run(self._stream.cancel())

    def close(self) -> None:
        """Close the connection (idempotent); a stream left before its end is cancelled."""
        driver = self._driver
        if driver is None:
            self._runner.run(self._stream.aclose())
        elif not driver.done():
            driver.cancel()
            self._runner.run(self._settle(driver))

    @staticmethod
    async def _settle(task: asyncio.Task[None]) -> None:
        try:
            await task
        except asyncio.CancelledError:
            pass

    @property
    def text(self) -> str:
        return self._stream.text

    @property
    def reasoning(self) -> str:
        return self._stream.reasoning

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self._stream.tool_calls

    def result(self) -> str:
        """See :meth:`tokenwire_client.EventStream.result`."""
        return self._stream.result()

    @property
    def stream_id(self) -> str | None:
        return self._stream.stream_id

    @property
    def last_seq(self) -> int:
        return self._stream.last_seq

    @property
    def reconnects(self) -> int:
        return self._stream.reconnects

    @property
    def end(self) -> StreamEnd | None:
        return self._stream.end

    @property
    def error(self) -> ErrorEvent | None:
        return self._stream.error
