"""A metered non-streaming call's added time, with bare and metered calls alternating one by one.

    python benchmarks/attribute_interleaved.py [--rounds 40] [--runs 8] [--run 3] [--ops chat,...] [--seed 16]

``attribute_overhead.py`` times blocks of calls and switches the meter on and off between them: on
a shared host whose speed drifts within seconds, a block-to-block comparison cannot resolve 3%
(its bare-against-bare intervals spanned ±5-10% on 2026-12-02). Here the meter stays on for the
whole run (``instrument()``, the default durable store, a reporter running into a sink that drops
batches) and the calls alternate one by one, in a shuffled order each round: the host's drift
lands on every variant alike. The variants, each on its own client over the same in-process
transport (as ``attribute_overhead.py`` builds them):

* bare:       a bare twin (``_bare.py``): the SDK's own code, though ``instrument()`` is on;
* patched:    a client of the patched SDK (Bedrock's built after ``instrument()``);
* wrap():     ``wrap(client)`` (on instrumented classes: a call passes our inactive class-level
              hook as well, where the provider has one below the wrapped method: Gemini, Bedrock);
* bare again: a second bare twin (the noise floor);
* floor:      OpenAI's and Anthropic's: a bare twin whose ``_process_response`` reads the two token
              counts (``_floor.py``): the least any meter at our place pays.

Each round, for each call, the variants come in runs (``--runs`` of each, shuffled): a run is one
untimed call (it meets the caches the previous run's variant left: mixing variants call by call
would charge our code's cache footprint to the bare calls too) and ``--run`` timed ones, in the
calling thread's CPU time (``time.thread_time_ns``) and wall time.
The work of our background threads (the reporter, its senders; not an SDK's own) is measured on their own CPU clocks
over the whole run and divided among the metered calls (patched and ``wrap()``, timed or not): it
is added to those variants' CPU figures in the "+ background" columns. Part of it is per second, not per call (a window a second,
a request per key and window): at this benchmark's rate of metered calls it is spread thinly, at a
rate of a few calls a second it is most of it. Per round and variant, the mean of its timed calls;
ratios are paired by round (each variant against the same round's bare mean), printed as the
median over rounds and a 95% bootstrap confidence interval of it. A goal of ≤ 1.03x is shown met
where the interval's upper end is at or under 1.03. Prints only.

``--knock put,record,attribution`` (a diagnostic, to attribute the gap in place: nothing is billed
and the run's delivery checks are skipped) replaces parts of the metered path, for the whole run,
with what costs nothing: ``put`` the journal record (the store's ``put``), ``record`` all of
``Meter.record`` (the metric policy, the record), ``attribution`` the attribution of a call (the
first call's, kept); ``gc`` the cyclic garbage collector (``gc.disable()``: what the collections
triggered by the calls' allocations cost). What is left is the hooks and the usage reader.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bare import Twins
from _floor import FLOORED, Floor
from _peers_worker import make_handler
from _timing import DurableNullSink
from attribute_overhead import CALLS, _clients, _median_ci
from callgrind_overhead import NEW, _new_clients

import aerostack_meter as am

KNOCKABLE = ("put", "record", "attribution", "gc")
VARIANTS = ("bare", "patched", "wrap()", "bare again", "floor")
DEFAULT_OPS = "chat,achat,responses,aresponses,messages,amessages"


def _patch_holders(key: str, client: Any) -> list[Any]:
    """The objects of ``client`` whose classes ``instrument()`` patches for this provider."""
    if key == "gemini":
        return [client.models, client.aio.models]
    if key == "mistral":
        return [client.chat]
    return [client]


def _build(keys: set[str], floor: Floor) -> tuple[dict[str, dict[str, Any]], int]:
    """Per client key: a client for each variant (the bare ones twinned once ``instrument()`` is
    on; then on). Returns them and how many objects were twinned."""
    handler = make_handler()
    made: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        clients = _clients(handler)
        for key in keys & set(NEW.values()):
            clients[key] = _new_clients(key)
        for key in keys:
            if variant != "floor" or key in FLOORED:
                made.setdefault(key, {})[variant] = clients[key]
    bare = [(key, v) for key in keys for v in ("bare", "bare again", "floor") if v in made[key]]
    holders = [h for key, v in bare for h in _patch_holders(key, made[key][v])]
    twins = Twins(holders)
    am.instrument()
    for holder in holders:
        twins.twin(holder)
    for key in keys:
        if "floor" in made[key]:
            c = made[key]["floor"]
            c.__class__ = floor.twin_class(type(c))
        if key == "bedrock":  # botocore meters a client at the class it builds after init()
            made[key]["patched"] = _new_clients("bedrock")
        made[key]["wrap()"] = am.wrap(made[key]["wrap()"])
    return made, len(holders)


def _knock(parts: set[str]) -> None:
    """Replace the named parts of the metered path with no-ops (see ``--knock``)."""
    from aerostack_meter import _global, _wrapping

    meter = _global._meter
    assert meter is not None
    if "put" in parts:
        meter._put = lambda *_args: None
    if "record" in parts:
        setattr(meter, "record", lambda *_args, **_kwargs: None)  # noqa: B010 (an instance's, over the method)
    if "attribution" in parts:
        resolve = getattr(_wrapping, "_attribute")  # noqa: B009
        kept: list[Any] = []

        def attribute(*args: Any) -> Any:
            if not kept:
                kept.append(resolve(*args))
            return kept[0]

        setattr(_wrapping, "_attribute", attribute)  # noqa: B010
    if "gc" in parts:
        gc.disable()


def _background_cpu() -> dict[tuple[int, str], float]:
    """CPU seconds so far of each of our threads (the reporter, its senders), by (id, name); not
    the SDKs' own (an asyncio executor's threads: the bare calls use them too)."""
    out = {}
    for t in threading.enumerate():
        if t.ident is not None and t.name.startswith("aerostack-meter") and t.is_alive():
            with contextlib.suppress(OSError, ProcessLookupError):  # it ended meanwhile
                out[t.ident, t.name] = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
    return out


def _round_sync(schedule: list[str], clients: dict[str, Any], call: Callable[[Any], Any], run: int,
                acc: dict[str, list[tuple[int, int]]]) -> None:
    tt, pc = time.thread_time_ns, time.perf_counter_ns
    for v in schedule:
        c = clients[v]
        call(c)  # untimed: it meets the caches the previous variant's calls left
        t0, w0 = tt(), pc()
        for _ in range(run):
            call(c)
        w1, t1 = pc(), tt()
        acc[v].append((t1 - t0, w1 - w0))


async def _round_async(schedule: list[str], clients: dict[str, Any], call: Callable[[Any], Any], run: int,
                       acc: dict[str, list[tuple[int, int]]]) -> None:
    tt, pc = time.thread_time_ns, time.perf_counter_ns
    for v in schedule:
        c = clients[v]
        await call(c)
        t0, w0 = tt(), pc()
        for _ in range(run):
            await call(c)
        w1, t1 = pc(), tt()
        acc[v].append((t1 - t0, w1 - w0))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--runs", type=int, default=8, help="runs of each variant per round")
    ap.add_argument("--run", type=int, default=3, help="timed calls per run (after one untimed call)")
    ap.add_argument("--ops", default=DEFAULT_OPS, help="comma-separated calls; 'new': Gemini, Bedrock and Mistral")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--knock", default="", help=f"diagnostic: parts replaced by no-ops ({', '.join(KNOCKABLE)})")
    args = ap.parse_args()
    knocked = {k for k in args.knock.split(",") if k}
    if knocked - set(KNOCKABLE):
        ap.error(f"unknown parts {sorted(knocked - set(KNOCKABLE))}; known: {', '.join(KNOCKABLE)}")
    chosen = [o for o in args.ops.replace("new", ",".join(NEW)).split(",") if o]
    unknown = [o for o in chosen if o not in CALLS]
    if unknown:
        ap.error(f"unknown ops {unknown}; known: {', '.join(CALLS)}")
    am.init(sink=DurableNullSink(), api_id="api_bench", default_consumer_id="bench",
            state_dir=tempfile.mkdtemp(prefix="aerostack-interleaved-"))
    assert am.stats().durable
    _knock(knocked)
    am.uninstrument()  # the clients are built, and their classes recorded, before anything is patched
    floor = Floor()
    made, twinned = _build({CALLS[o][1] for o in chosen}, floor)
    loop = asyncio.new_event_loop()
    rng = random.Random(args.seed)
    print(f"load before {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {twinned} objects twinned"
          + (f"; knocked out: {', '.join(sorted(knocked))}" if knocked else ""))

    def variants(name: str) -> list[str]:
        return [v for v in VARIANTS if v in made[CALLS[name][1]]]

    def run(name: str, schedule: list[str], acc: dict[str, list[tuple[int, int]]]) -> None:
        _label, key, is_async, call = CALLS[name]
        if is_async:
            loop.run_until_complete(_round_async(schedule, made[key], call, args.run, acc))
        else:
            _round_sync(schedule, made[key], call, args.run, acc)

    for name in chosen:  # warm-up: lazy SDK imports, first-call caches
        run(name, [v for v in variants(name) for _ in range(5)], {v: [] for v in VARIANTS})
    assert am.flush(30)  # the warm-up's records counted (calls_metered is counted as they are read)
    before = am.stats().calls_metered
    bg0, start = _background_cpu(), time.monotonic()
    # per op, variant: per round (mean caller CPU ns, mean wall ns)
    got: dict[str, dict[str, list[tuple[float, float]]]] = {name: {v: [] for v in VARIANTS} for name in chosen}
    for _ in range(args.rounds):
        for name in rng.sample(chosen, len(chosen)):
            schedule = [v for v in variants(name) for _ in range(args.runs)]
            rng.shuffle(schedule)
            acc: dict[str, list[tuple[int, int]]] = {v: [] for v in VARIANTS}
            run(name, schedule, acc)
            for v in variants(name):  # the round's mean per call
                got[name][v].append((sum(x[0] for x in acc[v]) / (args.runs * args.run),
                                     sum(x[1] for x in acc[v]) / (args.runs * args.run)))
    bg1, seconds = _background_cpu(), time.monotonic() - start
    assert am.flush(30)
    st = am.stats()
    metered = st.calls_metered - before
    expected = 2 * args.rounds * args.runs * (args.run + 1) * len(chosen)  # patched and wrap(), once each
    assert st.usage_missing == 0 and st.internal_errors == 0 and not st.events_estimated, st
    if not knocked:  # (knocked out, nothing is billed)
        assert metered == expected, (metered, expected)  # and no bare twin's call was metered
    floored = sum(1 for name in chosen if CALLS[name][1] in FLOORED)
    assert floor.read_so_far >= args.rounds * args.runs * (args.run + 1) * floored, floor.read_so_far
    by_thread = {i: t - bg0.get(i, 0.0) for i, t in bg1.items()}
    background = sum(by_thread.values())
    background_us = background / max(metered, 1) * 1e6
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load after {load}; {args.rounds} rounds x {args.runs} runs of {args.run} timed calls of each variant, "
          f"shuffled; background threads: {background * 1000:.1f} ms of CPU in {seconds:.1f} s "
          f"({metered / seconds:.0f} metered calls/s): {background_us:.2f} µs per metered call (" + ", ".join(
              f"{name} {t * 1000:.1f} ms" for (_i, name), t in sorted(by_thread.items(), key=lambda x: -x[1])) + ")\n")
    print("| call | bare µs (caller CPU) | patched | wrap() | floor | bare again (A/A) | patched + background "
          "| wrap() + background | patched, wall | wrap(), wall | A/A, wall |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    columns = [("patched", 0, 0.0), ("wrap()", 0, 0.0), ("floor", 0, 0.0), ("bare again", 0, 0.0),
               ("patched", 0, background_us * 1000), ("wrap()", 0, background_us * 1000),
               ("patched", 1, 0.0), ("wrap()", 1, 0.0), ("bare again", 1, 0.0)]
    for name in chosen:
        g = got[name]
        cells = [f"{statistics.median(x[0] for x in g['bare']) / 1000:.1f}"]
        for v, i, add in columns:
            if not g[v]:
                cells.append("n/a")
                continue
            ratios = [(x[i] + add) / b[i] for x, b in zip(g[v], g["bare"], strict=True)]
            lo, hi = _median_ci(ratios)
            cells.append(f"{statistics.median(ratios):.3f}x [{lo:.3f}-{hi:.3f}]")
        print(f"| {CALLS[name][0]} | " + " | ".join(cells) + " |")
    am.shutdown()


if __name__ == "__main__":
    main()
