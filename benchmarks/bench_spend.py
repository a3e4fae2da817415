"""Spend control benchmark: what a budget check and metrics="cost" cost the caller.

    python benchmarks/bench_spend.py [--calls 20000] [--rounds 7] [--no-write]

1. The budget check a metered call adds on the caller's thread with a local source
   (``Budget(limits=...)``): finding the budget, the worst case (input estimate + max_tokens),
   reserving it under the lock, and shrinking the hold at the call's end. Tokens and money units.
   Goal: under 5 µs.
2. ``metrics="cost"`` on the caller: recording a call's usage with ``metrics="cost"`` against
   ``metrics="tokens"``, with the default durable store (journal in a temporary state directory)
   and with the memory store (``durable=False``). Goal: no difference on the caller. Pricing runs
   on the reporter thread in both modes: in durable mode the caller journals the call's raw usage
   (one write, like a token event, a few more bytes), in memory mode it queues the record. The
   row "caller's added cost" is cost minus tokens, per call, each pair measured in one run.
Figures go to docs/performance.md, section "Spend control".
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _perfdoc import machine, update_section
from _timing import NullSink

import aerostack_meter as am
from aerostack_meter._meter import Attribution
from aerostack_meter._usage import Usage

MODEL = "gpt-4o-mini"
REQUEST: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 300,
    "messages": [
        {"role": "system", "content": "You are a helpful assistant for a travel booking site. " * 3},
        {"role": "user", "content": "I would like to change my flight to next Tuesday, is that possible?"},
        {"role": "assistant", "content": "Yes, changes are possible up to 24 hours before departure."},
        {"role": "user", "content": "Great, what would it cost me to move it to the morning flight?"},
    ],
}
USAGE = Usage("openai", MODEL, 120, 80, 200, cached_input_tokens=40)


def median_us(fn: Any, n: int, rounds: int) -> float:
    """Median over rounds of the mean CPU time of the calling thread per call (what the caller
    pays, and less disturbed by a busy machine than wall time), minus the empty loop's."""
    def loop(body: Any) -> float:
        gc.collect()
        gc.disable()
        try:
            t0 = time.thread_time_ns()
            for _ in range(n):
                body()
            return (time.thread_time_ns() - t0) / n / 1000
        finally:
            gc.enable()

    def empty() -> None:
        pass

    return statistics.median(loop(fn) - loop(empty) for _ in range(rounds))


def budget_check(unit: str, n: int, rounds: int) -> float:
    budget = am.Budget(limits={"usr_1": 10**15}, unit=unit)
    meter = am.Meter(sink=NullSink(), api_id="api", flush_interval=60, budget=budget)
    if unit == "cost":
        budget.worst_case("openai", REQUEST)  # the model's rates: looked up once, then cached
    held: list[Any] = []

    def check() -> None:
        b = meter.budget_for(None)
        assert b is not None
        res = b.reserve(meter, "usr_1", "openai", REQUEST)
        assert res is not None
        res.hold(USAGE)
        held.append(res)

    try:
        out = median_us(check, n, rounds)
    finally:
        for res in held:  # the reporter's part, outside the measurement
            res.settle(200)
        meter.shutdown(5)
    return out


class NamedNullSink(NullSink):
    """Drops every batch but names a destination, so the meter journals to disk first (a sink
    without ``destination`` always gets the memory store)."""

    destination = "bench-null"


def record_cost(metrics: str, n: int, rounds: int, *, durable: bool) -> float:
    with tempfile.TemporaryDirectory() as state:
        meter = am.Meter(sink=NamedNullSink(), api_id="api", flush_interval=60, metrics=metrics,
                         max_queue_size=10_000_000, durable=durable, state_dir=state)
        assert meter.stats().durable is durable, "the store measured is not the one named"
        att = Attribution("usr_1", "api", metrics)
        try:
            return median_us(lambda: meter.record(USAGE, att), n, rounds)
        finally:
            meter.shutdown(30)


def pricing_on_reporter(n: int, rounds: int) -> float:
    policy = am.cost_policy()
    policy(USAGE)  # table loaded
    return median_us(lambda: policy.bill(USAGE, "usr_1", "api", 0.0), max(n // 20, 100), rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    check_tokens = budget_check("tokens", args.calls, args.rounds)
    check_cost = budget_check("cost", args.calls, args.rounds)
    rec_tokens = record_cost("tokens", args.calls, args.rounds, durable=True)
    rec_cost = record_cost("cost", args.calls, args.rounds, durable=True)
    mem_tokens = record_cost("tokens", args.calls, args.rounds, durable=False)
    mem_cost = record_cost("cost", args.calls, args.rounds, durable=False)
    pricing = pricing_on_reporter(args.calls, args.rounds)
    rows = [
        ("budget check, local `Budget(limits=...)`, unit tokens", check_tokens, "< 5 µs"),
        ("budget check, local `Budget(limits=...)`, unit cost (µUSD)", check_cost, "< 5 µs"),
        ('recording a call, `metrics="tokens"`, durable store (default)', rec_tokens, ""),
        ('recording a call, `metrics="cost"`, durable store (default)', rec_cost,
         f"ratio to tokens: {rec_cost / rec_tokens:.2f}x (one raw-usage write, priced later)"),
        ('caller\'s added cost of `metrics="cost"`, durable store', rec_cost - rec_tokens, "goal ≈ 0"),
        ('recording a call, `metrics="tokens"`, memory store (`durable=False`)', mem_tokens, ""),
        ('recording a call, `metrics="cost"`, memory store (`durable=False`)', mem_cost,
         f"ratio to tokens: {mem_cost / mem_tokens:.2f}x"),
        ('caller\'s added cost of `metrics="cost"`, memory store', mem_cost - mem_tokens, "goal ≈ 0"),
        ('pricing one call (reporter thread, not the caller\'s)', pricing, "information"),
    ]
    body = "\n".join([
        "`benchmarks/bench_spend.py`: the caller's added cost of spend control, in CPU time of the",
        f"calling thread per call (median of {args.rounds} rounds of {args.calls} calls, empty loop",
        "subtracted). The budget check is everything a metered call does for its budget on the",
        "caller's thread:",
        "finding the budget, the worst case (input estimate of a 4-message chat + `max_tokens`),",
        "reserving it, and shrinking the hold at the end. Pricing (`metrics=\"cost\"`) runs on the",
        "reporter thread: with the default durable store the caller journals the call's raw usage",
        "(one write) and the reporter prices it; with the memory store the caller queues it",
        "(see docs/cost.md, \"Where the work happens\").",
        "",
        "| operation | µs per call | note |",
        "|---|---:|---|",
        *[f"| {name} | {us:.2f} | {note} |" for name, us, note in rows],
        "",
        f"Machine: {machine()}; load average {load:.1f} at the start"
        + (" (a busy shared machine: read the figures as upper bounds)." if load > 2 else "."),
    ])
    print(body)
    if not args.no_write:
        update_section("Spend control", body)


if __name__ == "__main__":
    main()
