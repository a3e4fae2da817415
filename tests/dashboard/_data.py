"""A ledger with known, realistic-looking data for the dashboard tests (and its screenshot)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from aerostack_meter import _sqlite
from aerostack_meter._usage_query import ensure_rollup
from aerostack_meter.sinks._ledger import LEDGER_SCHEMA

CONSUMERS = ("usr_alice", "usr_bob", "usr_carol", "usr_dave", "usr_erin")
APIS = ("chat-api", "search-api")
METRICS = ("input_tokens", "output_tokens")


def new_ledger(path: Path) -> sqlite3.Connection:
    """An empty ledger exactly as the LedgerSink makes it (schema, rollup and its trigger)."""
    conn = _sqlite.connect(str(path))
    conn.executescript(LEDGER_SCHEMA)
    ensure_rollup(conn)
    return conn


def insert(conn: sqlite3.Connection, rows: list[tuple[float, str, str, str, int, int, int]]) -> None:
    """Rows of (ts, consumer, api, metric, units, events, estimated_units)."""
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO ledger (ts, consumer_id, api_id, metric, units, events, estimated_units)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute("COMMIT")


def sample_rows(now: float, n: int = 400, *, seed: int = 7, span: float = 86400.0,
                cost: bool = True) -> list[tuple[float, str, str, str, int, int, int]]:
    """`n` deliveries over the `span` seconds before `now`: five consumers with different
    weights, two APIs, input/output tokens, some estimated units and (with `cost`) the cost
    metric on the chat API."""
    rnd = random.Random(seed)
    weights = (8, 4, 2, 1, 0.5)
    rows: list[tuple[float, str, str, str, int, int, int]] = []
    for _ in range(n):
        ts = now - rnd.random() * span
        consumer = rnd.choices(CONSUMERS, weights)[0]
        api = rnd.choices(APIS, (3, 1))[0]
        events = rnd.randint(1, 4)
        for metric in METRICS:
            units = events * (rnd.randint(200, 900) if metric == "input_tokens" else rnd.randint(20, 300))
            estimated = units if rnd.random() < 0.04 else 0
            rows.append((ts, consumer, api, metric, units, events, estimated))
        if cost and api == "chat-api":
            rows.append((ts, consumer, api, "cost_micro_usd", events * rnd.randint(150, 1200), events, 0))
    return sorted(rows)  # a ledger is appended to in time order


def make_ledger(path: Path, now: float, **kwargs: object) -> Path:
    conn = new_ledger(path)
    try:
        insert(conn, sample_rows(now, **kwargs))  # type: ignore[arg-type]
    finally:
        conn.close()
    return path


def ledger_sum(path: Path, where: str = "", params: tuple[object, ...] = ()) -> int:
    """The ledger's own total, straight from its raw rows (what the dashboard must match)."""
    conn = sqlite3.connect(path)
    try:
        value = conn.execute(f"SELECT COALESCE(SUM(units), 0) FROM ledger {where}", params).fetchone()[0]
    finally:
        conn.close()
    return int(value)
