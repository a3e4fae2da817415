"""The durable spool: usage journaled in SQLite (WAL) before the call returns, deleted only after
the billing API accepted it, replayed by the next process with the same ``Idempotency-Key``s.

Tables: ``events`` (recorded, not yet in a request; owned by the process that recorded them),
``batches`` (a formed request with its idempotency key, owned by one live process) and
``owners`` (one row per live process, each holding an ``flock`` on its own lock file for as long
as it lives). A process adopts the rows of an owner whose lock it can take: that owner is dead
(``kill -9`` releases the lock). Only the owner of a row sends it, so concurrent processes on one
spool never send an event twice. A batch is marked ``inflight`` before each attempt and unmarked
when the attempt failed: an adopted batch still marked may have been delivered before its owner
died, so its replay is an ambiguous retry (counted as one).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from . import _sqlite
from ._events import UsageEvent, event_identity, idempotency_key
from .sinks import Batch

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no adoption by lock, only by our own restart
    fcntl = None  # type: ignore[assignment]

__all__ = ["Spool"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, owner TEXT NOT NULL, consumer_id TEXT NOT NULL, api_id TEXT NOT NULL,
    metric TEXT NOT NULL, units INTEGER NOT NULL, event_id TEXT NOT NULL, estimated INTEGER NOT NULL,
    ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS events_owner ON events (owner);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY, owner TEXT NOT NULL, consumer_id TEXT NOT NULL, api_id TEXT NOT NULL,
    metric TEXT NOT NULL, units INTEGER NOT NULL, n_events INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    ambiguous INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0,
    inflight INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS batches_owner ON batches (owner, next_at);
CREATE TABLE IF NOT EXISTS owners (token TEXT PRIMARY KEY, pid INTEGER NOT NULL, started REAL NOT NULL);
"""


class Spool:
    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = os.path.abspath(path)
        self.max_bytes = max_bytes
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._become_owner()

    # -- ownership -------------------------------------------------------------------------
    def _become_owner(self) -> None:
        self.pid = os.getpid()
        self.token = uuid.uuid4().hex
        self._local = threading.local()
        self._lock_fd: int | None = None
        self.adopted_in_flight = 0  # adopted batches that may have been delivered already
        if fcntl is not None:
            fd = os.open(self._lock_path(self.token), os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._lock_fd = fd
        conn = self._conn()
        conn.execute("INSERT OR REPLACE INTO owners (token, pid, started) VALUES (?, ?, ?)",
                     (self.token, self.pid, time.time()))

    def _lock_path(self, token: str) -> str:
        return f"{self.path}.owner-{token}.lock"

    def after_fork(self) -> None:
        """In a forked child: new identity and connections; the parent keeps its rows and lock."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # the parent's open file description keeps its lock
        self._become_owner()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = _sqlite.connect(self.path, timeout=30.0, synchronous="NORMAL")
            conn.executescript(_SCHEMA)
            if "inflight" not in {r[1] for r in conn.execute("PRAGMA table_info(batches)")}:
                with contextlib.suppress(sqlite3.OperationalError):  # another process added it
                    conn.execute("ALTER TABLE batches ADD COLUMN inflight INTEGER NOT NULL DEFAULT 0")
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def adopt(self) -> int:
        """Take over the rows of dead owners. Returns the number of batches and events adopted."""
        if fcntl is None:
            return 0
        conn = self._conn()
        adopted = 0
        for (token,) in conn.execute("SELECT token FROM owners WHERE token != ?", (self.token,)).fetchall():
            path = self._lock_path(token)
            try:
                fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # alive
            try:
                conn.execute("BEGIN IMMEDIATE")
                in_flight = conn.execute("SELECT COUNT(*) FROM batches WHERE owner=? AND inflight=1",
                                         (token,)).fetchone()[0]
                adopted += conn.execute(
                    "UPDATE batches SET owner=?, next_at=0, attempts=attempts+inflight,"
                    " ambiguous=ambiguous+inflight, inflight=0 WHERE owner=?",
                    (self.token, token)).rowcount
                adopted += conn.execute("UPDATE events SET owner=? WHERE owner=?", (self.token, token)).rowcount
                conn.execute("DELETE FROM owners WHERE token=?", (token,))
                conn.execute("COMMIT")
                self.adopted_in_flight += int(in_flight)
                with contextlib.suppress(OSError):
                    os.unlink(path)
            except sqlite3.Error:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            finally:
                os.close(fd)
        return adopted

    # -- caller side ------------------------------------------------------------------------
    def full(self) -> bool:
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(self.path + suffix).st_size
        return size > self.max_bytes

    def append(self, events: Iterable[UsageEvent]) -> int:
        rows = [(self.token, e.consumer_id, e.api_id, e.metric, e.units, event_identity(e),
                 int(e.estimated), e.timestamp) for e in events]
        if rows:
            self._conn().executemany(
                "INSERT INTO events (owner, consumer_id, api_id, metric, units, event_id, estimated, ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    # -- reporter side ----------------------------------------------------------------------
    def claim(self, coalesce: bool, limit: int = 50_000, hold: bool = False) -> int:
        """Turn our recorded events into batches (one per key, or one per event). Returns batches made.

        ``hold``: leave the events of a key whose batch failed before (and waits to retry).
        """
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            held = hold and conn.execute("SELECT 1 FROM batches WHERE owner=? AND attempts>0 LIMIT 1",
                                         (self.token,)).fetchone() is not None
            if held:
                rows = conn.execute(
                    "SELECT id, consumer_id, api_id, metric, units, event_id FROM events e"
                    " WHERE owner=? AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.owner=e.owner"
                    " AND b.attempts>0 AND b.consumer_id=e.consumer_id AND b.api_id=e.api_id"
                    " AND b.metric=e.metric) ORDER BY id LIMIT ?", (self.token, limit)).fetchall()
            else:
                rows = conn.execute(
                    "SELECT id, consumer_id, api_id, metric, units, event_id FROM events WHERE owner=?"
                    " ORDER BY id LIMIT ?", (self.token, limit)).fetchall()
            groups: dict[Any, list[Any]] = {}
            for row in rows:
                key = (row[1], row[2], row[3]) if coalesce else (row[1], row[2], row[3], row[0])
                groups.setdefault(key, []).append(row)
            for key, members in groups.items():
                k3 = (key[0], key[1], key[2])
                conn.execute(
                    "INSERT INTO batches (owner, consumer_id, api_id, metric, units, n_events, idempotency_key)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (self.token, *k3, sum(m[4] for m in members), len(members),
                     idempotency_key(k3, [m[5] for m in members])))
            if rows and held:
                conn.executemany("DELETE FROM events WHERE id=?", [(r[0],) for r in rows])
            elif rows:
                conn.execute("DELETE FROM events WHERE owner=? AND id<=?", (self.token, rows[-1][0]))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(groups)

    def due(self, now: float, limit: int, exclude: set[int]) -> list[Batch]:
        rows = self._conn().execute(
            "SELECT id, consumer_id, api_id, metric, units, n_events, idempotency_key, attempts, ambiguous"
            " FROM batches WHERE owner=? AND next_at<=? ORDER BY id LIMIT ?",
            (self.token, now, limit + len(exclude))).fetchall()
        out = []
        for r in rows:
            if r[0] in exclude:
                continue
            out.append(Batch(r[1], r[2], r[3], r[4], r[5], r[6], seq=r[0], attempts=r[7],
                             ambiguous_attempts=r[8], spool_id=r[0]))
            if len(out) >= limit:
                break
        return out

    def next_due(self) -> float | None:
        row = self._conn().execute("SELECT MIN(next_at) FROM batches WHERE owner=?", (self.token,)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def sending(self, batches: list[Batch]) -> None:
        """Mark batches as being attempted: from now on they may be delivered."""
        if batches:
            self._conn().executemany("UPDATE batches SET inflight=1 WHERE id=?",
                                     [(b.spool_id,) for b in batches])

    def done(self, batch: Batch) -> None:
        self._conn().execute("DELETE FROM batches WHERE id=?", (batch.spool_id,))

    def defer(self, batch: Batch, next_at: float) -> None:
        self._conn().execute("UPDATE batches SET attempts=?, ambiguous=?, next_at=?, inflight=0 WHERE id=?",
                             (batch.attempts, batch.ambiguous_attempts, next_at, batch.spool_id))

    def pending(self) -> tuple[int, int]:
        """(events, batches) owned by this process."""
        conn = self._conn()
        events = conn.execute("SELECT COUNT(*) FROM events WHERE owner=?", (self.token,)).fetchone()[0]
        batches = conn.execute("SELECT COALESCE(SUM(n_events), 0) FROM batches WHERE owner=?",
                               (self.token,)).fetchone()[0]
        return int(events), int(batches)

    def count(self) -> int:
        """Every event in the file, whoever owns it."""
        conn = self._conn()
        e = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        b = conn.execute("SELECT COALESCE(SUM(n_events), 0) FROM batches").fetchone()[0]
        return int(e) + int(b)

    def close(self) -> None:
        """Release our ownership; rows left behind are adopted by the next process."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            self._local.conn = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # releases the lock: our rows become adoptable
            self._lock_fd = None
