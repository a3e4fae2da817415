"""What the delivery thread spends per journaled record, against what the caller spent writing it.

    python benchmarks/bench_reader.py [--records 20000] [--rounds 5] [--consumers 4]

A metered call's caller writes one ``E`` record into the journal; the reporter thread then reads
it back (CRC check, decode), folds it into its window and forms the request. Both are process CPU
time, so both are in what a call costs (``attribute_overhead.py``'s "reporter" column is the
second, by difference). Here: ``--records`` records written by ``Meter.log`` in a tight loop (the
reporter idle meanwhile: a flush interval of a minute), then one ``flush()``; the caller's CPU time
of the loop (its thread clock) and the reporter thread's CPU time over the whole round (its own
clock, ``pthread_getcpuclockid``), per record, and their ratio; medians over ``--rounds``. The
sink drops every batch (no network); the durable store is on. Prints only.
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

from _timing import DurableNullSink

from aerostack_meter import Meter


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--consumers", type=int, default=4, help="distinct consumers (keys) the records carry")
    ns = ap.parse_args()
    meter = Meter(sink=DurableNullSink(), api_id="api_bench", state_dir=tempfile.mkdtemp(prefix="aerostack-reader-"),
                  flush_interval=60)
    meter.log("warm", 1)
    assert meter.flush(10)
    [reporter] = [t for t in threading.enumerate() if t.name == "aerostack-meter-reporter"]
    clock = time.pthread_getcpuclockid(reporter.ident)  # type: ignore[arg-type]
    names = [f"usr_{i}" for i in range(ns.consumers)]
    caller, reader = [], []
    print(f"load before {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for _ in range(ns.rounds):
        r0, c0 = time.clock_gettime(clock), time.thread_time()
        for i in range(ns.records):
            meter.log(names[i % ns.consumers], 7)
        c1 = time.thread_time()
        assert meter.flush(60)
        r1 = time.clock_gettime(clock)
        caller.append((c1 - c0) / ns.records * 1e6)
        reader.append((r1 - r0) / ns.records * 1e6)
    st = meter.stats()
    assert st.events_sent == ns.rounds * ns.records + 1, st
    meter.shutdown(5)
    ratios = [r / c for r, c in zip(reader, caller, strict=True)]
    print(f"load after {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {ns.rounds} rounds x {ns.records:,} records, "
          f"{ns.consumers} consumers; µs of CPU per record, median (min-max)")
    print(f"caller (Meter.log, the journal record): {statistics.median(caller):.2f} ({min(caller):.2f}-{max(caller):.2f})")
    print(f"reporter (read back, fold, request):   {statistics.median(reader):.2f} ({min(reader):.2f}-{max(reader):.2f})")
    print(f"reporter / caller: {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
