"""Which providers ``init()`` instruments; a missing SDK is quietly skipped."""

from __future__ import annotations

import importlib
import logging
import threading

from ._log import logger

__all__ = ["PROVIDERS", "instrument", "uninstrument"]

PROVIDERS = ("openai", "anthropic")
_lock = threading.Lock()


def instrument(which: bool | tuple[str, ...] = True) -> list[str]:
    """Patch the installed SDKs (all known ones for ``True``). Returns the providers patched."""
    if which is False:
        return []
    names = PROVIDERS if which is True else which
    done = []
    with _lock:
        for name in names:
            try:
                importlib.import_module(name)
            except ImportError:
                if which is not True:  # explicitly requested: say so
                    logger.warning("aerostack_meter: %s is not installed; not instrumented", name)
                continue
            try:
                mod = importlib.import_module(f"aerostack_meter.providers.{name}")
            except ImportError:
                logger.debug("no provider module for %s", name, exc_info=True)
                continue
            try:
                mod.PROVIDER.patch()
                done.append(name)
            except Exception:
                logger.log(logging.ERROR, "aerostack_meter: could not instrument %s", name, exc_info=True)
    return done


def uninstrument() -> None:
    """Restore every patched SDK method exactly (only our own wrappers are removed)."""
    with _lock:
        for name in PROVIDERS:
            try:
                mod = importlib.import_module(f"aerostack_meter.providers.{name}")
            except ImportError:
                continue
            mod.PROVIDER.unpatch()
