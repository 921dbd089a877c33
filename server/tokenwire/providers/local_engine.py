"""The local model's batch engine: one llama.cpp context, N sequence slots, one decode loop.

Continuous batching over llama.cpp's batch API (``llama_batch_init`` / ``llama_decode``): each
running request owns one sequence id (a *slot*) of a single context. Every step of the loop,
run by one worker thread, builds one batch holding the next token of every decoding sequence
plus at most ``prefill_chunk`` prompt tokens of the sequences still being prefilled (oldest
first), decodes it, and samples one token per sequence that produced logits. A request
submitted while others run joins at the next step; a long prompt is prefilled in chunks
interleaved with the others' decoding, so it holds up their next token for at most one chunk's
decode time per step (the benchmark measures it).

Each sequence samples through its own llama.cpp sampler chain (greedy at temperature 0, else
top-k 40, top-p, min-p 0.05, temperature, seeded dist: the chain llama-cpp-python's
``create_chat_completion`` builds). Its text is assembled by :class:`TextAssembler` (UTF-8
split across tokens, stop strings held back until they can no longer match). When a sequence
ends (end-of-generation token, stop string, ``max_tokens``, the slot's context full, cancel,
failure) its sampler is freed and its KV cells are removed (``llama_memory_seq_rm``) before
the slot takes another request, except, with ``prompt_cache`` on (the default), the cells of
its prompt: the slot keeps them as a prompt cache, as llama.cpp's server does
(``cache_prompt``), and a new request goes to the free slot whose cached prompt shares the
longest prefix with its own, prefilling only the rest (a chat's next turn, or the chat
template's system prompt). Those cells are removed as soon as the slot takes a prompt that
does not share them; a failed decode removes all of the slot's cells.

Threading: the engine thread is the only one that touches the context, the batch and the
samplers. Other threads talk to it through :meth:`BatchEngine.submit`, :attr:`Request.cancelled`
and :meth:`BatchEngine.wake`, and hear from it through the ``on_output`` callback it was built
with, called from the engine thread once per step with every item of that step: a
:class:`~tokenwire.providers.base.Delta`, a :class:`~tokenwire.providers.base.Finish`, a
:class:`~tokenwire.errors.ProviderError`, and finally :data:`RELEASED` (the slot is free). A
cancelled request gets no ``Finish``; it is released at the next step. Tokenizing
(:meth:`BatchEngine.tokenize`) only reads the vocabulary and is safe from any thread.

Backpressure: a request whose consumer holds ``window`` undelivered deltas
(``Request.sent - Request.consumed``) sits out the following steps without holding up the
others, and resumes once its consumer has caught up.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tokenwire.errors import ProviderError
from tokenwire.protocol.events import FinishReason, Usage
from tokenwire.providers.base import Delta, Finish

log = logging.getLogger("tokenwire.providers.local")

RELEASED: Final = object()
"""The last item of every request: its slot (and KV cells) are free again."""

Output = Delta | Finish | ProviderError | object
"""One item handed to ``on_output``: a delta, the finish, a failure, or :data:`RELEASED`."""

_DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp picks a random seed


@dataclass(frozen=True, slots=True)
class Sampling:
    """Per-request sampling. ``temperature`` 0 is greedy; ``seed`` ``None`` is random."""

    temperature: float = 0.2
    top_p: float = 0.95
    seed: int | None = None
    top_k: int = 40
    min_p: float = 0.05


class TextAssembler:
    """Token bytes in, text out: UTF-8 characters split across tokens are joined, and stop
    strings are applied. Pure: no llama.cpp.

    Text that could be the beginning of a stop string is held back until it cannot be; when a
    stop string appears, the text before it is returned, the rest dropped, and
    :attr:`stopped` becomes true (feed nothing more).
    """

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in stop if s]
        self._held = ""
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """The text that ``data`` (one token's bytes) makes safe to send; may be ``""``."""
        text = self._decoder.decode(data)
        if not self._stop:
            return text
        held = self._held + text
        cut = -1
        for stop in self._stop:
            index = held.find(stop)
            if index >= 0 and (cut < 0 or index < cut):
                cut = index
        if cut >= 0:
            self._held = ""
            self.stopped = True
            return held[:cut]
        keep = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(held)), keep, -1):
                if held.endswith(stop[:size]):
                    keep = size
                    break
        self._held = held[len(held) - keep :] if keep else ""
        return held[: len(held) - keep]

    def flush(self) -> str:
        """The text still held back (an unfinished stop prefix, a partial UTF-8 character as
        U+FFFD), at the end of a generation that did not stop on a stop string."""
        rest = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return "" if self.stopped else rest


class Request:
    """One generation handed to the engine.

    ``tokens``: the prompt's tokens (not empty); ``max_tokens`` >= 1, lowered by the engine to
    what the slot's context holds. ``cancelled`` may be set from any thread (then call
    :meth:`BatchEngine.wake`): the engine drops the sequence at its next step. ``consumed`` is
    written by the consumer only (deltas taken), ``sent`` by the engine only (deltas handed
    over), ``blocked`` by the engine only (set before it looks at the credit, so a consumer
    that reads it after taking a delta never misses a needed wake-up).
    """

    __slots__ = (
        "tokens",
        "sampling",
        "max_tokens",
        "stop",
        "cancelled",
        "sent",
        "consumed",
        "blocked",
        "context",
    )

    def __init__(
        self,
        tokens: list[int],
        *,
        max_tokens: int,
        sampling: Sampling = Sampling(),
        stop: Sequence[str] = (),
        context: Any = None,
    ) -> None:
        self.tokens = tokens
        self.sampling = sampling
        self.max_tokens = max_tokens
        self.stop = list(stop)
        self.cancelled = False
        self.sent = 0
        self.consumed = 0
        self.blocked = False
        self.context = context  # the submitter's own state, untouched by the engine


class _Slot:
    """A sequence id of the context and the request it runs (engine thread only)."""

    __slots__ = (
        "seq_id",
        "request",
        "sampler",
        "n_past",
        "n_prefilled",
        "next_token",
        "generated",
        "unsent",
        "max_tokens",
        "assembler",
        "batch_index",
        "cached",
    )

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.request: Request | None = None
        self.sampler: Any = None
        self.n_past = 0  # tokens in this sequence's KV cells
        self.n_prefilled = 0  # prompt tokens sent to decode
        self.next_token: int | None = None  # sampled, to be decoded next
        self.generated = 0
        self.unsent = 0  # tokens generated since the last delta
        self.max_tokens = 0
        self.assembler = TextAssembler()
        self.batch_index = -1  # where its logits are in the current batch
        self.cached: list[int] = []  # prompt tokens whose KV cells the slot kept


class BatchEngine:
    """One llama.cpp model and context serving ``parallel`` sequences at once.

    Build it with :meth:`load` (in a worker thread: it reads the GGUF), then :meth:`start`
    the decode thread; :meth:`close` stops it (every request still running or waiting gets a
    ``ProviderError`` then ``RELEASED``) and frees llama.cpp's memory.

    Args:
        n_ctx: context tokens per slot: a request's prompt plus its completion fit in it.
        parallel: slots, i.e. sequences decoded together.
        prefill_chunk: prompt tokens decoded per step, all prefilling requests together.
        n_threads: llama.cpp threads for decode steps, one token per sequence however many
            sequences run (``None``: half the CPUs, llama-cpp-python's default for generation).
            On a shared machine more threads than free cores make each step far slower (the
            threads wait for each other at every barrier), so batching adds sequences, not
            threads.
        prefill_threads: threads for steps that hold prompt tokens (``None``: ``n_threads``,
            as llama.cpp's own server). llama-cpp-python uses all CPUs for prompt evaluation;
            on a 2-core machine shared with other work that made a 39-token prefill take
            1.2-2.8 s instead of 0.26-0.8 s, and the TTFT of 4 simultaneous requests with it.
        prompt_cache: keep each slot's last prompt in its KV cells for the next request
            that shares a prefix with it (see the module docstring); off: remove every cell
            when a request ends.
        window: undelivered deltas a request may have before it sits out (see the module
            docstring).
        on_output: called from the engine thread once per step with that step's items.
    """

    def __init__(
        self,
        llama_cpp: Any,
        model: Any,
        ctx: Any,
        *,
        n_ctx: int,
        parallel: int,
        n_batch: int,
        prefill_chunk: int,
        window: int,
        n_threads: int,
        prefill_threads: int,
        prompt_cache: bool = True,
        on_output: Callable[[list[tuple[Request, Output]]], None],
    ) -> None:
        self._ll = llama_cpp
        self._model = model
        self._ctx = ctx
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._memory = llama_cpp.llama_get_memory(ctx)
        self.n_ctx = n_ctx
        self.parallel = parallel
        self.n_batch = n_batch
        self.prefill_chunk = prefill_chunk
        self.window = window
        self.n_threads = n_threads
        self.prefill_threads = prefill_threads
        self.prompt_cache = prompt_cache
        self._prefilling = False  # the thread setting of the last step
        self._on_output = on_output
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._slots = [_Slot(seq_id) for seq_id in range(parallel)]
        self._order: list[_Slot] = []  # busy slots, oldest admission first
        self._inbox: deque[Request] = deque()
        self._waiting: deque[Request] = deque()  # submitted before a slot was free
        self._out: list[tuple[Request, Output]] = []
        self._wake = threading.Event()
        self._closing = False
        self._stopped = False  # the decode loop has ended: submit() refuses
        self._submit_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._piece = ctypes.create_string_buffer(256)
        self.steps = 0  # decode steps run, for tests and the benchmark
        self.cached_tokens = 0  # prompt tokens taken from a slot's prompt cache, not decoded
        self.failed: BaseException | None = None  # what stopped the thread, if it crashed

    # -- building and closing -----------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        n_ctx: int = 2048,
        parallel: int = 4,
        prefill_chunk: int = 128,
        n_threads: int | None = None,
        prefill_threads: int | None = None,
        prompt_cache: bool = True,
        window: int = 8,
        on_output: Callable[[list[tuple[Request, Output]]], None],
    ) -> BatchEngine:
        """Load the GGUF at ``path`` and make the context (blocking: call in a worker thread).

        Raises:
            ProviderError: llama-cpp-python is missing, or llama.cpp cannot load the file or
                make the context.
        """
        try:
            import llama_cpp
        except ImportError as exc:
            raise ProviderError(
                "the local provider needs llama-cpp-python: pip install 'tokenwire[local]'"
            ) from exc
        quiet = logging.getLogger("llama-cpp-python")  # llama.cpp's own log, via its callback
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.ERROR)
        llama_cpp.llama_backend_init()
        model = llama_cpp.llama_model_load_from_file(
            str(path).encode(), llama_cpp.llama_model_default_params()
        )
        if not model:
            raise ProviderError(f"llama.cpp could not load the model file {path}")
        cpus = os.cpu_count() or 1
        n_batch = max(512, prefill_chunk + parallel)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx * parallel
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = parallel
        n_threads = n_threads or max(cpus // 2, 1)
        prefill_threads = prefill_threads or n_threads
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise ProviderError(f"llama.cpp could not make a context of {n_ctx} x {parallel}")
        per_slot = int(llama_cpp.llama_n_ctx_seq(ctx))
        return cls(
            llama_cpp,
            model,
            ctx,
            n_ctx=min(n_ctx, per_slot),
            parallel=parallel,
            n_batch=n_batch,
            prefill_chunk=prefill_chunk,
            window=window,
            n_threads=n_threads,
            prefill_threads=prefill_threads,
            prompt_cache=prompt_cache,
            on_output=on_output,
        )

    def start(self) -> None:
        """Start the decode thread (once)."""
        if self._thread is not None:
            raise RuntimeError("BatchEngine.start() called twice")
        self._thread = threading.Thread(target=self._run, name="tokenwire-llama", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the decode thread (within one step), fail what is still running or waiting, and
        free the context and the model. Blocking; idempotent."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._ctx is None:
            return
        for slot in self._slots:
            if slot.sampler is not None:
                self._ll.llama_sampler_free(slot.sampler)
                slot.sampler = None
        self._ll.llama_batch_free(self._batch)
        self._ll.llama_free(self._ctx)
        self._ll.llama_model_free(self._model)
        self._ctx = self._model = None

    # -- what other threads call --------------------------------------------------------------

    def submit(self, request: Request) -> None:
        """Queue ``request`` for the next step (any thread; it waits in the engine if no slot
        is free, so admit at most ``parallel`` at a time).

        Raises:
            ProviderError: the engine is closed or its loop has failed (nothing was queued).
        """
        with self._submit_lock:
            if self._stopped or self._closing:
                raise ProviderError("the local model was shut down")
            self._inbox.append(request)
        self._wake.set()

    def wake(self) -> None:
        """Make the engine look again at cancels and credits (any thread; cheap)."""
        self._wake.set()

    @property
    def busy(self) -> int:
        """Slots running a request now (a momentary reading, from any thread)."""
        return sum(slot.request is not None for slot in self._slots)

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value (e.g. ``tokenizer.chat_template``), or ``None``."""
        size = 4096
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = self._ll.llama_model_meta_val_str(self._model, key.encode(), buffer, size)
            if n < 0:
                return None
            if n < size:
                return buffer.raw[:n].decode(errors="replace")
            size = n + 1

    def token_text(self, token: int) -> str:
        """The raw text of a vocabulary entry (e.g. the BOS or EOS token's)."""
        return bytes(self._ll.llama_vocab_get_text(self._vocab, token)).decode(errors="replace")

    @property
    def bos(self) -> int:
        return int(self._ll.llama_vocab_bos(self._vocab))

    @property
    def eos(self) -> int:
        return int(self._ll.llama_vocab_eos(self._vocab))

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        """Tokens of ``text`` (reads only the vocabulary: safe from any thread)."""
        data = text.encode()
        size = len(data) + 8
        while True:
            tokens = (self._ll.llama_token * size)()
            n = self._ll.llama_tokenize(
                self._vocab, data, len(data), tokens, size, add_special, parse_special
            )
            if n >= 0:
                return list(tokens[:n])
            size = -n

    # -- the decode loop (engine thread) ------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closing:
                self._wake.clear()
                self._reap()
                self._admit()
                n_tokens = self._fill()
                if n_tokens:
                    self._decode(n_tokens)
                    self.steps += 1
                self._flush()
                if not n_tokens:
                    self._wake.wait(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported to every request below
            log.exception("the llama.cpp decode loop failed")
            self.failed = exc
        finally:
            error = ProviderError("the local model was shut down")
            if self.failed is not None:
                error = ProviderError(f"llama.cpp failed: {self.failed}")
            for slot in list(self._order):  # _release removes it from _order
                self._release(slot, error)
            with self._submit_lock:
                self._stopped = True
                waiting = [*self._waiting, *self._inbox]
                self._waiting.clear()
                self._inbox.clear()
            for request in waiting:
                self._out.append((request, error))
                self._out.append((request, RELEASED))
            self._flush()

    def _reap(self) -> None:
        """Drop cancelled requests: running ones free their slot, waiting ones just leave."""
        for slot in [slot for slot in self._order if slot.request and slot.request.cancelled]:
            self._release(slot, None)
        if self._waiting and any(request.cancelled for request in self._waiting):
            for request in [r for r in self._waiting if r.cancelled]:
                self._waiting.remove(request)
                self._out.append((request, RELEASED))

    def _admit(self) -> None:
        while self._inbox:
            self._waiting.append(self._inbox.popleft())
        while self._waiting and len(self._order) < self.parallel:
            request = self._waiting.popleft()
            if request.cancelled:
                self._out.append((request, RELEASED))
                continue
            slot = max(
                (slot for slot in self._slots if slot.request is None),
                key=lambda free: _shared(free.cached, request.tokens),
            )
            room = self.n_ctx - len(request.tokens)
            if not request.tokens or room < 1:
                self._out.append(
                    (
                        request,
                        ProviderError(
                            f"the prompt is {len(request.tokens)} tokens; this model's slots "
                            f"hold {self.n_ctx} tokens (TOKENWIRE_LOCAL_N_CTX), prompt and "
                            "completion together",
                            retryable=False,
                        ),
                    )
                )
                self._out.append((request, RELEASED))
                continue
            # keep the cached prompt's cells that this prompt shares, but always decode its
            # last token (its logits give the first sampled token)
            reuse = min(_shared(slot.cached, request.tokens), len(request.tokens) - 1)
            if not self._ll.llama_memory_seq_rm(self._memory, slot.seq_id, reuse, -1):
                reuse = 0
                self._ll.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            slot.cached = []
            self.cached_tokens += reuse
            slot.request = request
            slot.sampler = self._sampler(request.sampling)
            slot.n_past = slot.n_prefilled = reuse
            slot.generated = slot.unsent = 0
            slot.next_token = None
            slot.max_tokens = min(request.max_tokens, room)
            slot.assembler = TextAssembler(request.stop)
            slot.batch_index = -1
            self._order.append(slot)

    def _sampler(self, sampling: Sampling) -> Any:
        ll = self._ll
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if sampling.temperature <= 0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
            return chain
        seed = _DEFAULT_SEED if sampling.seed is None else sampling.seed & 0xFFFFFFFF
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(sampling.top_k))
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(sampling.top_p, 1))
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_min_p(sampling.min_p, 1))
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(sampling.temperature))
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seed))
        return chain

    def _fill(self) -> int:
        """Put this step's tokens in the batch; returns how many."""
        batch = self._batch
        n = 0
        for slot in self._order:
            request = slot.request
            if slot.next_token is None or request is None:
                continue
            request.blocked = True  # before reading the credit: see Request
            if request.sent - request.consumed >= self.window:
                continue
            request.blocked = False
            self._put(batch, n, slot.next_token, slot.n_past, slot.seq_id, True)
            slot.batch_index = n
            slot.next_token = None
            slot.n_past += 1
            n += 1
        decoding = n
        budget = min(self.prefill_chunk, self.n_batch - n)
        for slot in self._order:
            if budget <= 0:
                break
            request = slot.request
            if request is None or slot.n_prefilled >= len(request.tokens):
                continue
            tokens = request.tokens
            take = min(budget, len(tokens) - slot.n_prefilled)
            for offset in range(take):
                position = slot.n_prefilled + offset
                last = position == len(tokens) - 1
                self._put(batch, n, tokens[position], position, slot.seq_id, last)
                if last:
                    slot.batch_index = n
                n += 1
            slot.n_prefilled += take
            slot.n_past = slot.n_prefilled
            budget -= take
        batch.n_tokens = n
        prefilling = n > decoding
        if prefilling != self._prefilling:  # llama.cpp uses n_threads_batch when n > 1
            threads = self.prefill_threads if prefilling else self.n_threads
            self._ll.llama_set_n_threads(self._ctx, self.n_threads, threads)
            self._prefilling = prefilling
        return n

    @staticmethod
    def _put(batch: Any, index: int, token: int, position: int, seq_id: int, logits: bool) -> None:
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = seq_id
        batch.logits[index] = logits

    def _decode(self, n_tokens: int) -> None:
        result = self._ll.llama_decode(self._ctx, self._batch)
        if result != 0:
            error = ProviderError(f"llama.cpp could not decode a batch (llama_decode {result})")
            for slot in [slot for slot in self._order if slot.batch_index >= 0]:
                self._release(slot, error, keep_prompt=False)
            return
        ll = self._ll
        for slot in [slot for slot in self._order if slot.batch_index >= 0]:
            request = slot.request
            assert request is not None  # a slot in _order runs a request
            token = ll.llama_sampler_sample(slot.sampler, self._ctx, slot.batch_index)
            slot.batch_index = -1
            if ll.llama_vocab_is_eog(self._vocab, token):
                self._finish(slot, FinishReason.STOP)
                continue
            slot.generated += 1
            slot.unsent += 1
            text = slot.assembler.feed(self._token_bytes(token))
            if text:
                self._send(slot, request, text)
            if slot.assembler.stopped:
                self._finish(slot, FinishReason.STOP)
            elif slot.generated >= slot.max_tokens:
                self._finish(slot, FinishReason.LENGTH)
            else:
                slot.next_token = token

    def _token_bytes(self, token: int) -> bytes:
        piece = self._piece
        n = self._ll.llama_token_to_piece(self._vocab, token, piece, len(piece), 0, False)
        if n < 0:
            self._piece = piece = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self._vocab, token, piece, len(piece), 0, False)
        return piece.raw[:n]

    def _send(self, slot: _Slot, request: Request, text: str) -> None:
        self._out.append((request, Delta(text, slot.unsent)))
        request.sent += 1
        slot.unsent = 0

    def _finish(self, slot: _Slot, reason: FinishReason) -> None:
        request = slot.request
        assert request is not None
        rest = slot.assembler.flush()
        if rest:
            self._send(slot, request, rest)
        usage = Usage.of(len(request.tokens), slot.generated)
        self._release(slot, Finish(reason, usage))

    def _release(
        self, slot: _Slot, last: Finish | ProviderError | None, *, keep_prompt: bool = True
    ) -> None:
        """End the slot's request (``last``, if any, then RELEASED) and free its cells, all but
        those of the prompt it decoded when the prompt cache is on and ``keep_prompt``."""
        request = slot.request
        if request is not None:
            if last is not None:
                self._out.append((request, last))
            self._out.append((request, RELEASED))
        keep = 0
        if request is not None and keep_prompt and self.prompt_cache:
            keep = min(slot.n_prefilled, len(request.tokens))
        if keep and self._ll.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1):
            slot.cached = request.tokens[:keep] if request is not None else []
        else:
            self._ll.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            slot.cached = []
        if slot.sampler is not None:
            self._ll.llama_sampler_free(slot.sampler)
            slot.sampler = None
        slot.request = None
        slot.next_token = None
        slot.batch_index = -1
        if slot in self._order:
            self._order.remove(slot)

    def _flush(self) -> None:
        if self._out:
            out, self._out = self._out, []
            self._on_output(out)


def _shared(cached: list[int], tokens: list[int]) -> int:
    """Length of the common prefix of two token lists."""
    size = 0
    for a, b in zip(cached, tokens, strict=False):
        if a != b:
            break
        size += 1
    return size
