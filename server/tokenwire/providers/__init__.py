"""Providers by name. Each entry is imported only when chosen, so that a server running the
``openai`` provider never imports llama.cpp, and vice versa."""

from __future__ import annotations

import importlib

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

PROVIDERS: dict[str, str] = {
    "local": "tokenwire.providers.local:LocalProvider",
    "openai": "tokenwire.providers.openai:OpenAIProvider",
    "scripted": "tokenwire.providers.scripted:ScriptedProvider",
}


def provider_class(name: str) -> type[Provider]:
    """The provider class registered under ``name``.

    Raises:
        ValueError: no provider of that name; the message lists the known ones.
    """
    try:
        target = PROVIDERS[name]
    except KeyError:
        raise ValueError(
            f"unknown provider {name!r}; choose one of: {', '.join(PROVIDERS)}"
        ) from None
    module_name, _, attribute = target.partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module_name), attribute)
    return cls


def create_provider(settings: Settings) -> Provider:
    """Build the provider that ``settings.provider`` names (not yet started)."""
    return provider_class(settings.provider).from_settings(settings)


__all__ = [
    "PROVIDERS",
    "Delta",
    "Finish",
    "Prompt",
    "Provider",
    "ProviderEvent",
    "Reasoning",
    "ToolArguments",
    "ToolCall",
    "create_provider",
    "provider_class",
]
