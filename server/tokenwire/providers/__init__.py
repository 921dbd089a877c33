"""Providers by name: the built-in ones, those that installed packages add, and your own code.

``settings.provider`` (``TOKENWIRE_PROVIDER``, ``tokenwire serve --provider``) is looked up in
this order:

1. a built-in name (:data:`PROVIDERS`: ``local``, ``openai``, ``scripted``); each is imported
   only when chosen, so a server running ``openai`` never imports llama.cpp, and vice versa;
2. an entry point of the group :data:`ENTRY_POINT_GROUP` (``tokenwire.providers``) of an
   installed distribution, e.g. in its ``pyproject.toml``::

       [project.entry-points."tokenwire.providers"]
       echo = "tokenwire_echo:generate"

3. ``module:attribute`` (the attribute may be dotted: ``pkg.mod:Class.factory``), imported from
   ``sys.path``.

Whatever the name resolves to may be a :class:`Provider` instance (used as is), a
:class:`Provider` subclass (built with ``from_settings(settings)``) or an async generator
function ``(params) -> AsyncIterator[str | ProviderEvent]`` (wrapped in a
:class:`~tokenwire.providers.function.FunctionProvider`; ``settings.model``, when set, is the
model id it serves). Failures raise :class:`ProviderLoadError` with a message that names what
was given.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from typing import TypeAlias

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
from tokenwire.providers.function import FunctionProvider, ProviderFunction, is_provider_function
from tokenwire.settings import Settings

PROVIDERS: dict[str, str] = {
    "local": "tokenwire.providers.local:LocalProvider",
    "openai": "tokenwire.providers.openai:OpenAIProvider",
    "scripted": "tokenwire.providers.scripted:ScriptedProvider",
}
"""The built-in providers: name -> ``module:attribute``, imported on first use."""

ENTRY_POINT_GROUP = "tokenwire.providers"
"""The entry-point group in which installed packages register providers by name."""

ProviderSpec: TypeAlias = Provider | type[Provider] | ProviderFunction
"""What may stand for a provider: an instance, a subclass, or an async generator function."""


class ProviderLoadError(ValueError):
    """A provider name, entry point or ``module:attribute`` that cannot be loaded or is not a
    provider. The message names what was given and what went wrong."""


def entry_point_names() -> list[str]:
    """The names that installed packages register in :data:`ENTRY_POINT_GROUP`, sorted (read
    from the installed distributions' metadata each call; nothing is imported)."""
    names = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names - PROVIDERS.keys())


def provider_names() -> list[str]:
    """Every name ``--provider`` accepts besides ``module:attribute``: built-ins first."""
    return [*PROVIDERS, *entry_point_names()]


def load_provider(name: str) -> object:
    """What ``name`` refers to (see the module docstring for the lookup order), not yet
    checked to be a provider (:func:`as_provider` does that).

    Raises:
        ProviderLoadError: an unknown name, a module that is not found or fails to import,
            a missing attribute, or an entry point that fails to load.
    """
    if name in PROVIDERS:
        return _import_target(PROVIDERS[name], given=name)
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            return entry_point.load()
        except Exception as exc:
            raise ProviderLoadError(
                f"provider {name!r}: the entry point {entry_point.value!r} of group "
                f"{ENTRY_POINT_GROUP} failed to load: {type(exc).__name__}: {exc}"
            ) from exc
    if ":" not in name:
        raise ProviderLoadError(
            f"unknown provider {name!r}; choose one of: {', '.join(provider_names())}, "
            "or give module:attribute (an async generator function or a Provider)"
        )
    return _import_target(name, given=name)


def _import_target(target: str, *, given: str) -> object:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ProviderLoadError(f"provider {given!r}: expected module:attribute")
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise ProviderLoadError(
                f"provider {given!r}: module {module_name!r} not found "
                "(is it installed, or its directory on PYTHONPATH?)"
            ) from exc
        raise ProviderLoadError(
            f"provider {given!r}: importing module {module_name!r} failed: {exc}"
        ) from exc
    except Exception as exc:
        raise ProviderLoadError(
            f"provider {given!r}: importing module {module_name!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ProviderLoadError(
                f"provider {given!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    return obj


def as_provider(obj: object, settings: Settings, *, given: str | None = None) -> Provider:
    """``obj`` as a (not yet started) :class:`Provider`: an instance as is, a subclass built
    with ``from_settings(settings)``, an async generator function wrapped in a
    :class:`FunctionProvider` (serving ``settings.model`` when set).

    Raises:
        ProviderLoadError: ``obj`` is none of those; the message names ``given`` (default:
            ``obj``'s repr) and what it is.
    """
    if isinstance(obj, Provider):
        return obj
    if isinstance(obj, type) and issubclass(obj, Provider):
        return obj.from_settings(settings)
    if is_provider_function(obj):
        models = [settings.model] if settings.model else None
        return FunctionProvider(obj, models=models)  # type: ignore[arg-type]  # checked just above
    what = given if given is not None else repr(obj)
    if inspect.iscoroutinefunction(obj):
        hint = " (an `async def` that returns; it must `yield` its text)"
    elif inspect.isgeneratorfunction(obj):
        hint = " (a plain generator; make it `async def`)"
    else:
        hint = ""
    raise ProviderLoadError(
        f"provider {what!r} is {_kind(obj)}{hint}, not a Provider, a Provider subclass or an "
        "async generator function"
    )


def _kind(obj: object) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    if inspect.isfunction(obj):
        return f"the function {obj.__module__}.{obj.__qualname__}"
    return f"a {type(obj).__module__}.{type(obj).__qualname__} object"


def create_provider(settings: Settings) -> Provider:
    """Build the provider that ``settings.provider`` names (not yet started). Raises
    :class:`ProviderLoadError` (see :func:`load_provider` and :func:`as_provider`)."""
    return as_provider(load_provider(settings.provider), settings, given=settings.provider)


__all__ = [
    "ENTRY_POINT_GROUP",
    "PROVIDERS",
    "Delta",
    "Finish",
    "FunctionProvider",
    "Prompt",
    "Provider",
    "ProviderEvent",
    "ProviderFunction",
    "ProviderLoadError",
    "ProviderSpec",
    "Reasoning",
    "ToolArguments",
    "ToolCall",
    "as_provider",
    "create_provider",
    "entry_point_names",
    "load_provider",
    "provider_names",
]
