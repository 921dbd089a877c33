"""The provider conformance kit: the :class:`~tokenwire.providers.Provider` contract, made
executable, for your own test suite.

::

    from tokenwire.testing import check_provider

    async def test_my_provider_conforms():  # pytest-asyncio, anyio, or asyncio.run
        await check_provider(MyProvider(...))

:func:`check_provider` streams with the provider on the running event loop and checks:

``events``
    a normal request yields only provider events (or ``str``, from a provider function): at
    most one :class:`~tokenwire.providers.Prompt`, before any text; a
    :class:`~tokenwire.providers.ToolArguments` only after its
    :class:`~tokenwire.providers.ToolCall`; some text; and exactly one
    :class:`~tokenwire.providers.Finish`, the last item (the iterator ends after it).
``usage``
    a reported usage adds up (``total = prompt + completion``), its ``completion_tokens`` is the
    ``tokens`` of the yielded text events, its ``prompt_tokens`` the yielded ``Prompt``'s; no
    more text than ``max_tokens``.
``close``
    ``aclose()`` after the second token returns within ``close_timeout`` seconds, and so does
    a cancel of the task that iterates; then (and after a stream's normal end) no task that the
    stream started still runs and no thread it started is busy after ``close_timeout`` seconds
    (a thread waiting for work, e.g. an idle executor thread, is fine). Give
    ``upstream_stopped``, a probe of the upstream itself, to check that it stopped too.
``errors``
    every failure comes as a :class:`~tokenwire.errors.ProviderError` (or subclass), never an
    SDK's own exception; with ``failing_params`` or ``failing_provider``, the provider must fail
    with one.
``no_blocking``
    no step of the event loop took ``slow_callback`` seconds or more while streaming (asyncio
    debug mode's slow-callback log; needs the standard asyncio loop).

Every check runs even when an earlier one fails; the result is a :class:`ConformanceReport`,
and :class:`ConformanceError` (an ``AssertionError``, so pytest prints it) is raised listing
every failure unless ``raise_on_failure=False``. Tasks left running by a provider that ignores
close are cancelled before it returns; threads cannot be, and are only reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from tokenwire.errors import ProviderError
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers import ProviderSpec, as_provider
from tokenwire.providers.base import (
    Delta,
    Finish,
    Prompt,
    Provider,
    ProviderEvent,
    Reasoning,
    ToolArguments,
    ToolCall,
)
from tokenwire.settings import Settings

CHECKS = ("events", "usage", "close", "errors", "no_blocking")
"""The names of the checks, in the order they are reported."""

DEFAULT_PARAMS = GenerateParams.model_validate(
    {
        "messages": [{"role": "user", "content": "Count from one to twenty, in words."}],
        "max_tokens": 16,
        "temperature": 0,
    }
)
"""The normal request: a few tokens of text (``max_tokens`` 16)."""

_EVENTS = (Prompt, Delta, Reasoning, ToolCall, ToolArguments, Finish)
_TEXT = (Delta, Reasoning, ToolArguments)


@dataclass
class Check:
    """One check's outcome; ``detail`` says what was seen (why it failed, or a note)."""

    name: str
    passed: bool = True
    details: list[str] = field(default_factory=list)

    def fail(self, detail: str) -> None:
        self.passed = False
        self.details.append(detail)


@dataclass
class ConformanceReport:
    """What :func:`check_provider` found: one :class:`Check` per name in :data:`CHECKS`, and
    the items the normal request yielded."""

    provider: str
    checks: dict[str, Check]
    events: list[object]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks.values())

    @property
    def failures(self) -> list[str]:
        """``"<check>: <detail>"`` for every failed check's details."""
        return [
            f"{check.name}: {detail}"
            for check in self.checks.values()
            if not check.passed
            for detail in check.details
        ]

    def __str__(self) -> str:
        lines = [f"provider {self.provider}:"]
        for check in self.checks.values():
            lines.append(f"  {'PASS' if check.passed else 'FAIL'} {check.name}")
            lines.extend(f"       {detail}" for detail in check.details)
        return "\n".join(lines)


class ConformanceError(AssertionError):
    """The provider broke its contract; ``report`` holds every check."""

    def __init__(self, report: ConformanceReport) -> None:
        super().__init__(str(report))
        self.report = report


async def check_provider(
    provider: ProviderSpec,
    *,
    params: GenerateParams | None = None,
    failing_params: GenerateParams | None = None,
    failing_provider: ProviderSpec | None = None,
    upstream_stopped: Callable[[], bool | Awaitable[bool]] | None = None,
    start: bool = True,
    slow_callback: float = 0.1,
    close_timeout: float = 5.0,
    stream_timeout: float = 60.0,
    raise_on_failure: bool = True,
    warm_up: bool = True,
) -> ConformanceReport:
    """Check ``provider`` against the Provider contract (see the module docstring).

    Args:
        provider: a :class:`Provider` instance or subclass (built with default ``Settings()``)
            or an async generator function.
        params: the normal request (default :data:`DEFAULT_PARAMS`); it must yield at least one
            token, and the close check needs two.
        failing_params: a request the provider must fail on, with a ``ProviderError``.
        failing_provider: a provider that must fail, e.g. the same class pointed at an
            upstream that does not answer (started and closed here).
        upstream_stopped: called (sync or async) until it returns true, at most
            ``close_timeout`` seconds, after the close check's ``aclose()``: whether the
            upstream stopped working (e.g. its log says the client went away).
        start: enter ``async with provider`` around the checks (``False``: already started).
        slow_callback: seconds; an event-loop step this long fails ``no_blocking``.
        close_timeout: seconds that ``aclose()`` / a cancel, and the stream's own tasks and
            threads, get to stop.
        stream_timeout: seconds that each stream gets to end.
        raise_on_failure: raise :class:`ConformanceError` when a check fails.
        warm_up: run the normal request (and the failing provider's) once, unchecked, before
            the checks, so that one-time costs (lazy imports, the first connection) do not
            count as blocking the loop.

    Returns the :class:`ConformanceReport`. Raises :class:`ConformanceError`. Cancelling the
    call cancels the stream under check and leaves the loop's debug setting as it was.
    """
    settings = Settings(provider="scripted")  # only used to build a Provider subclass
    backend = as_provider(provider, settings)
    params = params or DEFAULT_PARAMS
    checks = {name: Check(name) for name in CHECKS}
    report = ConformanceReport(type(backend).__qualname__, checks, [])
    with _slow_callbacks(slow_callback) as slow:
        async with contextlib.AsyncExitStack() as stack:
            if start:
                await stack.enter_async_context(backend)
            model = backend.resolve_model(params.model)
            tasks, threads = _tasks(), _thread_ids()
            if warm_up:  # one-time costs: lazy imports, the first connection, caches
                await _warm_up(backend, params, model, stream_timeout)
            slow.active = True
            report.events = await _check_events(backend, params, model, checks, stream_timeout)
            await _leftovers(checks["close"], "after its end", tasks, threads, close_timeout)
            await _check_close(backend, params, model, checks, upstream_stopped, close_timeout)
            if failing_params is not None:
                failing_model = backend.resolve_model(failing_params.model)
                await _expect_failure(
                    backend, failing_params, failing_model, checks["errors"], stream_timeout
                )
            slow.active = False
        if failing_provider is not None:
            failing = as_provider(failing_provider, settings)
            async with failing:
                failing_model = failing.resolve_model(params.model)
                if warm_up:
                    await _warm_up(failing, params, failing_model, stream_timeout)
                slow.active = True
                await _expect_failure(
                    failing, params, failing_model, checks["errors"], stream_timeout
                )
                slow.active = False
    for record in slow.seen:
        checks["no_blocking"].fail(
            f"a blocking event-loop step (>= {slow_callback} s): {record}; run blocking calls "
            "in a thread (asyncio.to_thread) or use the SDK's async client"
        )
    if raise_on_failure and not report.passed:
        raise ConformanceError(report)
    return report


# -- the checks ------------------------------------------------------------------------------


def _raw_error(checks: dict[str, Check], where: str, exc: BaseException) -> None:
    checks["errors"].fail(
        f"{where}: raised {type(exc).__module__}.{type(exc).__qualname__} ({exc}), not a "
        "ProviderError: translate it where it enters (raise ProviderError(...) from exc)"
    )


async def _check_events(
    provider: Provider,
    params: GenerateParams,
    model: str,
    checks: dict[str, Check],
    within: float,
) -> list[object]:
    events, usage = checks["events"], checks["usage"]
    items: list[object] = []
    try:
        async with asyncio.timeout(within):
            async with contextlib.aclosing(provider.stream(params, model)) as stream:
                async for event in stream:
                    items.append(event)
    except TimeoutError:
        events.fail(f"no end within {within} s; yielded {len(items)} items")
    except ProviderError as exc:
        events.fail(f"the normal request failed: {type(exc).__name__}: {exc.message}")
    except Exception as exc:
        _raw_error(checks, "the normal request", exc)
        events.fail(f"the normal request raised {type(exc).__name__}")
    prompts = [i for i, item in enumerate(items) if isinstance(item, Prompt)]
    texts = [i for i, item in enumerate(items) if isinstance(item, _TEXT)]
    finishes = [i for i, item in enumerate(items) if isinstance(item, Finish)]
    strange = [item for item in items if not isinstance(item, _EVENTS)]
    if strange:
        events.fail(f"yielded non-events: {strange[:3]!r} (expected Prompt, Delta, ... Finish)")
    if len(prompts) > 1:
        events.fail(f"{len(prompts)} Prompt events; at most one")
    if prompts and texts and prompts[0] > texts[0]:
        events.fail("Prompt came after text; it must come before the first token")
    if not texts and not strange:
        events.fail("no text: the normal request yielded no Delta, Reasoning or ToolArguments")
    if len(finishes) != 1:
        events.fail(f"{len(finishes)} Finish events; exactly one, the last item")
    elif finishes[0] != len(items) - 1:
        events.fail(f"Finish at item {finishes[0] + 1} of {len(items)}; it must be the last")
    begun: set[int] = set()
    for item in items:
        if isinstance(item, ToolCall):
            begun.add(item.index)
        elif isinstance(item, ToolArguments) and item.index not in begun:
            events.fail(f"ToolArguments of call {item.index} before its ToolCall")
            break
    counted = sum(item.tokens for item in items if isinstance(item, _TEXT))
    if params.max_tokens is not None and counted > params.max_tokens:
        usage.fail(f"{counted} tokens of text for max_tokens={params.max_tokens}")
    finish = next((item for item in reversed(items) if isinstance(item, Finish)), None)
    if finish is None or finish.usage is None:
        usage.details.append("no usage reported: tokenwire counts the yielded tokens")
        return items
    reported = finish.usage
    if reported.total_tokens != reported.prompt_tokens + reported.completion_tokens:
        usage.fail(f"usage does not add up: {reported.model_dump()}")
    if reported.completion_tokens != counted:
        usage.fail(
            f"usage.completion_tokens={reported.completion_tokens}, but the text events hold "
            f"{counted} tokens (set Delta.tokens to the tokens each holds)"
        )
    prompt = next((item for item in items if isinstance(item, Prompt)), None)
    if prompt is not None:
        if reported.prompt_tokens != prompt.tokens:
            usage.fail(
                f"usage.prompt_tokens={reported.prompt_tokens}, but Prompt said {prompt.tokens}"
            )
    return items


async def _first_token(stream: AsyncIterator[ProviderEvent]) -> int:
    """Read up to the second text event (two tokens): how many items were read."""
    seen = texts = 0
    async for item in stream:
        seen += 1
        if isinstance(item, _TEXT):
            texts += 1
            if texts == 2:
                break
    return seen


async def _check_close(
    provider: Provider,
    params: GenerateParams,
    model: str,
    checks: dict[str, Check],
    upstream_stopped: Callable[[], bool | Awaitable[bool]] | None,
    close_timeout: float,
) -> None:
    close = checks["close"]
    # 1. aclose() after the first tokens
    tasks, threads = _tasks(), _thread_ids()
    stream = provider.stream(params, model)
    try:
        await asyncio.wait_for(_first_token(stream), close_timeout * 10)
    except ProviderError as exc:
        close.fail(f"the stream failed before its second token: {exc.message}")
    except TimeoutError:
        close.fail(f"no second token within {close_timeout * 10} s")
    except Exception as exc:
        _raw_error(checks, "the close check's stream", exc)
    try:
        await asyncio.wait_for(stream.aclose(), close_timeout)
    except TimeoutError:
        close.fail(f"aclose() did not return within {close_timeout} s")
    except Exception as exc:
        close.fail(f"aclose() raised {type(exc).__name__}: {exc} (was GeneratorExit caught?)")
    await _leftovers(close, "after aclose()", tasks, threads, close_timeout)
    if upstream_stopped is not None:
        if not await _eventually(upstream_stopped, close_timeout):
            close.fail(f"upstream_stopped() still false {close_timeout} s after aclose()")

    # 2. cancelling the task that iterates it
    tasks, threads = _tasks(), _thread_ids()
    reading = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(provider.stream(params, model)) as events:
            async for item in events:
                if isinstance(item, _TEXT):
                    reading.set()

    consumer = asyncio.create_task(consume())
    waiter = asyncio.create_task(reading.wait())
    try:
        await asyncio.wait(
            {consumer, waiter}, timeout=close_timeout * 10, return_when="FIRST_COMPLETED"
        )
    finally:
        waiter.cancel()
    consumer.cancel()
    done, _ = await asyncio.wait({consumer}, timeout=close_timeout)
    if not done:
        close.fail(f"the iterating task still ran {close_timeout} s after it was cancelled")
    elif not consumer.cancelled():
        failure = consumer.exception()
        if failure is not None and not isinstance(failure, ProviderError):
            _raw_error(checks, "the cancelled stream", failure)
    await _leftovers(close, "after a cancel", tasks | {consumer, waiter}, threads, close_timeout)


async def _expect_failure(
    provider: Provider, params: GenerateParams, model: str, errors: Check, within: float
) -> None:
    try:
        async with asyncio.timeout(within):
            async with contextlib.aclosing(provider.stream(params, model)) as stream:
                async for _ in stream:
                    pass
    except TimeoutError:
        errors.fail(f"the failing request did not end within {within} s")
    except ProviderError:
        return
    except Exception as exc:
        _raw_error({"errors": errors}, "the failing request", exc)
    else:
        errors.fail("the failing request did not fail")


async def _warm_up(provider: Provider, params: GenerateParams, model: str, within: float) -> None:
    with contextlib.suppress(Exception):  # the checks that follow will say what is wrong
        async with asyncio.timeout(within):
            async with contextlib.aclosing(provider.stream(params, model)) as stream:
                async for _ in stream:
                    pass


# -- what a stream leaves behind ------------------------------------------------------------


def _tasks() -> set[asyncio.Task[object]]:
    return set(asyncio.all_tasks())


def _thread_ids() -> set[int | None]:
    return {thread.ident for thread in threading.enumerate()}


_WAITING_FILES = {"threading.py", "queue.py", "selectors.py"}


def _busy(frame: FrameType | None) -> bool:
    """Whether a thread whose innermost Python frame is ``frame`` is working (not waiting on a
    lock, a queue or a selector, nor an executor thread waiting for work)."""
    if frame is None:
        return False
    code = frame.f_code
    name = Path(code.co_filename)
    if name.name in _WAITING_FILES:
        return False
    return not (
        name.name == "thread.py" and name.parent.name == "futures" and code.co_name == "_worker"
    )


async def _leftovers(
    check: Check,
    when: str,
    tasks_before: set[asyncio.Task[object]],
    threads_before: set[int | None],
    within: float,
) -> None:
    """Wait up to ``within`` seconds for the tasks and threads started since the snapshot to
    stop; fail ``check`` for those that do not, and cancel the tasks."""
    current = asyncio.current_task()
    deadline = time.monotonic() + within
    while True:
        tasks = [t for t in _tasks() - tasks_before if t is not current and not t.done()]
        frames = sys._current_frames()
        threads = [
            thread
            for thread in threading.enumerate()
            if thread.ident not in threads_before and _busy(frames.get(thread.ident or -1))
        ]
        if (not tasks and not threads) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    for task in tasks:
        check.fail(f"{when}, a task it started still runs after {within} s: {task.get_coro()!r}")
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=within)
    for thread in threads:
        frame = frames.get(thread.ident or -1)
        where = f"{frame.f_code.co_name} ({Path(frame.f_code.co_filename).name})" if frame else "?"
        check.fail(
            f"{when}, thread {thread.name!r} it started still works after {within} s: in {where}"
        )


async def _eventually(probe: Callable[[], bool | Awaitable[bool]], within: float) -> bool:
    deadline = time.monotonic() + within
    while True:
        result = probe()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)


# -- asyncio debug mode's slow-callback log --------------------------------------------------


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []
        self.active = False  # off while providers start and close (only streaming counts)

    def emit(self, record: logging.LogRecord) -> None:
        if self.active and isinstance(record.msg, str) and record.msg.startswith("Executing"):
            self.seen.append(record.getMessage())  # "Executing <handle> took 0.503 seconds"


@contextlib.contextmanager
def _slow_callbacks(threshold: float) -> Iterator[_SlowCallbacks]:
    """Debug mode with ``threshold`` on the running loop; yields the handler that keeps the
    slow steps seen while ``active`` (asyncio's log lines). Restores the
    loop and the ``asyncio`` logger after."""
    loop = asyncio.get_running_loop()
    logger = logging.getLogger("asyncio")
    handler = _SlowCallbacks()
    debug, duration, level = loop.get_debug(), loop.slow_callback_duration, logger.level
    loop.set_debug(True)
    loop.slow_callback_duration = threshold
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        loop.slow_callback_duration = duration
        loop.set_debug(debug)


__all__ = [
    "CHECKS",
    "DEFAULT_PARAMS",
    "Check",
    "ConformanceError",
    "ConformanceReport",
    "check_provider",
]
