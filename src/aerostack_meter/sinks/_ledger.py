"""The local SQLite ledger: the embedded default sink when no API key is configured."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

from .._sqlite import connect
from .._usage_query import ensure_rollup
from ._base import OK, Batch, SendResult

__all__ = ["LEDGER_SCHEMA", "LedgerSink"]

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    consumer_id TEXT NOT NULL,
    api_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    units INTEGER NOT NULL,
    idempotency_key TEXT,
    events INTEGER NOT NULL DEFAULT 1,
    estimated_units INTEGER NOT NULL DEFAULT 0,
    price_table TEXT
);
CREATE INDEX IF NOT EXISTS ledger_key ON ledger (consumer_id, api_id, metric);
"""


class LedgerSink:
    """Appends one row per delivered request to an SQLite file (WAL; several processes may share it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.destination = "ledger:" + os.path.abspath(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
            conn = connect(self.path, timeout=30.0, synchronous="NORMAL")
            conn.executescript(LEDGER_SCHEMA)
            # the dashboard's per-minute/hour/day rollup, kept by a trigger (an older ledger with
            # rows gets only the estimated_units column here; the dashboard backfills it)
            ensure_rollup(conn, backfill=False)
            self._conn = conn
        return self._conn

    def send(self, batch: Batch) -> SendResult:
        try:
            with self._lock:
                self._connect().execute(
                    "INSERT INTO ledger (ts, consumer_id, api_id, metric, units, idempotency_key,"
                    " events, estimated_units, price_table) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (time.time(), batch.consumer_id, batch.api_id, batch.metric, batch.units,
                     batch.idempotency_key, batch.n_events, batch.estimated_units, batch.price_table),
                )
        except sqlite3.OperationalError as exc:  # locked or busy: worth another try
            return SendResult("retry", reason="ledger_error", message=str(exc))
        except sqlite3.Error as exc:
            return SendResult("fatal", reason="ledger_error", message=str(exc))
        return OK

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def after_fork(self) -> None:
        # An SQLite connection must not cross a fork: drop it unclosed, open a new one on demand.
        self._lock = threading.Lock()
        self._conn = None

    def __repr__(self) -> str:
        return f"LedgerSink({self.path!r})"
