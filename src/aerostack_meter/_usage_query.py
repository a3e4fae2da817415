"""Usage aggregates in SQL, shared by `aerostack-meter report`, the dashboard and the emulator.

A `UsageStore` reads one SQLite table of delivered usage: the local ledger (`ledger`) or a gateway
emulator's database (`billing_log`). Every aggregate is computed by SQLite; Python only shapes the
rows. A ledger keeps a rollup table, `ledger_rollup`, filled by a trigger on every insert with one
row per (grain, bucket, consumer, API, metric) for the minute, hour and day grains, so that a view
over any range reads at most a few thousand rows whatever the ledger's size. A table without the
rollup (a read-only ledger, an emulator's log) is aggregated from its raw rows, with the same SQL.

Time: `ts` is Unix seconds (UTC). Buckets are aligned to multiples of the grain (60, 3600 or
86400 s since the epoch, so days are UTC days); a range's start is floored to its grain, so the
totals of a view always equal the sum of its buckets. Units are the integers the billing API was
sent; `estimated_units` is the part of them that came from an estimate (an early-ended stream),
`events` counts usage events and `requests` delivered rows (billing requests).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _sqlite
from ._cost import COST_METRIC  # integer micro-USD, what metrics="cost" bills

__all__ = [
    "COST_METRIC",
    "GRAINS",
    "LEDGER_ROLLUP_SCHEMA",
    "RANGES",
    "VIEWS",
    "UsageFilter",
    "UsageStore",
    "choose_grain",
    "ensure_rollup",
    "parse_filter",
    "usage_view",
]

GRAINS: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}
"""Bucket sizes in seconds."""

RANGES: dict[str, int] = {
    "15m": 900,
    "1h": 3600,
    "6h": 6 * 3600,
    "24h": 86400,
    "7d": 7 * 86400,
    "30d": 30 * 86400,
    "90d": 90 * 86400,
}
"""Named ranges ending now (`all` means every row)."""


_MAX_SERIES = 12

_ROLLUP_TABLE = """
CREATE TABLE IF NOT EXISTS ledger_rollup (
    grain INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    consumer_id TEXT NOT NULL,
    api_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    units INTEGER NOT NULL,
    events INTEGER NOT NULL,
    estimated_units INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    PRIMARY KEY (grain, bucket, consumer_id, api_id, metric)
) WITHOUT ROWID
"""
_ROLLUP_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS ledger_rollup_insert AFTER INSERT ON ledger BEGIN
    INSERT INTO ledger_rollup
        SELECT g.grain, CAST(NEW.ts / g.grain AS INTEGER) * g.grain, NEW.consumer_id, NEW.api_id,
               NEW.metric, NEW.units, NEW.events, NEW.estimated_units, 1
        FROM (SELECT 60 AS grain UNION ALL SELECT 3600 UNION ALL SELECT 86400) AS g WHERE 1
        ON CONFLICT DO UPDATE SET units = units + excluded.units, events = events + excluded.events,
            estimated_units = estimated_units + excluded.estimated_units,
            requests = requests + 1;
END
"""
_KEYS_TABLE = """
CREATE TABLE IF NOT EXISTS ledger_keys (
    consumer_id TEXT NOT NULL,
    api_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    PRIMARY KEY (consumer_id, api_id, metric)
) WITHOUT ROWID
"""
_KEYS_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS ledger_keys_insert AFTER INSERT ON ledger BEGIN
    INSERT OR IGNORE INTO ledger_keys VALUES (NEW.consumer_id, NEW.api_id, NEW.metric);
END
"""
LEDGER_ROLLUP_SCHEMA = ";".join((_ROLLUP_TABLE, _ROLLUP_TRIGGER, _KEYS_TABLE, _KEYS_TRIGGER)) + ";"
"""The rollup table, the table of (consumer, API, metric) keys, and the triggers that keep them
(`ensure_rollup` creates and backfills them)."""

_BACKFILL = """
INSERT INTO ledger_rollup
    SELECT g.grain, CAST(l.ts / g.grain AS INTEGER) * g.grain AS bucket, l.consumer_id, l.api_id,
           l.metric, SUM(l.units), SUM(l.events), SUM(l.estimated_units), COUNT(*)
    FROM ledger AS l, (SELECT 60 AS grain UNION ALL SELECT 3600 UNION ALL SELECT 86400) AS g
    GROUP BY g.grain, bucket, l.consumer_id, l.api_id, l.metric
"""


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _has_table(conn: sqlite3.Connection, name: str, kind: str = "table") -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = ? AND name = ?", (kind, name)
    ).fetchone()
    return row is not None


def ensure_rollup(conn: sqlite3.Connection, *, backfill: bool = True) -> bool:
    """Bring a ledger up to date (writes): add `estimated_units` and `price_table` if missing,
    create the rollup and its trigger, and backfill the rollup from the existing rows, in one
    transaction. Returns whether the ledger has its rollup afterwards.

    With `backfill=False` (the LedgerSink, on the reporter's thread) a ledger that already holds
    rows and has no rollup only gets the column: its backfill is left to the dashboard, which
    does it once when it first opens the file (it takes minutes on a 10-million-row ledger).
    Idempotent and safe with concurrent writers (the backfill runs under a write lock, so no row
    is counted twice or missed)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = _columns(conn, "ledger")
        if "estimated_units" not in columns:
            conn.execute(
                "ALTER TABLE ledger ADD COLUMN estimated_units INTEGER NOT NULL DEFAULT 0"
            )
        if "price_table" not in columns:
            conn.execute("ALTER TABLE ledger ADD COLUMN price_table TEXT")
        if _has_table(conn, "ledger_keys_insert", "trigger"):
            conn.execute("COMMIT")
            return True
        if not backfill and conn.execute("SELECT 1 FROM ledger LIMIT 1").fetchone() is not None:
            conn.execute("COMMIT")  # rows and no rollup: leave the backfill to the dashboard
            return False
        if not _has_table(conn, "ledger_rollup_insert", "trigger"):
            conn.execute("DROP TABLE IF EXISTS ledger_rollup")
            conn.execute(_ROLLUP_TABLE)
            conn.execute(_BACKFILL)
            conn.execute(_ROLLUP_TRIGGER)
        conn.execute("DROP TABLE IF EXISTS ledger_keys")
        conn.execute(_KEYS_TABLE)
        conn.execute("INSERT INTO ledger_keys SELECT DISTINCT consumer_id, api_id, metric"
                     " FROM ledger_rollup WHERE grain = 86400")
        conn.execute(_KEYS_TRIGGER)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return True


@dataclass(frozen=True)
class UsageFilter:
    """Which usage a view covers. Empty tuples mean "all"; `since`/`until` are Unix seconds
    (`since` inclusive, `until` exclusive; None means unbounded)."""

    consumers: tuple[str, ...] = ()
    api_ids: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    range: str = "all"
    grain: str | None = None

    now: float | None = None

    @property
    def end(self) -> float:
        """Where the view ends: `until`, else the time it was asked for (`now`)."""
        if self.until is not None:
            return self.until
        return time.time() if self.now is None else self.now


def _split(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(sorted({v.strip() for v in value.split(",") if v.strip()}))


def _time(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    from datetime import datetime, timezone

    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name}: expected Unix seconds or an ISO 8601 time, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def parse_filter(params: Mapping[str, str], *, now: float | None = None) -> UsageFilter:
    """Read a filter from URL-style parameters: `consumer`, `api`, `metric` (comma-separated),
    `range` (one of `RANGES` or `all`), or `since`/`until` (Unix seconds or ISO 8601; they override
    `range`), and `grain` (`minute`/`hour`/`day`; default chosen by the range).

    Raises ValueError for an unknown range or grain or an unreadable time."""
    now = time.time() if now is None else now
    rng = params.get("range") or "all"
    since: float | None = None
    until: float | None = None
    if rng != "all":
        if rng not in RANGES:
            raise ValueError(f"range: expected one of {', '.join([*RANGES, 'all'])}, got {rng!r}")
        since, until = now - RANGES[rng], None
    if params.get("since"):
        since, rng = _time(params["since"], "since"), "custom"
    if params.get("until"):
        until, rng = _time(params["until"], "until"), "custom"
    grain = params.get("grain") or None
    if grain is not None and grain not in GRAINS:
        raise ValueError(f"grain: expected one of {', '.join(GRAINS)}, got {grain!r}")
    return UsageFilter(
        consumers=_split(params.get("consumer")),
        api_ids=_split(params.get("api")),
        metrics=_split(params.get("metric")),
        since=since,
        until=until,
        range=rng,
        grain=grain,
        now=now,
    )


def choose_grain(span_seconds: float) -> str:
    """The bucket size for a range: minutes up to 6 hours, hours up to 7 days, then days
    (at most 360, 168 or N buckets)."""
    if span_seconds <= 6 * 3600:
        return "minute"
    if span_seconds <= 7 * 86400:
        return "hour"
    return "day"


@dataclass
class _Where:
    sql: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def add_in(self, column: str, values: Sequence[str]) -> None:
        if values:
            self.sql.append(f"{column} IN ({','.join('?' * len(values))})")
            self.params.extend(values)

    def text(self) -> str:
        return (" WHERE " + " AND ".join(self.sql)) if self.sql else ""


class UsageStore:
    """Aggregates over one usage table. Thread-safe (one connection behind a lock).

    Use `UsageStore.open(path)` for a file, or `UsageStore(conn, table)` over an open connection.
    `rollup` tells whether the fast rollup table is used.
    """

    def __init__(self, conn: sqlite3.Connection, table: str = "ledger", *, own: bool = False,
                 lock: threading.Lock | None = None) -> None:
        if table not in ("ledger", "billing_log"):
            raise ValueError(f"unknown usage table {table!r}")
        self._conn = conn
        self._own = own
        self._lock = lock if lock is not None else threading.Lock()
        self.table = table
        cols = _columns(conn, table)
        self._events = "events" if "events" in cols else "1"
        self._estimated = "estimated_units" if "estimated_units" in cols else "0"
        self._status = "status < 300" if "status" in cols else ""
        self.rollup = table == "ledger" and _has_table(conn, "ledger_rollup_insert", "trigger")
        self.keys = table == "ledger" and _has_table(conn, "ledger_keys_insert", "trigger")

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, write: bool = True) -> UsageStore:
        """Open a ledger or an emulator database. With `write=True` a ledger is brought up to date
        (`ensure_rollup`) when the file is writable; otherwise it is opened read-only and
        aggregated from the rollup if it has one, else from its raw rows."""
        resolved = Path(path)
        if not resolved.is_file():
            raise FileNotFoundError(f"no ledger at {resolved}")
        conn: sqlite3.Connection | None = None
        if write:
            try:
                conn = _sqlite.connect(str(resolved), timeout=10.0)
                table = _usage_table(conn)
                if table == "ledger":
                    ensure_rollup(conn)
            except sqlite3.OperationalError:  # read-only file or directory: read it as it is
                if conn is not None:
                    conn.close()
                conn = None
        if conn is None:
            conn = sqlite3.connect(
                f"{resolved.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
        try:
            return cls(conn, _usage_table(conn), own=True)
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        if self._own:
            with self._lock:
                self._conn.close()

    # -- the relation every aggregate reads ----------------------------------------------------

    def _relation(self, f: UsageFilter, grain: str) -> tuple[str, list[Any]]:
        """`(sql, params)` of a relation (bucket, consumer_id, api_id, metric, units, events,
        estimated_units, requests) restricted to the filter."""
        g = GRAINS[grain]
        where = _Where()
        if self.rollup:
            where.sql.append("grain = ?")
            where.params.append(g)
            ts = "bucket"
        else:
            if self._status:
                where.sql.append(self._status)
            ts = "ts"
        if f.since is not None:
            where.sql.append(f"{ts} >= ?")
            where.params.append(int(f.since // g) * g)
        if f.until is not None:
            where.sql.append(f"{ts} < ?")
            where.params.append(f.until)
        where.add_in("consumer_id", f.consumers)
        where.add_in("api_id", f.api_ids)
        where.add_in("metric", f.metrics)
        if self.rollup:
            sql = (
                "SELECT bucket, consumer_id, api_id, metric, units, events, estimated_units,"
                f" requests FROM ledger_rollup{where.text()}"
            )
        else:
            sql = (
                f"SELECT CAST(ts / {g} AS INTEGER) * {g} AS bucket, consumer_id, api_id, metric,"
                f" units, {self._events} AS events, {self._estimated} AS estimated_units,"
                f" 1 AS requests FROM {self.table}{where.text()}"
            )
        return sql, where.params

    def _totals_relation(self, f: UsageFilter, grain: str | None = None
                         ) -> tuple[str, list[Any]]:
        """The relation for totals over the view (no per-bucket detail needed): from the rollup,
        a range ending now reads its leading part at its own grain and the rest from coarser
        grains (minutes up to the next hour, hours up to the next day, then days), which covers
        the same rows as the view's buckets while reading a fraction of them."""
        if f.since is None:
            return self._relation(f, "day")
        grain = grain or self.grain_for(f)
        if not self.rollup or f.until is not None or grain == "day":
            return self._relation(f, grain)
        start = int(f.since // GRAINS[grain]) * GRAINS[grain]
        parts: list[str] = []
        params: list[Any] = []
        edges = [start]
        for coarser in ("hour", "day"):
            if GRAINS[coarser] > GRAINS[grain]:
                size = GRAINS[coarser]
                edges.append(max(edges[-1], -(-start // size) * size))
        grains = [g for g in ("minute", "hour", "day") if GRAINS[g] >= GRAINS[grain]]
        for i, g in enumerate(grains):
            lo = edges[i]
            hi = edges[i + 1] if i + 1 < len(edges) else None
            piece = UsageFilter(f.consumers, f.api_ids, f.metrics, since=lo,
                                until=hi, now=f.now)
            sql, p = self._relation(piece, g)
            parts.append(sql)
            params.extend(p)
        return " UNION ALL ".join(parts), params

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def grain_for(self, f: UsageFilter) -> str:
        """The filter's grain, or the one its range calls for (over the data's span for `all`)."""
        if f.grain:
            return f.grain
        if f.since is not None:
            return choose_grain(f.end - f.since)
        first, last = self.span()
        if first is None or last is None:
            return "hour"
        return choose_grain((f.until or last) - first)

    # -- aggregates ----------------------------------------------------------------------------

    def span(self) -> tuple[float | None, float | None]:
        """The first and last delivery times (Unix seconds), or (None, None) when empty."""
        if self.rollup:
            # two queries: SQLite answers a lone MIN or MAX from the index, not both at once
            first = self._query("SELECT MIN(bucket) FROM ledger_rollup WHERE grain = 60", ())[0][0]
            last = self._query("SELECT MAX(bucket) FROM ledger_rollup WHERE grain = 60", ())[0][0]
            return (None, None) if first is None else (float(first), float(last) + 60)
        where = f" WHERE {self._status}" if self._status else ""
        row = self._query(f"SELECT MIN(ts), MAX(ts) FROM {self.table}{where}", ())[0]
        return (None, None) if row[0] is None else (float(row[0]), float(row[1]))

    def totals(self, f: UsageFilter | None = None) -> list[dict[str, Any]]:
        """One row per (consumer, API, metric) ordered by them: `consumer_id`, `api_id`,
        `metric`, `units`, `events`, `estimated_units`, `requests`."""
        f = f or UsageFilter()
        rel, params = self._totals_relation(f)
        rows = self._query(
            "SELECT consumer_id, api_id, metric, SUM(units), SUM(events), SUM(estimated_units),"
            f" SUM(requests) FROM ({rel}) GROUP BY consumer_id, api_id, metric"
            " ORDER BY consumer_id, api_id, metric",
            params,
        )
        return [
            {"consumer_id": r[0], "api_id": r[1], "metric": r[2], "units": int(r[3]),
             "events": int(r[4]), "estimated_units": int(r[5]), "requests": int(r[6])}
            for r in rows
        ]

    def summary(self, f: UsageFilter) -> dict[str, Any]:
        """Totals of the view: `units`, `events`, `requests`, `estimated_units`, `exact_units`,
        `consumers`, per-metric units (`by_metric`), `cost_micro_usd` (None when the cost metric is
        not in the view), the view's `grain` and `bucket_seconds`, and the `filter`."""
        grain = self.grain_for(f)
        rel, params = self._totals_relation(f, grain)
        # one pass: per (metric, consumer), then summed here (at most metrics x consumers rows)
        rows = self._query(
            "SELECT metric, consumer_id, SUM(units), SUM(events), SUM(estimated_units),"
            f" SUM(requests) FROM ({rel}) GROUP BY metric, consumer_id",
            params,
        )
        by_metric: dict[str, int] = {}
        for r in rows:
            by_metric[r[0]] = by_metric.get(r[0], 0) + int(r[2])
        by_metric = dict(sorted(by_metric.items()))
        units = sum(by_metric.values())
        estimated = sum(int(r[4]) for r in rows)
        consumers = len({r[1] for r in rows})
        return {
            "units": units,
            "events": sum(int(r[3]) for r in rows),
            "requests": sum(int(r[5]) for r in rows),
            "estimated_units": estimated,
            "exact_units": units - estimated,
            "consumers": consumers,
            "by_metric": by_metric,
            "cost_micro_usd": by_metric.get(COST_METRIC),
            "grain": grain,
            "bucket_seconds": GRAINS[grain],
            "filter": _filter_json(f),
        }

    def series(self, f: UsageFilter, by: str = "consumer", *, limit: int = _MAX_SERIES
               ) -> dict[str, Any]:
        """Units per bucket, one series per value of `by` (`consumer`, `api` or `metric`): the
        `limit` largest over the view by name, the rest summed as `"(other)"`. Shape:
        `{"grain", "bucket_seconds", "buckets": [t, ...], "series": [{"name", "units": [...],
        "total"}]}` with `t` in Unix seconds, every bucket of the view present (zeros included)."""
        column = _BY[by]
        grain = self.grain_for(f)
        g = GRAINS[grain]
        rel, params = self._relation(f, grain)
        rows = self._query(
            f"SELECT bucket, {column}, SUM(units) FROM ({rel}) GROUP BY bucket, {column}"
            f" ORDER BY bucket",
            params,
        )
        totals: dict[str, int] = {}
        for _, name, units in rows:
            totals[name] = totals.get(name, 0) + int(units)
        ranked = sorted(totals, key=lambda n: (-totals[n], n))
        keep = set(ranked[:limit])
        names = ranked[:limit] + (["(other)"] if len(ranked) > limit else [])
        seen = [int(r[0]) for r in (rows[0], rows[-1])] if rows else []
        if f.since is not None:  # the whole range, empty buckets included
            seen += [int(f.since // g) * g, int((f.end - 1e-6) // g) * g]
        start, end = (min(seen), max(seen)) if seen else (0, -g)
        buckets = list(range(start, end + g, g)) if end >= start else []
        index = {b: i for i, b in enumerate(buckets)}
        values = {n: [0] * len(buckets) for n in names}
        for bucket, name, units in rows:
            values[name if name in keep else "(other)"][index[int(bucket)]] += int(units)
        return {
            "by": by,
            "grain": grain,
            "bucket_seconds": g,
            "buckets": buckets,
            "series": [{"name": n, "units": values[n], "total": sum(values[n])} for n in names],
        }

    def top(self, f: UsageFilter, *, limit: int = 10) -> dict[str, Any]:
        """The `limit` consumers with the most units in the view, with their `share` of the
        view's units (0..1), their `estimated_units`, `events` and per-metric units."""
        rel, params = self._totals_relation(f)
        total = self._query(f"SELECT SUM(units) FROM ({rel})", params)[0][0] or 0
        rows = self._query(
            "SELECT consumer_id, SUM(units), SUM(events), SUM(estimated_units), SUM(requests)"
            f" FROM ({rel}) GROUP BY consumer_id ORDER BY SUM(units) DESC, consumer_id LIMIT ?",
            [*params, limit],
        )
        return {
            "total_units": int(total),
            "consumers": [
                {"consumer_id": r[0], "units": int(r[1]), "events": int(r[2]),
                 "estimated_units": int(r[3]), "requests": int(r[4]),
                 "share": (int(r[1]) / total) if total else 0.0}
                for r in rows
            ],
        }

    def options(self) -> dict[str, Any]:
        """Every consumer, API id and metric present (for the filter lists), and the
        `last_delivery` time (Unix seconds or None)."""
        out: dict[str, Any] = {"last_delivery": self.last_delivery()}
        if self.keys:
            rows = self._query("SELECT consumer_id, api_id, metric FROM ledger_keys", ())
        else:
            rel, params = self._relation(UsageFilter(), "day")
            rows = self._query(f"SELECT DISTINCT consumer_id, api_id, metric FROM ({rel})", params)
        for i, key in enumerate(("consumers", "api_ids", "metrics")):
            out[key] = sorted({r[i] for r in rows})
        return out

    def last_delivery(self) -> float | None:
        """When the last row was written (Unix seconds), or None. Reads the last 100 rows by id
        (rows are appended as they are delivered), not the whole table."""
        where = f" WHERE {self._status}" if self._status else ""
        row = self._query(
            f"SELECT MAX(ts) FROM (SELECT ts FROM {self.table}{where} ORDER BY id DESC LIMIT 100)", ()
        )[0]
        return None if row[0] is None else float(row[0])


_BY = {"consumer": "consumer_id", "api": "api_id", "metric": "metric"}


def _usage_table(conn: sqlite3.Connection) -> str:
    for table in ("ledger", "billing_log"):
        if _has_table(conn, table):
            return table
    raise ValueError("not a usage ledger: no `ledger` or `billing_log` table")


def _filter_json(f: UsageFilter) -> dict[str, Any]:
    return {
        "consumer": list(f.consumers),
        "api": list(f.api_ids),
        "metric": list(f.metrics),
        "range": f.range,
        "since": f.since,
        "until": f.until,
    }


VIEWS = ("summary", "series", "top", "options", "totals")
"""The views `usage_view` serves (the dashboard's `/api/<view>` and the emulator's
`/_emulator/usage/<view>`)."""


def _limit(params: Mapping[str, str], default: int) -> int:
    raw = params.get("limit") or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"limit: expected an integer, got {raw!r}") from None
    if not 1 <= value <= 1000:
        raise ValueError("limit: expected 1..1000")
    return value


def usage_view(store: UsageStore, view: str, params: Mapping[str, str], *,
               now: float | None = None) -> dict[str, Any]:
    """One view as JSON-ready data, from URL-style parameters (see `parse_filter`; `series`
    also reads `by` = consumer/api/metric and `limit`, `top` reads `limit`).

    Raises ValueError for an unknown view or a bad parameter, KeyError never."""
    if view == "options":
        return store.options()
    f = parse_filter(params, now=now)
    if view == "summary":
        return store.summary(f)
    if view == "series":
        by = params.get("by") or "consumer"
        if by not in _BY:
            raise ValueError(f"by: expected one of {', '.join(_BY)}, got {by!r}")
        return store.series(f, by, limit=_limit(params, _MAX_SERIES))
    if view == "top":
        return store.top(f, limit=_limit(params, 10))
    if view == "totals":
        return {"rows": store.totals(f)}
    raise ValueError(f"unknown view {view!r}: expected one of {', '.join(VIEWS)}")
