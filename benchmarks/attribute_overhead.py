"""Where a metered non-streaming call's added time goes: the caller's thread or the reporter's.

    python benchmarks/attribute_overhead.py [--rounds 8] [--calls 100] [--profile]

Real SDKs on an in-process ``MockTransport`` (the peers' canned bodies), the default durable store
on (a journal in a temporary ``state_dir``), the reporter running into a sink that drops batches.
``bare``, ``patched`` (``instrument()``) and ``wrap()`` blocks are interleaved round by round; each
block records the process CPU time and the calling thread's CPU time, so

* caller:   what the calling thread spends (our wrapper, the journal write, the SDK's own code);
* reporter: process minus caller (the reporter and any other background thread);
* wall:     the block's elapsed time (what the user waits; a loaded machine inflates it).

Figures are medians over rounds of the per-call means, in µs, with ratios to ``bare``. CPU time
is what a loaded shared machine disturbs least; the load average is printed with the figures.
``--profile`` adds a cProfile table of patched ``chat.completions.create`` calls (our functions
only, per call). Prints only; nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anthropic
import httpx2
import openai
from _peers_worker import MSGS, anthropic_options, make_handler
from _timing import DurableNullSink

import aerostack_meter as am


def _clients(handler: Any) -> dict[str, Any]:
    def sync() -> Any:
        return httpx2.Client(transport=httpx2.MockTransport(handler))

    def asyn() -> Any:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(handler))

    url = "http://mock.invalid"
    return {
        "openai": openai.OpenAI(api_key="x", base_url=url + "/v1", http_client=sync()),
        "aopenai": openai.AsyncOpenAI(api_key="x", base_url=url + "/v1", http_client=asyn()),
        "anthropic": anthropic.Anthropic(api_key="x", base_url=url, http_client=sync(), **anthropic_options()),
        "aanthropic": anthropic.AsyncAnthropic(api_key="x", base_url=url, http_client=asyn(),
                                               **anthropic_options()),
    }


Op = Callable[[Any, int], None]


def _ops(loop: asyncio.AbstractEventLoop) -> dict[str, tuple[str, Op]]:
    def chat(c: Any, n: int) -> None:
        for _ in range(n):
            c.chat.completions.create(model="gpt-4o-mini", messages=MSGS)

    def responses(c: Any, n: int) -> None:
        for _ in range(n):
            c.responses.create(model="gpt-4o-mini", input="Say hello.")

    def messages(c: Any, n: int) -> None:
        for _ in range(n):
            c.messages.create(model="claude-3-5-haiku-latest", max_tokens=256, messages=MSGS)

    def run_async(body: Callable[[Any], Any]) -> Op:
        def op(c: Any, n: int) -> None:
            async def many() -> None:
                for _ in range(n):
                    await body(c)
            loop.run_until_complete(many())
        return op

    return {
        "OpenAI chat, sync": ("openai", chat),
        "OpenAI chat, async": ("aopenai", run_async(
            lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MSGS))),
        "OpenAI responses, sync": ("openai", responses),
        "OpenAI responses, async": ("aopenai", run_async(
            lambda c: c.responses.create(model="gpt-4o-mini", input="Say hello."))),
        "Anthropic messages, sync": ("anthropic", messages),
        "Anthropic messages, async": ("aanthropic", run_async(
            lambda c: c.messages.create(model="claude-3-5-haiku-latest", max_tokens=256, messages=MSGS))),
    }


def _block(op: Op, client: Any, n: int) -> tuple[float, float, float]:
    op(client, 10)  # after a switch (instrument/uninstrument): steady state before timing
    gc.collect()
    w0, p0, t0 = time.perf_counter_ns(), time.process_time_ns(), time.thread_time_ns()
    op(client, n)
    t1, p1, w1 = time.thread_time_ns(), time.process_time_ns(), time.perf_counter_ns()
    return (p1 - p0) / n / 1000, (t1 - t0) / n / 1000, (w1 - w0) / n / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    state = tempfile.mkdtemp(prefix="aerostack-attr-")
    am.init(sink=DurableNullSink(), api_id="api_bench", default_consumer_id="bench", state_dir=state)
    print(f"durable: {am.stats().durable}; load before "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    loop = asyncio.new_event_loop()
    clients = _clients(make_handler())
    wrapped = {k: am.wrap(v) for k, v in clients.items()}
    ops = _ops(loop)
    variants = ("bare", "patched", "wrap()")
    got: dict[str, dict[str, list[tuple[float, float, float]]]] = {k: {v: [] for v in variants} for k in ops}
    for key, op in ops.values():  # warm-up: lazy SDK imports, first-call caches
        am.instrument()
        op(clients[key], 20)
        am.uninstrument()
        op(clients[key], 20)
        op(wrapped[key], 20)
    for r in range(args.rounds):
        order = variants[r % 3:] + variants[:r % 3]
        for variant in order:
            (am.instrument if variant == "patched" else am.uninstrument)()
            for name, (key, op) in ops.items():
                c = wrapped[key] if variant == "wrap()" else clients[key]
                got[name][variant].append(_block(op, c, args.calls))
    am.uninstrument()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{args.rounds} rounds x {args.calls} calls; load after {load}; µs per call (CPU time)\n")
    print("| call | bare process | patched: process, ratio | caller | reporter | wrap(): process, ratio "
          "| caller | reporter |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    walls = []
    for name in ops:
        med = {v: tuple(statistics.median(x[i] for x in got[name][v]) for i in range(3)) for v in variants}
        bp, bt, bw = med["bare"]
        cells = [f"{bp:.1f}"]
        wcells = [f"{bw:.1f}"]
        for v in ("patched", "wrap()"):
            p, t, w = med[v]
            cells += [f"+{p - bp:.1f}, {p / bp:.3f}x", f"+{t - bt:.1f}", f"+{(p - t) - (bp - bt):.1f}"]
            wcells += [f"{w - bw:+.1f}, {w / bw:.3f}x"]
        print(f"| {name} | " + " | ".join(cells) + " |")
        walls.append(f"| {name} | " + " | ".join(wcells) + " |")
    print("\nwall time (µs per call, same blocks)\n")
    print("| call | bare | patched: added, ratio | wrap(): added, ratio |")
    print("|---|---:|---:|---:|")
    print("\n".join(walls))
    if args.profile:
        am.instrument()
        c = clients["openai"]
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(2000):
            c.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
        prof.disable()
        am.uninstrument()
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats("aerostack_meter", 30)
    am.shutdown()


if __name__ == "__main__":
    main()
