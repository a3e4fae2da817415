"""The provider registry: which providers exist, found by the core without naming any of them.

Each built-in provider is a module of this package defining ``PROVIDER`` (a
:class:`~aerostack_meter.providers._base.Provider`; the declaration format is in that module's
docstring and ``docs/providers/README.md``). Adding a provider is adding its module and its name to
:data:`BUILTIN`; nothing in the core changes. Provider modules are imported lazily (the first time
the registry is asked), and importing one never imports its SDK.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._base import Provider

__all__ = ["BUILTIN", "all_providers", "get", "names", "provider_for", "register"]

#: Built-in provider modules (``aerostack_meter.providers.<name>``), in the order they are patched.
BUILTIN: tuple[str, ...] = ("openai", "anthropic", "gemini", "bedrock", "mistral", "litellm")

#: The SDK each built-in provider meters, by import name: its ``PROVIDER.package`` is this module
#: or one under it (a test checks). ``init()`` skips a provider whose SDK is not installed without
#: importing the provider's module, which imports the wrapping core and wrapt (issue 16).
_SDKS: dict[str, str] = {"openai": "openai", "anthropic": "anthropic", "gemini": "google.genai",
                         "bedrock": "botocore", "mistral": "mistralai", "litellm": "litellm"}

_lock = threading.Lock()
_loaded: dict[str, Provider] | None = None
_extra: dict[str, Provider] = {}


def _load() -> dict[str, Provider]:
    global _loaded
    loaded = _loaded
    if loaded is None:
        with _lock:
            if _loaded is None:
                found: dict[str, Provider] = {}
                for name in BUILTIN:
                    found[name] = importlib.import_module(f"{__name__}.{name}").PROVIDER
                _loaded = found
            loaded = _loaded
    return loaded


def register(provider: Provider) -> None:
    """Add a provider declared outside this package (a plugin, a test). Its name must be new, else
    :class:`~aerostack_meter.ConfigError`."""
    if provider.name in _load() or provider.name in _extra:
        from .._errors import ConfigError

        raise ConfigError("provider", f"a provider named {provider.name!r} is already registered",
                          call="register")
    _extra[provider.name] = provider


def all_providers() -> list[Provider]:
    return [*_load().values(), *_extra.values()]


def names() -> tuple[str, ...]:
    return tuple(p.name for p in all_providers())


def declared_names() -> tuple[str, ...]:
    """:func:`names`, without importing the built-in providers' modules."""
    return (*BUILTIN, *_extra)


def sdk_of(name: str) -> str | None:
    """The SDK provider ``name`` needs installed (a module name), without importing a built-in
    provider's module; ``None`` for a name not declared."""
    extra = _extra.get(name)
    return extra.package if extra is not None else _SDKS.get(name)


def get(name: str) -> Provider | None:
    return _load().get(name) or _extra.get(name)


def provider_for(cls: type) -> Provider | None:
    """The provider whose SDK defines ``cls`` or one of its bases (``wrap()`` uses it)."""
    providers = all_providers()
    for klass in cls.__mro__:
        module = getattr(klass, "__module__", "") or ""
        for p in providers:
            if p.owns(module):
                return p
    return None
