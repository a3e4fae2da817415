"""Which providers ``init()`` instruments.

An SDK that is already imported is patched at once; one that is installed but not imported yet is
patched by a post-import hook the moment the application imports it, so enabling the meter never
imports an SDK the application does not use (``import anthropic`` alone can take a second or more).
A missing SDK is quietly skipped; one requested by name is warned about.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import threading
from types import ModuleType

import wrapt

from ._log import logger

__all__ = ["PROVIDERS", "instrument", "uninstrument"]

PROVIDERS = ("openai", "anthropic")
_lock = threading.RLock()
_wanted: dict[str, bool] = {}
_hooked: set[str] = set()


def _provider(name: str) -> object | None:
    try:
        provider: object = importlib.import_module(f"aerostack_meter.providers.{name}").PROVIDER
        return provider
    except ImportError:
        logger.debug("no provider module for %s", name, exc_info=True)
        return None


def _patch(name: str) -> bool:
    provider = _provider(name)
    if provider is None:
        return False
    try:
        provider.patch()  # type: ignore[attr-defined]
        return True
    except Exception:
        logger.log(logging.ERROR, "aerostack_meter: could not instrument %s", name, exc_info=True)
        return False


def _on_import(module: ModuleType) -> None:
    name = module.__name__
    with _lock:
        if _wanted.get(name):
            _patch(name)


def instrument(which: bool | tuple[str, ...] = True) -> list[str]:
    """Patch the installed SDKs (all known ones for ``True``), now or when they are imported.

    Returns the providers instrumented or armed. Calling it again is a no-op.
    """
    if which is False:
        return []
    names = PROVIDERS if which is True else which
    done = []
    with _lock:
        for name in names:
            if name not in sys.modules and importlib.util.find_spec(name) is None:
                if which is not True:
                    logger.warning("aerostack_meter: %s is not installed; not instrumented", name)
                continue
            _wanted[name] = True
            if name in sys.modules:
                if _patch(name):
                    done.append(name)
            else:
                if name not in _hooked:
                    wrapt.register_post_import_hook(_on_import, name)
                    _hooked.add(name)
                done.append(name)
    return done


def uninstrument() -> None:
    """Restore every patched SDK method exactly (only our own wrappers are removed), and disarm
    the hooks of SDKs not imported yet."""
    with _lock:
        for name in PROVIDERS:
            _wanted[name] = False
            if name in sys.modules:
                provider = _provider(name)
                if provider is not None:
                    provider.unpatch()  # type: ignore[attr-defined]
