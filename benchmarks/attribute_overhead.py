"""Where a metered non-streaming call's added time goes: the caller's thread or the reporter's.

    python benchmarks/attribute_overhead.py [--rounds 8] [--calls 100] [--ops chat,...] [--profile]

Real SDKs on an in-process ``MockTransport`` (the peers' canned bodies; Gemini, Bedrock and Mistral
the mock LLM server's own bodies, as ``callgrind_overhead.py`` builds them: Bedrock through a
botocore ``before-send`` handler, its patched client built after ``instrument()`` as in an
application that calls ``init()`` first), the default durable store
on (a journal in a temporary ``state_dir``), the reporter running into a sink that drops batches.
``bare``, ``patched`` (``instrument()``), ``wrap()`` and ``bare again`` blocks are interleaved round by round; each
block records the process CPU time and the calling thread's CPU time, so

* caller:   what the calling thread spends (our wrapper, the journal write, the SDK's own code);
* reporter: process minus caller (the reporter and any other background thread);
* wall:     the block's elapsed time (what the user waits; a loaded machine inflates it).

Figures are medians over rounds of the per-call means, in µs, with ratios to ``bare``. CPU time
is what a loaded shared machine disturbs least; the load average is printed with the figures.
``--ops`` picks the calls (default: the OpenAI and Anthropic ones): ``chat``, ``achat``,
``responses``, ``aresponses``, ``messages``, ``amessages``, ``gemini``, ``agemini``, ``converse``,
``invoke_model``, ``mistral``, ``amistral`` (``new``: the last six).
A last table pairs each block with the same round's bare block: the median ratio and a 95% bootstrap
confidence interval of it, with ``bare again`` (the bare SDK against itself) as the noise floor. ``--profile`` adds a cProfile table of patched ``chat.completions.create`` calls (our functions
only, per call). Prints only; nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import random
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
from _floor import FLOORED, Floor
from _peers_worker import MSGS, anthropic_options, make_handler
from _timing import DurableNullSink
from callgrind_overhead import BEDROCK_MODEL, BEDROCK_MSGS, NEW, _new_clients

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

# op name -> (label, client key, async?, one call of it); ``_ops`` makes the blocks' loops of them,
# ``attribute_interleaved.py`` times them one by one
CALLS: dict[str, tuple[str, str, bool, Callable[[Any], Any]]] = {
    "chat": ("OpenAI chat, sync", "openai", False,
             lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MSGS)),
    "achat": ("OpenAI chat, async", "aopenai", True,
              lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MSGS)),
    "responses": ("OpenAI responses, sync", "openai", False,
                  lambda c: c.responses.create(model="gpt-4o-mini", input="Say hello.")),
    "aresponses": ("OpenAI responses, async", "aopenai", True,
                   lambda c: c.responses.create(model="gpt-4o-mini", input="Say hello.")),
    "messages": ("Anthropic messages, sync", "anthropic", False,
                 lambda c: c.messages.create(model="claude-3-5-haiku-latest", max_tokens=256, messages=MSGS)),
    "amessages": ("Anthropic messages, async", "aanthropic", True,
                  lambda c: c.messages.create(model="claude-3-5-haiku-latest", max_tokens=256, messages=MSGS)),
    "gemini": ("Gemini generate_content, sync", "gemini", False,
               lambda c: c.models.generate_content(model="gemini-2.5-flash", contents="Say hello.")),
    "agemini": ("Gemini generate_content, async", "gemini", True,
                lambda c: c.aio.models.generate_content(model="gemini-2.5-flash", contents="Say hello.")),
    "converse": ("Bedrock converse", "bedrock", False,
                 lambda c: c.converse(modelId=BEDROCK_MODEL, messages=BEDROCK_MSGS)),
    "invoke_model": ("Bedrock invoke_model", "bedrock", False, lambda c: c.invoke_model(
        modelId=BEDROCK_MODEL, body=b'{"messages": [], "max_tokens": 10}')["body"].read()),
    "mistral": ("Mistral chat.complete, sync", "mistral", False,
                lambda c: c.chat.complete(model="mistral-small-latest", messages=MSGS)),
    "amistral": ("Mistral chat.complete_async", "mistral", True,
                 lambda c: c.chat.complete_async(model="mistral-small-latest", messages=MSGS)),
}


def _ops(loop: asyncio.AbstractEventLoop) -> dict[str, tuple[str, str, Op]]:
    def run_async(body: Callable[[Any], Any]) -> Op:
        def op(c: Any, n: int) -> None:
            async def many() -> None:
                for _ in range(n):
                    await body(c)
            loop.run_until_complete(many())
        return op

    def sync(body: Callable[[Any], Any]) -> Op:
        def op(c: Any, n: int) -> None:
            for _ in range(n):
                body(c)
        return op

    return {name: (label, key, run_async(body) if is_async else sync(body))
            for name, (label, key, is_async, body) in CALLS.items()}


def _block(op: Op, client: Any, n: int) -> tuple[float, float, float]:
    op(client, 10)  # after a switch (instrument/uninstrument): steady state before timing
    gc.collect()
    w0, p0, t0 = time.perf_counter_ns(), time.process_time_ns(), time.thread_time_ns()
    op(client, n)
    t1, p1, w1 = time.thread_time_ns(), time.process_time_ns(), time.perf_counter_ns()
    return (p1 - p0) / n / 1000, (t1 - t0) / n / 1000, (w1 - w0) / n / 1000


def _median_ci(values: list[float], resamples: int = 2000) -> tuple[float, float]:
    """A 95% bootstrap confidence interval of the median (percentile method, fixed seed)."""
    if len(values) < 2:
        return values[0], values[0]
    rng = random.Random(16)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1]


def _paired(ops: dict[str, tuple[str, Op]], got: dict[str, dict[str, list[tuple[float, float, float]]]]) -> None:
    """Ratios paired round by round (each block against the same round's bare block): the median
    and its 95% bootstrap confidence interval; the ``bare again`` column (the bare SDK against
    itself) is the noise floor. A goal of ≤ 1.03x is shown met only where the interval's upper
    end is at or under 1.03."""
    print("\nratios paired by round, median [95% CI of the median] (process CPU time | wall time)\n")
    print("| call | patched | wrap() | floor (usage read only) | bare again (A/A) |")
    print("|---|---:|---:|---:|---:|")
    for name in ops:
        cells = []
        for v in ("patched", "wrap()", "floor", "bare again"):
            parts = []
            for i in (0, 2):
                if not got[name][v]:
                    parts.append("n/a")
                    continue
                ratios = [x[i] / b[i] for x, b in zip(got[name][v], got[name]["bare"], strict=True)]
                lo, hi = _median_ci(ratios)
                parts.append(f"{statistics.median(ratios):.3f}x [{lo:.3f}-{hi:.3f}]")
            cells.append(" \\| ".join(parts))
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--ops", default="chat,achat,responses,aresponses,messages,amessages",
                    help="comma-separated calls; 'new': Gemini, Bedrock and Mistral")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    chosen = [o for o in args.ops.replace("new", ",".join(NEW)).split(",") if o]
    state = tempfile.mkdtemp(prefix="aerostack-attr-")
    am.init(sink=DurableNullSink(), api_id="api_bench", default_consumer_id="bench", state_dir=state)
    print(f"durable: {am.stats().durable}; load before "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    loop = asyncio.new_event_loop()
    every = _ops(loop)
    unknown = [o for o in chosen if o not in every]
    if unknown:
        ap.error(f"unknown ops {unknown}; known: {', '.join(every)}")
    ops = {every[o][0]: every[o][1:] for o in chosen}
    am.uninstrument()  # the bare clients are built, and first called, before anything is patched
    clients = _clients(make_handler())
    for key in sorted({NEW[o] for o in chosen if o in NEW}):
        clients[key] = _new_clients(key)
    wrapped = {k: am.wrap(v) for k, v in clients.items()}
    patched = dict(clients)
    if "bedrock" in clients:  # botocore meters a client at the class it builds after init()
        am.instrument(("bedrock",))
        patched["bedrock"] = _new_clients("bedrock")
        am.uninstrument()
    variants = ("bare", "patched", "wrap()", "floor", "bare again")
    floor = Floor()
    got: dict[str, dict[str, list[tuple[float, float, float]]]] = {k: {v: [] for v in variants} for k in ops}
    for key, op in ops.values():  # warm-up: lazy SDK imports, first-call caches
        op(clients[key], 20)
        am.instrument()
        op(patched[key], 20)
        am.uninstrument()
        op(clients[key], 20)
        op(wrapped[key], 20)
    for r in range(args.rounds):
        order = variants[r % 5:] + variants[:r % 5]
        for variant in order:
            floor.off()  # first: it puts back the SDK's own method, which instrument() then wraps
            (am.instrument if variant == "patched" else am.uninstrument)()
            if variant == "floor":
                floor.on()
            for name, (key, op) in ops.items():
                if variant == "floor" and key not in FLOORED:
                    continue
                c = (wrapped if variant == "wrap()" else patched if variant == "patched" else clients)[key]
                got[name][variant].append(_block(op, c, args.calls))
    am.uninstrument()
    floor.off()
    floored = sum(1 for key, _ in ops.values() if key in FLOORED)
    assert floor.read_so_far >= args.rounds * args.calls * floored, floor.read_so_far
    assert am.flush(30)
    st = am.stats()  # every patched and wrap() call metered, exactly
    assert st.usage_missing == 0 and st.internal_errors == 0 and not st.events_estimated, st
    assert st.calls_metered >= 2 * args.rounds * args.calls * len(ops), st.calls_metered
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{args.rounds} rounds x {args.calls} calls; load after {load}; µs per call (CPU time)\n")
    print("| call | bare process | patched: process, ratio | caller | reporter | wrap(): process, ratio "
          "| caller | reporter |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    walls = []
    for name in ops:
        med = {v: tuple(statistics.median(x[i] for x in got[name][v]) for i in range(3))
               for v in variants if got[name][v]}
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
    _paired(ops, got)
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
