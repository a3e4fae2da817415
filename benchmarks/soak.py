"""Soak: minutes of sustained metered SDK calls through faults and a gateway outage.

    python benchmarks/soak.py [--minutes 2] [--threads 4] [--no-spool]

The parent runs the mock LLM server and the gateway emulator; a child process makes openai chat
calls (plain and streamed) from several threads with the meter on (a spool unless --no-spool),
and samples its own RSS from /proc/self/statm. Phases, as shares of the run: 0-30 % the gateway
fails 10 % of requests (500/502/503) and loses 2 % of responses after committing them; 30-70 %
the gateway is down; 70-100 % it is back with the same faults. Then the child flushes and exits.

Printed: RSS over time (and its change across the outage), calls and throughput, retries, and
whether the totals are exact: per consumer, gateway units minus the excess of duplicated
Idempotency-Keys == usage the LLM server returned.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

KEY = "ac_secret_soak"
FAULTS = {"fail_rate": 0.10, "lose_response_rate": 0.02, "seed": 11}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(cfg: dict[str, Any]) -> None:
    import openai

    import aerostack_meter as am

    options: dict[str, Any] = {"flush_interval": 0.5, "max_backoff": 2.0, "max_retries": 10_000,
                               "exit_timeout": 60.0, "instrument": ["openai"]}
    if cfg["spool"]:
        options["spool_path"] = cfg["spool"]
    am.init(KEY, api_id="api_soak", base_url=cfg["gateway"], **options)
    client = openai.OpenAI(base_url=cfg["llm"], api_key="sk-mock", max_retries=0)
    stop = threading.Event()
    calls = Counter()

    def worker(t: int) -> None:
        i = 0
        while not stop.is_set():
            c = f"usr_{(t * 7 + i) % 16}"
            kw: dict[str, Any] = {"model": "gpt-4o-mini", "extra_headers": {"x-mock-consumer": c},
                                  "messages": [{"role": "user", "content": "soak " * (1 + i % 9)}]}
            with am.consumer(c):
                if i % 4 == 3:
                    for _ in client.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                            **kw):
                        pass
                else:
                    client.chat.completions.create(**kw)
            calls[t] += 1
            i += 1

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(cfg["threads"])]
    for th in threads:
        th.start()
    t0 = time.monotonic()
    print(json.dumps({"ready": True}), flush=True)
    # sample until the parent closes our stdin
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    while not done.wait(cfg["sample"]):
        s = am.stats()
        print(json.dumps({"t": round(time.monotonic() - t0, 1), "wall": time.time(),
                          "rss_mb": round(rss_mb(), 1),
                          "calls": sum(calls.values()), "pending": s.pending, "spooled": s.spooled}),
              flush=True)
    stop.set()
    for th in threads:
        th.join()
    t1 = time.monotonic()
    ok = am.flush(120)
    s = am.stats()
    print(json.dumps({"final": True, "flushed": ok, "drain_s": round(time.monotonic() - t1, 1),
                      "calls": sum(calls.values()), "rss_mb": round(rss_mb(), 1), "retries": s.retries,
                      "ambiguous_retries": s.ambiguous_retries, "requests": s.requests_sent,
                      "dropped": dict(s.dropped), "overflows": s.queue_overflows}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--no-spool", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    from aerostack_meter.servers import start_gateway, start_mock_llm

    total = args.minutes * 60
    tmp = tempfile.mkdtemp(prefix="aerostack-soak-")
    db = os.path.join(tmp, "gateway.db")
    gw = start_gateway(keys=[KEY], db_path=db, faults=FAULTS)
    port = gw.port
    llm = start_mock_llm()
    cfg = {"gateway": gw.url, "llm": llm.url, "threads": args.threads, "sample": args.sample,
           "spool": None if args.no_spool else os.path.join(tmp, "spool.db")}
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(cfg)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    samples: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    assert json.loads(proc.stdout.readline()) == {"ready": True}  # phases count from here

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            row = json.loads(line)
            (final.update(row) if row.get("final") else samples.append(row))
            if not row.get("final"):
                print(f"  t={row['t']:6.1f}s  rss={row['rss_mb']:6.1f} MB  calls={row['calls']:7d}  "
                      f"pending={row['pending']:6d}  spooled={row['spooled']:6d}", flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    start = time.monotonic()
    print(f"soak: {args.minutes} min, {args.threads} threads, spool={'off' if args.no_spool else 'on'}; "
          f"faults {FAULTS}; gateway down from {0.3 * total:.0f}s to {0.7 * total:.0f}s")
    time.sleep(0.3 * total)
    gw.stop()
    down_wall = time.time()
    down = time.monotonic() - start
    print(f"  -- gateway down at {down:.0f}s")
    time.sleep(0.4 * total)
    gw = start_gateway(keys=[KEY], db_path=db, port=port, faults=FAULTS)
    up_wall = time.time()
    up = time.monotonic() - start
    print(f"  -- gateway back at {up:.0f}s")
    time.sleep(max(0.0, total - (time.monotonic() - start)))
    proc.stdin.close()
    proc.wait(timeout=300)
    reader.join(10)

    mock = {c: v["total_tokens"] for c, v in llm.usage()["by_consumer"].items()}
    rows = gw.client.log()
    got: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    excess: Counter[str] = Counter()
    for r in rows:
        got[r["consumerId"]] += r["units"]
        seen[r["idempotencyKey"]] += 1
        if seen[r["idempotencyKey"]] > 1:
            excess[r["consumerId"]] += r["units"]
    net = {c: got[c] - excess[c] for c in got}
    dup_rows = sum(n - 1 for n in seen.values() if n > 1)
    in_outage = [s for s in samples if down_wall <= s["wall"] <= up_wall]
    print()
    print(f"calls: {final.get('calls')} ({final.get('calls', 0) / total:.0f}/s), "
          f"billing requests: {final.get('requests')}, retries: {final.get('retries')} "
          f"(ambiguous {final.get('ambiguous_retries')}), drain after stop: {final.get('drain_s')} s")
    print(f"units: LLM {sum(mock.values())}, gateway {sum(got.values())}, duplicate excess "
          f"{sum(excess.values())} in {dup_rows} rows; dropped {final.get('dropped')}")
    print(f"totals exact per consumer (gateway - duplicates == LLM): {'yes' if net == mock else 'NO'}")
    if samples:
        rss = [s["rss_mb"] for s in samples]
        print(f"RSS: first {rss[0]:.1f} MB, max {max(rss):.1f} MB, last {rss[-1]:.1f} MB")
    if in_outage:
        print(f"RSS during the outage: {in_outage[0]['rss_mb']:.1f} -> {in_outage[-1]['rss_mb']:.1f} MB "
              f"while {in_outage[-1]['calls'] - in_outage[0]['calls']} calls were metered "
              f"(spooled {in_outage[-1]['spooled']})")
    gw.stop()
    llm.stop()
    sys.exit(0 if net == mock and final.get("flushed") else 1)


if __name__ == "__main__":
    main()
