"""Redis relay benchmark: records/s into Redis from 8 producer processes, records/s through one and
two relays into the gateway emulator, and the caller's cost with the Redis sink.

    python benchmarks/bench_relay.py [--records 40000] [--consumers 100] [--no-write]

Needs the ``relay`` extra and ``redis-server`` (the Debian package); the benchmark starts its own
on a free loopback port (AOF on, ``appendfsync everysec``: the setting docs/scaling.md recommends).

1. Producers: 8 processes each append ``records / 8`` records with the Redis sink, one record per
   ``log()`` (``coalesce=False``, so each event is one stream entry: the sink's worst case). Timed
   from a common start to the last producer's ``flush()``.
2. Relays: the stream of step 1 (``records`` entries over ``consumers`` consumers), delivered by
   one ``aerostack-meter relay`` process, then (same stream again) by two. Timed from the relays'
   start to nothing undelivered; the gateway emulator runs in this process.
3. Caller cost: ns per ``log()`` on the caller's thread with the reporter running
   (``flush_interval=0.05``) and the Redis sink, against the same meter with its default
   destination (the gateway emulator, behind the default local store).
Figures go to docs/performance.md, section "Redis relay".
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _perfdoc import machine, update_section

from aerostack_meter import Meter
from aerostack_meter.relay import StreamConfig, gather

KEY = "ac_secret_bench"

PRODUCER = """
import sys, time
from aerostack_meter import Meter
url, n, consumers, idx = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
meter = Meter("k", api_id="api", base_url="http://127.0.0.1:9", sink=url, coalesce=False,
              flush_interval=0.02, max_queue_size=10_000_000, concurrency=4)
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()
for i in range(n):
    meter.log(f"usr_{(i + idx) % consumers}", 1 + i % 5)
assert meter.flush(600)
sys.stdout.write(f"{time.time()}\\n"); sys.stdout.flush()
meter.shutdown(5)
"""


def start_redis(data: str) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("bench_relay: needs redis-server (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", data,
                             "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
                            stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = StreamConfig.from_url(url).connect()
    for _ in range(200):
        try:
            if client.ping():
                return proc, url
        except Exception:
            time.sleep(0.05)
    sys.exit("bench_relay: redis-server did not start")


def produce(url: str, records: int, consumers: int, procs: int = 8) -> float:
    """records/s appended by ``procs`` producer processes."""
    children = [subprocess.Popen([sys.executable, "-c", PRODUCER, url, str(records // procs), str(consumers),
                                  str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for i in range(procs)]
    for c in children:
        assert c.stdout is not None and c.stdout.readline().strip() == "ready"
    t0 = time.time()
    for c in children:
        assert c.stdin is not None
        c.stdin.write("go\n")
        c.stdin.flush()
    ends = []
    for c in children:
        assert c.stdout is not None
        ends.append(float(c.stdout.readline()))
        c.wait(60)
    return (records // procs * procs) / (max(ends) - t0)


def relay_rate(url: str, gateway_url: str, n_relays: int) -> tuple[float, int]:
    """records/s through ``n_relays`` relay processes; also the requests they sent."""
    stream = StreamConfig.from_url(url)
    client = stream.connect(decode_responses=True)
    env = {**os.environ, "AEROSTACK_API_KEY": KEY, "AEROSTACK_BASE_URL": gateway_url}
    total = gather(client, stream)["undelivered"]
    relays = [subprocess.Popen([sys.executable, "-m", "aerostack_meter.cli", "relay", "--redis", url,
                                "--name", f"bench-{n_relays}-{i}", "--block", "0.05", "--concurrency", "8"],
                               env=env, stdout=subprocess.PIPE, text=True) for i in range(n_relays)]
    try:
        # timed from the first relay's "consuming" line (after its imports and connection)
        assert relays[0].stdout is not None and "consuming" in relays[0].stdout.readline()
        t0 = time.perf_counter()
        while gather(client, stream)["undelivered"]:
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
    finally:
        for r in relays:
            r.terminate()
            r.wait(30)
    time.sleep(0.1)
    requests = sum(int(v.get("requests", 0)) for k, v in gather(client, stream)["relays"].items()
                   if k.startswith(f"bench-{n_relays}-"))
    return total / elapsed, requests


def caller_cost(n: int, **options: object) -> float:
    """ns per log() on the caller's thread, reporter running (median of 5 rounds)."""
    meter = Meter(KEY, api_id="api", flush_interval=0.05, max_queue_size=10_000_000, **options)
    rounds = []
    for _ in range(5):
        log = meter.log
        t0 = time.perf_counter_ns()
        for i in range(n):
            log(f"usr_{i % 100}", 3)
        rounds.append((time.perf_counter_ns() - t0) / n)
        meter.flush(60)
    meter.shutdown(10)
    return statistics.median(rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=40_000)
    ap.add_argument("--consumers", type=int, default=100)
    ap.add_argument("--calls", type=int, default=200_000, help="log() calls per caller-cost round")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update docs/performance.md")
    ns = ap.parse_args()

    from aerostack_meter.servers import start_gateway

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as data:
        redis_proc, url = start_redis(data)
        try:
            client = StreamConfig.from_url(url).connect()
            produced = produce(url, ns.records, ns.consumers)
            print(f"8 producers -> Redis : {produced:,.0f} records/s")
            rates = {}
            with start_gateway(keys=[KEY]) as gw:
                for n_relays in (1, 2):
                    if n_relays == 2:  # the same stream again, undelivered
                        client.flushall()
                        produce(url, ns.records, ns.consumers)
                    rate, requests = relay_rate(url, gw.url, n_relays)
                    rates[n_relays] = (rate, requests)
                    print(f"{n_relays} relay(s) -> gateway: {rate:,.0f} records/s ({requests:,} requests "
                          f"for {ns.records:,} records)")
                client.flushall()
                # the same meter both ways: the default destination (the billing API, here the
                # emulator, behind the default local store) against the Redis sink
                os.environ["AEROSTACK_METER_STATE_DIR"] = os.path.join(data, "state")
                redis_cost = caller_cost(ns.calls, sink=url, base_url=gw.url)
                local_cost = caller_cost(ns.calls, base_url=gw.url)
            print(f"caller cost: Redis sink {redis_cost / 1000:.2f} µs/log(), default destination "
                  f"{local_cost / 1000:.2f} µs/log() (ratio {redis_cost / local_cost:.2f})")
        finally:
            redis_proc.terminate()
            redis_proc.wait(10)
    load_after = os.getloadavg()

    cores = os.cpu_count() or 1
    heavy = load_before[0] > cores  # the load of others: "after" includes this benchmark's own
    warning = (f"\n**Taken under heavy load** (load average above the {cores} cores: other work shared "
               "the machine): read these as lower bounds, not as the relay's capacity.\n" if heavy else "")
    body = f"""Measured by `python benchmarks/bench_relay.py --records {ns.records}` on {machine()};
redis-server {_redis_version()} on loopback with AOF (`appendfsync everysec`), the gateway emulator
in the benchmark's process. Load average before/after: {load_before[0]:.1f} / {load_after[0]:.1f}
(this machine is shared: figures taken under load are lower bounds).
{warning}
| path | records/s | notes |
|---|---|---|
| 8 producer processes -> Redis | {produced:,.0f} | `coalesce=False`: one stream entry per `log()`, pipelined `XADD` |
| 1 relay -> gateway emulator | {rates[1][0]:,.0f} | {rates[1][1]:,} requests for {ns.records:,} records over {ns.consumers} consumers |
| 2 relays -> gateway emulator | {rates[2][0]:,.0f} | {rates[2][1]:,} requests |

A record is one coalesced sum from one app process's reporter window (with the default
`coalesce=True` an app sends one record per (consumer, API, metric) per `flush_interval`, so
these records/s carry many more events/s). A relay coalesces again per key over each read of up
to 1,000 entries, so requests to the billing API grow with the number of keys, not of records.

Caller cost of `log()` with the reporter running (median of 5 rounds of {ns.calls:,} calls):
Redis sink {redis_cost / 1000:.2f} µs, the default destination (the billing API, here the
emulator, behind the default local store) {local_cost / 1000:.2f} µs (ratio
{redis_cost / local_cost:.2f}): the Redis round trips happen on the reporter's threads, never on
the caller's.
"""
    if not ns.no_write:
        update_section("Redis relay", body)


def _redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return out.split("v=")[1].split()[0] if "v=" in out else "?"


if __name__ == "__main__":
    main()
