"""Hold off ``os.fork()`` while a background thread of ours does first-time work.

A first import takes that module's import lock, and the first delivery imports lazily (``httpx``
imports ``httpcore`` when it builds its first transport; the first connection loads the ``idna``
codec; the price table is imported on first use). A process forked while another of its threads
holds such a lock gives the child a lock whose owner does not exist there: the child's first use of
that module waits forever. Servers fork at any time (gunicorn ``--preload``, ``multiprocessing``)
and our delivery threads start on the first metered call, so their first-time work runs inside
:func:`no_fork`: a fork in another thread waits for it to end (once per process, usually
milliseconds). The wait is bounded by :data:`MAX_HOLD`: a fork is never held up longer than that
(a first send to an unreachable gateway can take its connect timeout).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["MAX_HOLD", "no_fork"]

#: seconds a fork waits at most for first-time work in progress
MAX_HOLD = 3.0

_lock = threading.RLock()
_held = threading.local()


@contextmanager
def no_fork() -> Iterator[None]:
    """Run the body with ``os.fork()`` held off (up to :data:`MAX_HOLD`) in other threads."""
    with _lock:
        yield


def _before() -> None:
    _held.value = _lock.acquire(timeout=MAX_HOLD)


def _after_in_parent() -> None:
    if getattr(_held, "value", False):
        _held.value = False
        _lock.release()


def _after_in_child() -> None:
    global _lock
    _lock = threading.RLock()  # the one thread left starts with it free
    _held.value = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child)
