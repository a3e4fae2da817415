"""Usage the billing API refused for lack of funds (HTTP 402, or an insufficient-funds code).

The provider was paid, so this usage is never dropped: it is kept as a dead letter in the state
directory (listed by ``aerostack-meter report --dead-letters``, resent by ``aerostack-meter drain
--retry-dead`` once the wallet is topped up), counted in ``stats().rejected``, and handed to the
app's ``on_rejected(event, reason)`` callback, which may top up the wallet, suspend the consumer or
bill the usage some other way (docs/budgets.md). The ``rejected`` table of the local ledger file
holds it too when a ledger path is configured (``ledger_path`` / ``AEROSTACK_METER_LEDGER``), or
when there is no state directory. Kept nowhere (every write failed): counted in
``stats().dropped["rejected_unkept"]`` and logged.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from ._config import DEFAULT_LEDGER, Settings
from ._events import UsageEvent
from ._forkguard import no_fork
from ._log import log_limited, log_once
from ._stats import Counters
from .sinks import Batch, SendResult

__all__ = ["INSUFFICIENT_FUNDS", "REJECTED_SCHEMA", "RejectedStore"]

INSUFFICIENT_FUNDS = "insufficient_funds"

REJECTED_SCHEMA = """
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    consumer_id TEXT NOT NULL,
    api_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    units INTEGER NOT NULL,
    events INTEGER NOT NULL,
    reason TEXT NOT NULL,
    idempotency_key TEXT
);
"""


class RejectedStore:
    """Keeps refused batches (SQLite, created on first use) and tells the app."""

    def __init__(self, settings: Settings, counters: Counters) -> None:
        self.settings = settings
        self.counters = counters
        self._lock = threading.Lock()

    def keep(self, batch: Batch, result: SendResult, dead_lettered: bool = False) -> None:
        """Never raises: a failure to keep is logged and counted. ``dead_lettered``: the batch is
        in the dead-letter store already."""
        self.counters.add("rejected", batch.n_events)
        reason = result.message or INSUFFICIENT_FUNDS
        kept = dead_lettered
        if not dead_lettered or self.settings.ledger_path != DEFAULT_LEDGER:
            kept = self._into_ledger(batch, reason) or kept
        if kept:
            log_once("insufficient_funds", logging.WARNING,
                     "aerostack_meter: the billing API refused usage for lack of funds (%s); it is kept%s "
                     "and passed to on_rejected", result.message or "402",
                     " as a dead letter (`aerostack-meter drain --retry-dead` resends it after a top-up)"
                     if dead_lettered else " in the local ledger's rejected table")
        else:
            self.counters.drop("rejected_unkept", batch.n_events)
            log_limited("rejected_unkept", logging.ERROR,
                        "aerostack_meter: the billing API refused usage for lack of funds (%s) and it "
                        "could not be kept anywhere (no writable state directory or ledger)",
                        result.message or "402")
        hook = self.settings.on_rejected
        if hook is None:
            return
        event = UsageEvent(batch.consumer_id, batch.api_id, batch.metric, batch.units,
                           estimated=batch.estimated, event_id=batch.idempotency_key)
        try:
            hook(event, reason)
        except Exception as exc:
            self.counters.add("internal_errors")
            log_limited("on_rejected", logging.ERROR, "aerostack_meter: on_rejected raised %s",
                        type(exc).__name__)

    def _into_ledger(self, batch: Batch, reason: str) -> bool:
        # Imported on the first refusal only (a meter with an API key needs no SQLite), on a
        # delivery thread: a fork meanwhile would leave the child an import lock with no owner.
        with no_fork():
            import sqlite3

            from ._sqlite import connect

        try:
            with self._lock:
                path = self.settings.ledger_path
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                conn = connect(path, timeout=30.0, synchronous="NORMAL")
                try:
                    conn.executescript(REJECTED_SCHEMA)
                    conn.execute(
                        "INSERT INTO rejected (ts, consumer_id, api_id, metric, units, events, reason,"
                        " idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (time.time(), batch.consumer_id, batch.api_id, batch.metric, batch.units,
                         batch.n_events, reason, batch.idempotency_key))
                finally:
                    conn.close()
        except (sqlite3.Error, OSError):
            return False
        return True
