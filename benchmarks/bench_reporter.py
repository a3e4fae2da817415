"""Reporter benchmark: what recording costs the caller, and how fast delivery keeps up.

    python benchmarks/bench_reporter.py [--events 200000] [--no-write]

1. Caller-side cost of recording one event (``aerostack_meter.log``, and the ``record`` path the SDK
   wrappers use), from 1 thread and from 8 threads at once, with the reporter running: durable (the
   default: the record is in the journal file when the call returns; copied into the journal's
   shared file mapping, and, for comparison in the same run, with one ``os.write`` per record as
   where the journal cannot be mapped) and in memory (``durable=False``).
2. Delivered events per second against the local gateway emulator on loopback, with and without
   coalescing (one request per event).
Figures go to docs/performance.md, section "Reporter".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _perfdoc import machine, update_section

import aerostack_meter._journal as journal_module
from aerostack_meter import Meter
from aerostack_meter._meter import Attribution
from aerostack_meter._usage import Usage

KEY = "ac_secret_bench"


MODES = ("mapped", "write", "memory")
LABELS = {"mapped": "durable (default), mapped", "write": "durable, `os.write` (unmapped)",
          "memory": "`durable=False`"}


def caller_cost(threads: int, n: int, path: str, mode: str, tmp: str) -> float:
    """ns per recorded event, per thread (median of 5 rounds)."""
    durable = mode != "memory"
    mapped, journal_module.MAPPED = journal_module.MAPPED, mode == "mapped"
    try:
        return _caller_cost(threads, n, path, durable, os.path.join(tmp, mode))
    finally:
        journal_module.MAPPED = mapped


def _caller_cost(threads: int, n: int, path: str, durable: bool, tmp: str) -> float:
    # A long window: the reporter sleeps while we measure, so this is the cost on the caller alone.
    # A local ledger is the destination (durable needs one with a name); delivery happens between
    # rounds, at flush().
    meter = Meter(api_id="api", flush_interval=60, max_queue_size=10_000_000, durable=durable,
                  ledger_path=os.path.join(tmp, f"ledger-{path}-{threads}-{durable}.db"),
                  state_dir=os.path.join(tmp, "state"))
    assert meter.durable == durable
    usage = Usage("openai", "gpt-4o-mini", 100, 20, 120)
    att = Attribution("usr_1", "api", "tokens")
    rounds = []
    for _ in range(5):
        barrier = threading.Barrier(threads)
        per_thread: list[float] = []

        def work(barrier: threading.Barrier = barrier, per_thread: list[float] = per_thread) -> None:
            barrier.wait()
            t0 = time.perf_counter_ns()
            if path == "log":
                log = meter.log
                for _ in range(n):
                    log("usr_1", 3, metric="tokens")
            else:
                record = meter.record
                for _ in range(n):
                    record(usage, att)
            per_thread.append((time.perf_counter_ns() - t0) / n)

        ts = [threading.Thread(target=work) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        rounds.append(statistics.mean(per_thread))
        meter.flush(30)
    meter.shutdown(30)
    return statistics.median(rounds)


def delivery_rate(url: str, n: int, coalesce: bool) -> tuple[float, int]:
    meter = Meter(KEY, api_id="api", base_url=url, flush_interval=0.05, coalesce=coalesce,
                  max_queue_size=10_000_000, concurrency=8)
    t0 = time.perf_counter()
    for i in range(n):
        meter.log(f"usr_{i % 100}", 1)
    assert meter.flush(600), "flush timed out"
    elapsed = time.perf_counter() - t0
    requests = meter.stats().requests_sent
    meter.shutdown(5)
    return n / elapsed, requests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000, help="events per caller-cost round")
    ap.add_argument("--delivery-events", type=int, default=500_000)
    ap.add_argument("--uncoalesced-events", type=int, default=5_000)
    ap.add_argument("--no-write", action="store_true", help="print only; do not update docs/performance.md")
    ns = ap.parse_args()

    from aerostack_meter.servers import start_gateway

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in ("log", "record"):
            for threads in (1, 8):
                for mode in MODES:  # interleaved: the load changes less between a row's modes
                    cost = caller_cost(threads, ns.events // threads, path, mode, tmp)
                    rows.append((mode, path, threads, cost))
                    print(f"caller cost  {mode:<7} {path:<6} {threads} thread(s): "
                          f"{cost / 1000:.2f} µs/event")
        costs = {(m, p, t): c for m, p, t, c in rows}
        for path in ("log", "record"):
            for threads in (1, 8):
                print(f"mapped / os.write  {path:<6} {threads} thread(s): "
                      f"{costs['mapped', path, threads] / costs['write', path, threads]:.2f}x")
    with start_gateway(keys=[KEY]) as gw:
        co_rate, co_req = delivery_rate(gw.url, ns.delivery_events, True)
        print(f"delivery coalesced   : {co_rate:,.0f} events/s ({co_req} requests for {ns.delivery_events} events)")
        un_rate, un_req = delivery_rate(gw.url, ns.uncoalesced_events, False)
        print(f"delivery uncoalesced : {un_rate:,.0f} events/s ({un_req} requests)")

    def ratio(mode: str, path: str, threads: int, cost: float) -> str:
        return f"{cost / costs['write', path, threads]:.2f}x" if mode == "mapped" else ""

    table = "\n".join(
        ["| mode | path | threads | caller cost per event | mapped / `os.write` |", "|---|---|---|---|---|"]
        + [f"| {LABELS[m]} | `{'aerostack_meter.log()' if p == 'log' else 'wrapper record()'}` | {t} | "
           f"{c / 1000:.2f} µs | {ratio(m, p, t, c)} |"
           for m, p, t, c in sorted(rows, key=lambda r: MODES.index(r[0]))]
    )
    durable_worst = max(c for m, _p, _t, c in rows if m == "mapped")
    body = f"""Measured by `python benchmarks/bench_reporter.py` on {machine()}.

Caller-side cost of recording one event while the reporter runs (median of 5 rounds of
{ns.events:,} events; with 8 threads, the mean per-thread cost — the GIL serialises them).
Durable (the default): the record (CRC-checked, binary) is in this process's journal file when the
call returns: copied into the journal's shared file mapping (`mmap`, no system call), or, where the
journal cannot be mapped (Windows, macOS, a filesystem without `fallocate`), written with one
`os.write` on an `O_APPEND` descriptor (measured here in the same run, with the mapping turned off);
`durable=False`: an append to an in-memory deque.

{table}

Aim for a durable record: at most 3 µs on the caller (worst mapped row here: {durable_worst / 1000:.2f} µs).
With several threads in a tight loop, each `os.write` releases the GIL: the unmapped per-thread
figure is mostly GIL hand-offs; a copy into the mapping does not release it.

Delivery to the local gateway emulator on loopback (keep-alive, `concurrency=8`, 100 consumers):

| mode | events/s | requests |
|---|---|---|
| coalesced (default, `flush_interval=0.05`) | {co_rate:,.0f} | {co_req:,} for {ns.delivery_events:,} events |
| `coalesce=False` (one request per event) | {un_rate:,.0f} | {un_req:,} |

Aims: recording under 2 µs for the caller; coalesced delivery keeping up with 50,000 events/s.
Without coalescing, throughput is bounded by one HTTP round trip per event (the billing API has no
batch form), which is why coalescing is the default.
"""
    if not ns.no_write:
        update_section("Reporter", body)


if __name__ == "__main__":
    main()
