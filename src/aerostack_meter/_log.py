"""Rate-limited logging for the library's own problems (never raises, never floods)."""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["log_limited", "log_once", "logger"]

logger = logging.getLogger("aerostack_meter")

_lock = threading.Lock()
_seen: set[str] = set()
_last: dict[str, float] = {}


def log_once(key: str, level: int, msg: str, *args: object, exc_info: bool = False) -> None:
    """Log ``msg`` the first time ``key`` is seen in this process."""
    if key in _seen:
        return
    with _lock:
        if key in _seen:
            return
        _seen.add(key)
    logger.log(level, msg, *args, exc_info=exc_info)


def log_limited(key: str, level: int, msg: str, *args: object, every: float = 60.0,
                exc_info: bool = False) -> None:
    """Log ``msg`` at most once per ``every`` seconds for ``key``."""
    now = time.monotonic()
    last = _last.get(key)
    if last is not None and now - last < every:
        return
    _last[key] = now
    logger.log(level, msg, *args, exc_info=exc_info)


def _reset_for_tests() -> None:
    with _lock:
        _seen.clear()
        _last.clear()
