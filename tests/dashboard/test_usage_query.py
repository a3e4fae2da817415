"""The shared SQL aggregates: the rollup and the raw rows agree, buckets and filters are exact."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aerostack_meter._usage_query import (
    UsageFilter,
    UsageStore,
    choose_grain,
    parse_filter,
    usage_view,
)
from aerostack_meter.sinks import Batch
from aerostack_meter.sinks._ledger import LedgerSink

from ._data import CONSUMERS, ledger_sum, make_ledger

NOW = 1_790_000_000.0  # a fixed "now" (2026-09-21): results must not depend on the clock


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return make_ledger(tmp_path / "usage.db", NOW)


def _raw_copy(src: Path, dst: Path) -> Path:
    """The same ledger without the rollup and its trigger (an old or read-only ledger)."""
    conn = sqlite3.connect(src)
    conn.execute(f"VACUUM INTO '{dst}'")
    conn.close()
    conn = sqlite3.connect(dst)
    conn.execute("DROP TRIGGER ledger_rollup_insert")
    conn.execute("DROP TABLE ledger_rollup")
    conn.execute("DROP TRIGGER ledger_keys_insert")
    conn.execute("DROP TABLE ledger_keys")
    conn.commit()
    conn.close()
    return dst


FILTERS = [
    {"range": "all"},
    {"range": "24h"},
    {"range": "6h"},
    {"range": "1h", "consumer": "usr_alice"},
    {"range": "7d", "api": "search-api", "metric": "input_tokens"},
    {"consumer": "usr_bob,usr_carol", "grain": "minute"},
    {"since": str(NOW - 5000), "until": str(NOW - 1000)},
]


@pytest.mark.parametrize("params", FILTERS)
def test_rollup_and_raw_rows_give_the_same_views(ledger: Path, tmp_path: Path, params: dict[str, str]) -> None:
    fast = UsageStore.open(ledger, write=False)
    slow = UsageStore.open(_raw_copy(ledger, tmp_path / "raw.db"), write=False)
    assert fast.rollup and fast.keys and not slow.rollup and not slow.keys
    for view, extra in (("summary", {}), ("series", {"by": "consumer"}), ("series", {"by": "metric"}),
                        ("series", {"by": "api"}), ("top", {}), ("totals", {}), ("options", {})):
        a = usage_view(fast, view, {**params, **extra}, now=NOW)
        b = usage_view(slow, view, {**params, **extra}, now=NOW)
        assert a == b, (view, params)


def test_totals_equal_the_ledger_rows(ledger: Path) -> None:
    store = UsageStore.open(ledger, write=False)
    summary = store.summary(parse_filter({}, now=NOW))
    assert summary["units"] == ledger_sum(ledger) > 0
    assert summary["estimated_units"] == ledger_sum(ledger, "WHERE estimated_units > 0") > 0
    assert summary["exact_units"] == summary["units"] - summary["estimated_units"]
    assert summary["cost_micro_usd"] == ledger_sum(ledger, "WHERE metric = 'cost_micro_usd'") > 0
    assert sum(summary["by_metric"].values()) == summary["units"]
    top = store.top(parse_filter({}, now=NOW), limit=10)
    assert top["consumers"][0]["consumer_id"] == "usr_alice"
    assert sum(r["units"] for r in top["consumers"]) == summary["units"]
    assert abs(sum(r["share"] for r in top["consumers"]) - 1.0) < 1e-9
    for consumer in CONSUMERS:
        f = parse_filter({"consumer": consumer}, now=NOW)
        assert store.summary(f)["units"] == ledger_sum(ledger, "WHERE consumer_id = ?", (consumer,))


def test_a_range_covers_whole_buckets_and_every_bucket_is_listed(ledger: Path) -> None:
    store = UsageStore.open(ledger, write=False)
    f = parse_filter({"range": "6h"}, now=NOW)
    series = store.series(f, "consumer")
    assert series["grain"] == "minute" and series["bucket_seconds"] == 60
    start = int((NOW - 6 * 3600) // 60) * 60
    assert series["buckets"][0] == start
    assert series["buckets"] == list(range(start, series["buckets"][-1] + 60, 60))
    assert len(series["buckets"]) == 361  # the partial first minute and the current one
    expected = ledger_sum(ledger, "WHERE ts >= ?", (start,))
    assert sum(s["total"] for s in series["series"]) == expected == store.summary(f)["units"]


def test_series_keep_the_largest_and_sum_the_rest_as_other(ledger: Path) -> None:
    store = UsageStore.open(ledger, write=False)
    series = store.series(parse_filter({}, now=NOW), "consumer", limit=2)
    names = [s["name"] for s in series["series"]]
    assert names == ["usr_alice", "usr_bob", "(other)"]
    assert sum(s["total"] for s in series["series"]) == ledger_sum(ledger)


def test_grain_follows_the_range() -> None:
    assert choose_grain(3600) == "minute"
    assert choose_grain(6 * 3600) == "minute"
    assert choose_grain(86400) == "hour"
    assert choose_grain(7 * 86400) == "hour"
    assert choose_grain(30 * 86400) == "day"


@pytest.mark.parametrize("params", [{"range": "2y"}, {"grain": "week"}, {"since": "yesterday"}])
def test_bad_parameters_are_value_errors(params: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        parse_filter(params, now=NOW)


def test_iso_times_read_as_utc() -> None:
    f = parse_filter({"since": "2026-09-21T00:00:00", "until": "2026-09-21T01:00:00Z"})
    assert (f.since, f.until, f.range) == (1789948800.0, 1789952400.0, "custom")


def test_an_old_ledger_is_migrated_and_backfilled(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE ledger(id INTEGER PRIMARY KEY, ts REAL NOT NULL, consumer_id TEXT NOT NULL,"
        " api_id TEXT NOT NULL, metric TEXT NOT NULL, units INTEGER NOT NULL, idempotency_key TEXT,"
        " events INTEGER NOT NULL DEFAULT 1)"
    )
    conn.executemany("INSERT INTO ledger (ts, consumer_id, api_id, metric, units) VALUES (?, ?, ?, ?, ?)",
                     [(NOW - 10, "usr_a", "api", "tokens", 5), (NOW - 7200, "usr_b", "api", "tokens", 7)])
    conn.commit()
    conn.close()
    read_only = UsageStore.open(path, write=False)
    assert not read_only.rollup and read_only.totals()[0]["estimated_units"] == 0
    sink = LedgerSink(str(path))  # the sink adds the column, but leaves the backfill alone
    sink.send(Batch("usr_a", "api", "tokens", 3, 1, "k0", estimated_units=1))
    sink.close()
    assert not UsageStore.open(path, write=False).rollup
    store = UsageStore.open(path)  # the dashboard: the rollup and its trigger, backfilled
    assert store.rollup
    assert store.summary(UsageFilter())["units"] == 15
    sink = LedgerSink(str(path))  # later deliveries land in the rollup through the trigger
    sink.send(Batch("usr_a", "api", "tokens", 30, 2, "k1", estimated_units=30))
    sink.close()
    summary = store.summary(UsageFilter())
    assert (summary["units"], summary["estimated_units"], summary["requests"]) == (45, 31, 4)
    assert [r["units"] for r in store.totals()] == [38, 7]


def test_a_gateway_log_is_a_usage_table(tmp_path: Path) -> None:
    from aerostack_meter.servers._gateway_db import GatewayDB

    db = GatewayDB(str(tmp_path / "gw.db"))
    for units in (3, 4):
        db.log(consumer_id="usr_a", api_id="api", metric="units", units=units, idempotency_key=None,
               on_empty_wallet="allow")
    summary = db.usage_store().summary(UsageFilter())
    assert (summary["units"], summary["events"], summary["requests"]) == (7, 2, 2)
    db.close()
    store = UsageStore.open(tmp_path / "gw.db")  # the emulator's file opened as a ledger
    assert store.table == "billing_log" and store.totals()[0]["units"] == 7


def test_estimated_units_reach_the_ledger_through_the_reporter(tmp_path: Path) -> None:
    """A stream ended early is billed from an estimate: the ledger keeps which units those were."""
    import aerostack_meter as am
    from aerostack_meter._meter import Attribution

    path = tmp_path / "ledger.db"
    meter = am.init(ledger_path=str(path), api_id="api", flush_interval=0.05, metrics="tokens")
    try:
        attribution = Attribution("usr_a", "api", meter.settings.metrics)
        meter.record(am.Usage("openai", input_tokens=10, output_tokens=4, total_tokens=14), attribution)
        meter.record(am.Usage("openai", input_tokens=5, total_tokens=5, estimated=True), attribution)
        assert am.flush(5)
    finally:
        am.shutdown()
    summary = UsageStore.open(path, write=False).summary(UsageFilter())
    assert (summary["units"], summary["estimated_units"], summary["events"]) == (19, 5, 2)
