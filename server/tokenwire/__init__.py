"""tokenwire: stream LLM tokens over Server-Sent Events and WebSocket from one stream layer.

As a library::

    import tokenwire

    async def generate(params: tokenwire.GenerateParams) -> AsyncIterator[str]:
        yield "Hello"

    app = tokenwire.create_app(provider=generate)  # an ASGI app; mount it or serve it

The names below are imported on first use (``import tokenwire`` alone imports nothing else):
:func:`create_app`, :func:`lifespan` (a mounted app's lifespan, entered by the host),
:class:`Settings`, :class:`Provider`, :class:`FunctionProvider`, the provider events
(:class:`Prompt`, :class:`Delta`, :class:`Reasoning`, :class:`ToolCall`, :class:`ToolArguments`,
:class:`Finish`), :class:`GenerateParams`, :class:`Usage`, :class:`FinishReason` and
:class:`ProviderError`. The conformance kit is :mod:`tokenwire.testing`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "create_app": "tokenwire.app",
    "lifespan": "tokenwire.lifecycle",
    "Settings": "tokenwire.settings",
    "Provider": "tokenwire.providers.base",
    "Prompt": "tokenwire.providers.base",
    "Delta": "tokenwire.providers.base",
    "Reasoning": "tokenwire.providers.base",
    "ToolCall": "tokenwire.providers.base",
    "ToolArguments": "tokenwire.providers.base",
    "Finish": "tokenwire.providers.base",
    "FunctionProvider": "tokenwire.providers.function",
    "GenerateParams": "tokenwire.protocol.requests",
    "Usage": "tokenwire.protocol.events",
    "FinishReason": "tokenwire.protocol.events",
    "ProviderError": "tokenwire.errors",
}

if TYPE_CHECKING:
    from tokenwire.app import create_app
    from tokenwire.errors import ProviderError
    from tokenwire.lifecycle import lifespan
    from tokenwire.protocol.events import FinishReason, Usage
    from tokenwire.protocol.requests import GenerateParams
    from tokenwire.providers.base import (
        Delta,
        Finish,
        Prompt,
        Provider,
        Reasoning,
        ToolArguments,
        ToolCall,
    )
    from tokenwire.providers.function import FunctionProvider
    from tokenwire.settings import Settings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tokenwire' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Delta",
    "Finish",
    "FinishReason",
    "FunctionProvider",
    "GenerateParams",
    "Prompt",
    "Provider",
    "ProviderError",
    "Reasoning",
    "Settings",
    "ToolArguments",
    "ToolCall",
    "Usage",
    "__version__",
    "create_app",
    "lifespan",
]
