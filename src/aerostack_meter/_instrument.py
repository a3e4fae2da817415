"""Which providers ``init()`` instruments.

An SDK that is already imported is patched at once; one that is installed but not imported yet is
patched by a post-import hook the moment the application imports it, so enabling the meter never
imports an SDK the application does not use (``import anthropic`` alone can take a second or more).
A missing SDK is quietly skipped (neither its provider's module nor wrapt is imported for it);
one requested by name is warned about.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import threading
from types import ModuleType
from typing import TYPE_CHECKING

from . import providers as registry
from ._log import logger

if TYPE_CHECKING:
    from .providers._base import Provider

__all__ = ["instrument", "uninstrument"]

_lock = threading.RLock()
_wanted: dict[str, bool] = {}  # provider name -> armed
_hooked: set[str] = set()  # SDK packages with a post-import hook registered


def _patch(provider: Provider) -> bool:
    try:
        provider.patch()
        return True
    except Exception:
        logger.log(logging.ERROR, "aerostack_meter: could not instrument %s", provider.name, exc_info=True)
        return False


def _on_import(module: ModuleType) -> None:
    with _lock:
        for provider in registry.all_providers():
            if provider.package == module.__name__ and _wanted.get(provider.name):
                _patch(provider)


def _installed(package: str) -> bool:
    if package in sys.modules:
        return True
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a dotted name whose parent is missing
        return False


def instrument(which: bool | tuple[str, ...] = True) -> list[str]:
    """Patch the installed SDKs (every registered provider for ``True``), now or when they are
    imported. Returns the providers instrumented or armed. Calling it again is a no-op."""
    if which is False:
        return []
    wanted = registry.declared_names() if which is True else which
    done = []
    with _lock:
        for name in wanted:
            sdk = registry.sdk_of(name)
            if sdk is not None and not _installed(sdk):
                if which is not True:
                    logger.warning("aerostack_meter: %s is not installed; not instrumented", sdk)
                continue
            provider = registry.get(name)
            if provider is None:
                logger.warning("aerostack_meter: no provider named %r; known: %s", name,
                               ", ".join(registry.names()))
                continue
            package = provider.package
            if not _installed(package):
                if which is not True:
                    logger.warning("aerostack_meter: %s is not installed; not instrumented", package)
                continue
            _wanted[name] = True
            if package in sys.modules:
                if _patch(provider):
                    done.append(name)
            else:
                if package not in _hooked:
                    import wrapt  # here, not at the top: init() without any SDK needs no wrapt

                    wrapt.register_post_import_hook(_on_import, package)
                    _hooked.add(package)
                done.append(name)
    return done


def uninstrument() -> None:
    """Restore every patched SDK method exactly (only our own wrappers are removed), and disarm
    the hooks of SDKs not imported yet."""
    with _lock:
        for provider in registry.all_providers():
            _wanted[provider.name] = False
            if provider.patched or provider.package in sys.modules:
                provider.unpatch()
