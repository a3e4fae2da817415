"""Process events around a meter: interpreter exit, ``os.fork()``, SIGTERM.

* exit: an ``atexit`` hook flushes within ``exit_timeout``; what does not fit stays on disk.
* fork: the child gets fresh delivery state and its own journal (a pid check on every record also
  catches servers that fork without running Python's fork hooks).
* SIGTERM (``handle_sigterm=True``): the handler takes no lock and does no I/O: it asks the
  delivery loop to flush now, then chains to the previous handler (or the default action). It
  does not close the meter, so usage recorded during a graceful shutdown is kept and delivered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import weakref
from types import FrameType
from typing import TYPE_CHECKING

from ._log import log_once

if TYPE_CHECKING:
    from ._meter import Meter

__all__ = ["exiting", "register"]

#: set when the first exit hook runs: from then on no delivery thread is started (a thread started
#: during interpreter exit may never run); durable usage is journaled for the next start instead
exiting = False


def register(meter: Meter) -> None:
    import atexit

    ref = weakref.ref(meter)
    atexit.register(_exit_hook, ref)
    if hasattr(os, "register_at_fork"):
        def child() -> None:
            m = ref()
            if m is not None:
                m._forked()

        os.register_at_fork(after_in_child=child)
    if meter.settings.handle_sigterm:
        _install_sigterm(ref)


def _exit_hook(ref: weakref.ref[Meter]) -> None:
    global exiting
    exiting = True
    meter = ref()
    if meter is not None and not meter._closed:
        with contextlib.suppress(Exception):  # never fail interpreter exit
            meter.shutdown()


def _install_sigterm(ref: weakref.ref[Meter]) -> None:
    if threading.current_thread() is not threading.main_thread():
        log_once("sigterm_thread", logging.WARNING,
                 "aerostack_meter: handle_sigterm needs init() on the main thread; not installed")
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> None:
        meter = ref()
        if meter is not None:
            meter._reporter.flush_requested = True  # a plain store: no lock, safe in a handler
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)
