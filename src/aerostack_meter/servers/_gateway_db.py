"""SQLite storage of the gateway emulator: the raw billing log and the wallets.

One connection (WAL, `synchronous=NORMAL`) guarded by a lock. The emulator only touches it from
the server's event-loop thread, so the lock is uncontended; it is there for direct callers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._sqlite import connect
from .._usage_query import UsageStore

__all__ = ["GatewayDB", "LogOutcome"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS billing_log (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    consumer_id TEXT NOT NULL,
    api_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    units INTEGER NOT NULL,
    idempotency_key TEXT,
    status INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS billing_log_idem ON billing_log(idempotency_key);
CREATE TABLE IF NOT EXISTS wallets (
    consumer_id TEXT PRIMARY KEY,
    balance INTEGER NOT NULL
);
"""

_GROUPINGS: dict[str, tuple[str, ...]] = {
    "": ("consumer_id", "api_id", "metric"),
    "consumer": ("consumer_id",),
    "api": ("api_id",),
    "metric": ("metric",),
}
_COLUMN_KEYS = {"consumer_id": "consumerId", "api_id": "apiId", "metric": "metric"}

EmptyWalletPolicy = Literal["reject", "allow"]


@dataclass(frozen=True)
class LogOutcome:
    """What `GatewayDB.log` did: `logged` is False only when an empty wallet rejected it."""

    logged: bool
    balance: int | None


class GatewayDB:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = connect(path, timeout=5.0, synchronous="OFF")
        self._conn.executescript(_SCHEMA)
        self._usage: UsageStore | None = None
        self._wallet_cache: dict[str, int] = {
            row[0]: int(row[1])
            for row in self._conn.execute("SELECT consumer_id, balance FROM wallets")
        }

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- writes -------------------------------------------------------------------------------

    def log(
        self,
        *,
        consumer_id: str,
        api_id: str,
        metric: str,
        units: int,
        idempotency_key: str | None,
        on_empty_wallet: EmptyWalletPolicy,
        status: int = 200,
    ) -> LogOutcome:
        """Record one accepted event, debiting the consumer's wallet if it has one."""
        with self._lock:
            balance = self._wallet_cache.get(consumer_id)
            conn = self._conn
            if balance is not None:
                if units > balance and on_empty_wallet == "reject":
                    return LogOutcome(logged=False, balance=balance)
                balance -= units
            conn.execute("BEGIN")
            try:
                conn.execute(
                    "INSERT INTO billing_log (ts, consumer_id, api_id, metric, units,"
                    " idempotency_key, status) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (time.time(), consumer_id, api_id, metric, units, idempotency_key, status),
                )
                if balance is not None:
                    conn.execute(
                        "UPDATE wallets SET balance = ? WHERE consumer_id = ?",
                        (balance, consumer_id),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if balance is not None:
                self._wallet_cache[consumer_id] = balance
            return LogOutcome(logged=True, balance=balance)

    def set_wallets(self, wallets: Mapping[str, int]) -> None:
        with self._lock:
            self._conn.executemany(
                "INSERT INTO wallets (consumer_id, balance) VALUES (?, ?)"
                " ON CONFLICT(consumer_id) DO UPDATE SET balance = excluded.balance",
                [(k, int(v)) for k, v in wallets.items()],
            )
            self._wallet_cache.update({k: int(v) for k, v in wallets.items()})

    def reset_log(self) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM billing_log")

    # -- reads --------------------------------------------------------------------------------

    def totals(self, by: str = "") -> list[dict[str, Any]]:
        columns = _GROUPINGS[by]
        cols = ", ".join(columns)
        sql = (
            f"SELECT {cols}, SUM(units), COUNT(*) FROM billing_log GROUP BY {cols} ORDER BY {cols}"
        )
        with self._lock:
            rows = self._conn.execute(sql).fetchall()
        out: list[dict[str, Any]] = []
        for row in rows:
            item: dict[str, Any] = {_COLUMN_KEYS[c]: row[i] for i, c in enumerate(columns)}
            item["units"] = int(row[-2])
            item["requests"] = int(row[-1])
            out.append(item)
        return out

    def usage_store(self) -> UsageStore:
        """Aggregates over the billing log (the dashboard's views), sharing this connection."""
        if self._usage is None:
            self._usage = UsageStore(self._conn, "billing_log", lock=self._lock)
        return self._usage

    def log_rows(self, *, limit: int | None = None, after_id: int = 0) -> list[dict[str, Any]]:
        sql = (
            "SELECT id, ts, consumer_id, api_id, metric, units, idempotency_key, status"
            " FROM billing_log WHERE id > ? ORDER BY id"
        )
        params: tuple[int, ...] = (after_id,)
        if limit is not None:
            sql += " LIMIT ?"
            params = (after_id, limit)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [
            {
                "id": r[0],
                "ts": r[1],
                "consumerId": r[2],
                "apiId": r[3],
                "metric": r[4],
                "units": r[5],
                "idempotencyKey": r[6],
                "status": r[7],
            }
            for r in rows
        ]

    def duplicates(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT idempotency_key, COUNT(*), SUM(units) FROM billing_log"
                " WHERE idempotency_key IS NOT NULL"
                " GROUP BY idempotency_key HAVING COUNT(*) > 1 ORDER BY idempotency_key"
            ).fetchall()
        return [{"idempotencyKey": r[0], "count": int(r[1]), "units": int(r[2])} for r in rows]

    def wallets(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._wallet_cache.items()))
