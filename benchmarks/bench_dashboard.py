"""The dashboard over a large ledger: each API call, the first paint, the rollup's costs.

    python benchmarks/bench_dashboard.py [--events 10000000] [--db PATH] [--rounds 5] [--publish]

Builds (or reuses, with --db) a ledger of N rows of one event each (no coalescing: the worst case
for a given number of events), spread over 90 days, 500 consumers, 3 API ids and 3 metrics.
Reports:

- the one-time backfill of the rollup when an existing ledger is first opened by the dashboard;
- the write cost the rollup's trigger adds to a ledger insert (autocommit inserts, as the
  LedgerSink does them), as a ratio;
- each `/api/*` call at several ranges (median of --rounds), from the rollup and, for scale, the
  same view aggregated from the raw rows;
- the first paint in headless Chromium (the Debian `chromium`): from navigation to the page
  showing its numbers and every chart drawn, and the browser's first-contentful-paint.

Reaches only 127.0.0.1. `--publish` writes the figures into docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from aerostack_meter import _sqlite
from aerostack_meter._usage_query import UsageStore, ensure_rollup, usage_view
from aerostack_meter.servers.dashboard import start_dashboard
from aerostack_meter.sinks._ledger import LEDGER_SCHEMA

PLAIN_LEDGER = LEDGER_SCHEMA  # the table and its index; the rollup comes from ensure_rollup
SPAN = 90 * 86400
CALLS = [
    ("summary", {"range": "1h"}),
    ("summary", {"range": "24h"}),
    ("summary", {"range": "7d"}),
    ("summary", {}),
    ("series", {"by": "consumer", "range": "1h"}),
    ("series", {"by": "consumer", "range": "6h"}),
    ("series", {"by": "consumer", "range": "24h"}),
    ("series", {"by": "consumer", "range": "7d"}),
    ("series", {"by": "consumer", "range": "30d"}),
    ("series", {"by": "consumer"}),
    ("series", {"by": "metric", "range": "24h"}),
    ("series", {"by": "api", "range": "24h"}),
    ("top", {"range": "24h"}),
    ("top", {}),
    ("summary", {"consumer": "usr_7"}),
    ("series", {"by": "metric", "consumer": "usr_7", "range": "7d"}),
    ("options", {}),
    ("health", {}),
    ("overview", {"range": "24h"}),
    ("overview", {}),
]


def build(path: Path, events: int, now: float) -> float:
    """A ledger without the rollup (as an older version wrote it). Returns seconds taken."""
    t0 = time.perf_counter()
    conn = _sqlite.connect(str(path), synchronous="OFF")
    conn.executescript(PLAIN_LEDGER)
    conn.execute("BEGIN")
    conn.execute(
        """
        WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < ? - 1)
        INSERT INTO ledger (ts, consumer_id, api_id, metric, units, idempotency_key, events,
                            estimated_units)
        SELECT ? - ? + (i * ? / ?), 'usr_' || ((i * 7919) % 500), 'api_' || (i % 3),
               CASE i % 3 WHEN 0 THEN 'input_tokens' WHEN 1 THEN 'output_tokens'
                          ELSE 'cost_micro_usd' END,
               1 + (i * 31) % 900, NULL, 1, CASE WHEN i % 50 = 0 THEN 1 + (i * 31) % 900 ELSE 0 END
        FROM c
        """,
        (events, now, float(SPAN), float(SPAN), float(events)),
    )
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - t0


def insert_cost(rows: int = 2000, rounds: int = 5) -> tuple[float, float]:
    """µs per autocommit insert without and with the rollup trigger (median of interleaved
    rounds, so that both see the same machine)."""
    samples: dict[bool, list[float]] = {False: [], True: []}
    sql = ("INSERT INTO ledger (ts, consumer_id, api_id, metric, units, idempotency_key,"
           " events, estimated_units) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
    with tempfile.TemporaryDirectory() as d:
        conns = {}
        for with_rollup in (False, True):
            conn = _sqlite.connect(os.path.join(d, f"l{int(with_rollup)}.db"))
            conn.executescript(PLAIN_LEDGER)
            if with_rollup:
                ensure_rollup(conn)
            conns[with_rollup] = conn
        now = time.time()
        for r in range(rounds):
            for with_rollup in (False, True):
                conn = conns[with_rollup]
                t0 = time.perf_counter()
                for i in range(rows):
                    conn.execute(sql, (now + r * rows + i, f"usr_{i % 50}", "api", "tokens", 10,
                                       f"k{r}-{i}", 1, 0))
                samples[with_rollup].append((time.perf_counter() - t0) / rows * 1e6)
        for conn in conns.values():
            conn.close()
    return statistics.median(samples[False]), statistics.median(samples[True])


def time_calls(base: str, rounds: int) -> list[tuple[str, str, float]]:
    results = []
    with httpx.Client(base_url=base, timeout=120) as http:
        for view, params in CALLS:
            http.get(f"/api/{view}", params=params).raise_for_status()  # warm the page cache
            samples = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                http.get(f"/api/{view}", params=params).raise_for_status()
                samples.append(time.perf_counter() - t0)
            label = "&".join(f"{k}={v}" for k, v in params.items()) or "(all time)"
            results.append((view, label, statistics.median(samples) * 1000))
    return results


def raw_calls(path: Path) -> list[tuple[str, float]]:
    """The same views from the raw rows (no rollup), once each: what the rollup saves."""
    store = UsageStore.open(path, write=False)
    store.rollup = store.keys = False
    out = []
    for view, params in (("summary", {"range": "24h"}), ("series", {"by": "consumer"})):
        t0 = time.perf_counter()
        usage_view(store, view, params)
        label = f"{view} " + ("&".join(f"{k}={v}" for k, v in params.items()) or "(all time)")
        out.append((label, (time.perf_counter() - t0) * 1000))
    store.close()
    return out


def first_paint(base: str, runs: int) -> list[tuple[float, float, float]]:
    from playwright.sync_api import sync_playwright

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=flags)
        try:
            for _ in range(runs):
                context = browser.new_context(viewport={"width": 1360, "height": 1500})
                page = context.new_page()
                t0 = time.perf_counter()
                page.goto(base + "/?range=24h", wait_until="commit")
                page.wait_for_function("document.body && Number(document.body.dataset.numbers || 0) > 0",
                                       timeout=120_000, polling=5)
                numbers = (time.perf_counter() - t0) * 1000
                page.wait_for_function("document.body && Number(document.body.dataset.loaded || 0) > 0",
                                       timeout=120_000, polling=5)
                loaded = (time.perf_counter() - t0) * 1000
                fcp = page.evaluate(
                    "(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime"
                    " || 0")
                out.append((numbers, loaded, float(fcp)))
                context.close()
        finally:
            browser.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--db", default=None, help="ledger file to build or reuse")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--paints", type=int, default=3)
    parser.add_argument("--no-raw", action="store_true", help="skip the raw-rows comparison")
    parser.add_argument("--publish", action="store_true")
    ns = parser.parse_args()

    load_before = os.getloadavg()[0]
    print(f"load average before: {os.getloadavg()}")
    tmp = None
    if ns.db:
        path = Path(ns.db)
    else:
        tmp = tempfile.TemporaryDirectory()
        path = Path(tmp.name) / "ledger.db"
    now = time.time()
    built = backfill = None
    if not path.exists():
        built = build(path, ns.events, now)
        print(f"built {ns.events:,} ledger rows in {built:.1f} s")
        t0 = time.perf_counter()
        conn = _sqlite.connect(str(path))
        ensure_rollup(conn)
        conn.close()
        backfill = time.perf_counter() - t0
        print(f"rollup backfill (first open of an existing ledger): {backfill:.1f} s")
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0]
    rollup_rows = conn.execute(
        "SELECT grain, COUNT(*) FROM ledger_rollup GROUP BY grain ORDER BY grain").fetchall()
    conn.close()
    size = path.stat().st_size / 1e6
    print(f"ledger: {rows:,} rows, {size:.0f} MB; rollup rows per grain: {rollup_rows}")

    plain, rolled = insert_cost()
    print(f"ledger insert: {plain:.1f} µs plain, {rolled:.1f} µs with the rollup trigger"
          f" ({rolled / plain:.2f}x)")

    with start_dashboard(ledger=path, refresh_seconds=0) as dash:
        calls = time_calls(dash.base_url, ns.rounds)
        print(f"\n{'call':<10} {'parameters':<40} {'ms (median)':>12}")
        for view, label, ms in calls:
            print(f"{view:<10} {label:<40} {ms:>12.1f}")
        raw = [] if ns.no_raw else raw_calls(path)
        print("\nthe same views from the raw rows (no rollup):")
        for label, ms in raw:
            print(f"  {label:<40} {ms:>10.0f} ms")
        paints = first_paint(dash.base_url, ns.paints) if os.path.exists("/usr/bin/chromium") else []
        for numbers, loaded, fcp in paints:
            print(f"first paint: numbers shown {numbers:.0f} ms, complete with 5 charts"
                  f" {loaded:.0f} ms, first-contentful-paint {fcp:.0f} ms")
    print(f"load average after: {os.getloadavg()}")

    if ns.publish:
        from _perfdoc import machine, update_section

        worst = max(ms for _, _, ms in calls)
        lines = [
            f"`benchmarks/bench_dashboard.py --events {ns.events}` on {machine()}; load average"
            f" {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (other"
            " sessions shared the machine: the figures are upper bounds). A ledger of {rows:,} rows of one event each"
            f" ({size:.0f} MB) over 90 days, 500 consumers, 3 API ids, 3 metrics.",
            "",
            f"- Every `/api/*` call: at most {worst:.0f} ms (median of {ns.rounds}), over any range"
            " and filter below.",
        ]
        if paints:
            lines.append(
                f"- First paint in headless Chromium (`?range=24h`, best of {len(paints)}):"
                f" first-contentful-paint {min(p[2] for p in paints):.0f} ms, every number shown"
                f" {min(p[0] for p in paints):.0f} ms, all five charts drawn"
                f" {min(p[1] for p in paints):.0f} ms (most of it is parsing plotly.js, 4.8 MB).")
        if backfill is not None:
            lines.append(f"- The rollup's one-time backfill when the dashboard first opens a ledger"
                         f" written by an older version: {backfill:.0f} s.")
        lines.append(f"- The rollup trigger's cost per ledger insert (on the reporter thread, never"
                     f" the caller's): {plain:.0f} µs plain, {rolled:.0f} µs with it"
                     f" ({rolled / plain:.2f}x).")
        lines += ["", "| call | parameters | ms |", "|---|---|---:|"]
        lines += [f"| {v} | {lbl} | {ms:.1f} |" for v, lbl, ms in calls]
        lines += ["", "The same views aggregated from the raw rows (what the rollup saves):", "",
                  "| view | ms |", "|---|---:|"]
        lines += [f"| {lbl} | {ms:.0f} |" for lbl, ms in raw]
        update_section("Dashboard", "\n".join(lines))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
