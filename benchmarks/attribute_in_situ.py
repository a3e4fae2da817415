"""Where a metered non-streaming call's added time goes, timed where it runs (in situ).

    python benchmarks/attribute_in_situ.py [--rounds 15] [--calls 100]

``attribute_overhead.py`` says how much a metered call adds; ``callgrind_overhead.py`` counts our
instructions. This times our own per-call parts inside real calls, between the SDK's own work:
each part (module globals and methods the hooks call through) is swapped for a probe that reads
``time.perf_counter_ns`` around it; the probe's own cost (a probe around a no-op, same shape) is
subtracted. Blocks of ``bare``, ``patched`` and ``patched + probes`` calls are interleaved round
by round (OpenAI chat and responses, Anthropic messages, sync; in-process ``MockTransport``, the
default durable store on). Per part, the median over all probed calls, in µs:

* begin:  who is billed, the request's preparation, the call object (``_wrapping.begin``);
* finish: everything after the SDK parsed the response: its kind, its usage, the record;
* usage:  the provider's reader (``Endpoint.usage``), inside finish;
* record: ``Meter.record`` (checks, then the journal record), inside finish;
* put:    the journal record itself (encode, copy into the mapped file), inside record.

"hot" repeats the last probed call of the usage reader, ``Meter.record`` and the journal record 2000 times
in a loop (the same objects, caches warm; the median of single calls, a timed no-op subtracted): the same
work without the SDK's in between.
"bare" and "added" (patched minus bare) are the calling thread's CPU time (median of the rounds'
block means); the parts are wall time, medians over single calls. "rest" is added minus begin and
finish: the hooks' own code around them and whatever the SDK pays for our being there.
A fourth block per round, ``probed, pid mark``, runs the same probed calls with the meter's fork
mark (``_forkmark``) swapped for its fallback (a Python ``__getitem__`` around ``os.getpid()``, what
platforms without a page wiped on fork pay; the check before the page was ``os.getpid()`` inline, a
frame less): its ``record`` against the page mark's says what that costs in place. "hot" also times
one fork check each way (``os.getpid()`` and the page's byte, both C calls). Prints only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peers_worker import MSGS, make_handler
from _timing import DurableNullSink
from attribute_overhead import _clients

import aerostack_meter as am
from aerostack_meter import _forkmark, _meter
from aerostack_meter.providers import _stainless

_pc = time.perf_counter_ns
PARTS = ("begin", "finish", "usage", "record", "put")
NESTED = {"begin": 1, "finish": 4, "usage": 1, "record": 2, "put": 1}  # probes inside each part, its own too


LAST: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}  # id(samples) -> the last call probed


def _probe(fn: Callable[..., Any], samples: list[int]) -> Callable[..., Any]:
    def probe(*args: Any, **kwargs: Any) -> Any:
        LAST[id(samples)] = (fn, args)
        t0 = _pc()
        try:
            return fn(*args, **kwargs)
        finally:
            samples.append(_pc() - t0)

    return probe


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _probe_cost() -> float:
    """ns a probe adds around a call (a probed no-op minus the no-op), median of 20 blocks."""
    samples: list[int] = []
    probed = _probe(_noop, samples)
    costs = []
    for _ in range(20):
        t0 = _pc()
        for _ in range(2000):
            _noop(1, 2, 3)
        t1 = _pc()
        for _ in range(2000):
            probed(1, 2, 3)
        t2 = _pc()
        costs.append(((t2 - t1) - (t1 - t0)) / 2000)
        samples.clear()
    return statistics.median(costs)


class Probes:
    """Swaps the per-call parts for probes (``on``) and back (``off``)."""

    def __init__(self, meter: am.Meter, endpoints: list[Any]) -> None:
        self.meter = meter
        self.endpoints = endpoints
        self.samples: dict[str, list[int]] = {p: [] for p in PARTS}
        self._orig = (_stainless.begin, _stainless.finish, _meter.Meter.record, meter._put)

    def on(self) -> None:
        s = self.samples
        _stainless.begin = _probe(self._orig[0], s["begin"])  # type: ignore[assignment]
        _stainless.finish = _probe(self._orig[1], s["finish"])  # type: ignore[assignment]
        _meter.Meter.record = _probe(self._orig[2], s["record"])  # type: ignore[method-assign]
        self.meter._put = _probe(self._orig[3], s["put"])  # type: ignore[method-assign]
        for ep in self.endpoints:
            ep.usage = _probe(ep.usage, s["usage"])

    def off(self) -> None:
        _stainless.begin, _stainless.finish, _meter.Meter.record, self.meter._put = self._orig  # type: ignore[method-assign]
        for ep in self.endpoints:
            del ep.usage


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=100)
    args = ap.parse_args()
    meter = am.init(sink=DurableNullSink(), api_id="api_bench", default_consumer_id="bench",
                    state_dir=tempfile.mkdtemp(prefix="aerostack-insitu-"))
    assert am.stats().durable
    clients = _clients(make_handler())
    ops: dict[str, Callable[[], Any]] = {
        "OpenAI chat": lambda: clients["openai"].chat.completions.create(model="gpt-4o-mini", messages=MSGS),
        "OpenAI responses": lambda: clients["openai"].responses.create(model="gpt-4o-mini", input="Say hello."),
        "Anthropic messages": lambda: clients["anthropic"].messages.create(
            model="claude-3-5-haiku-latest", max_tokens=256, messages=MSGS),
    }
    endpoints = []
    for base in (_stainless_base("openai._base_client"), _stainless_base("anthropic._base_client")):
        endpoints += list(base.routes.values())
    probes = Probes(meter, list({id(e): e for e in endpoints}.values()))
    cost = _probe_cost()
    print(f"load before {' '.join(f'{x:.2f}' for x in os.getloadavg())}; a probe costs {cost:.0f} ns")
    blocks: dict[str, dict[str, list[float]]] = {name: {"bare": [], "patched": []} for name in ops}
    parts: dict[str, dict[str, list[int]]] = {name: {p: [] for p in PARTS} for name in ops}
    pid_record: dict[str, list[int]] = {name: [] for name in ops}  # Meter.record with the pid mark
    page, pid_mark = meter._here, _forkmark._PidMark()
    for fn in ops.values():  # warm-up
        for _ in range(30):
            fn()
    for r in range(args.rounds):
        variants = ("bare", "patched", "probed", "pid")
        for variant in variants[r % 4:] + variants[:r % 4]:
            (am.uninstrument if variant == "bare" else am.instrument)()
            meter._here = pid_mark if variant == "pid" else page
            for name, fn in ops.items():
                if variant in ("probed", "pid"):
                    probes.on()
                for _ in range(10):
                    fn()
                for s in probes.samples.values():
                    s.clear()
                t0 = time.thread_time_ns()
                for _ in range(args.calls):
                    fn()
                t1 = time.thread_time_ns()
                if variant == "pid":
                    probes.off()
                    pid_record[name] += probes.samples["record"]
                elif variant == "probed":
                    probes.off()
                    for p in PARTS:
                        parts[name][p] += probes.samples[p]
                else:
                    blocks[name][variant].append((t1 - t0) / args.calls / 1000)
    hot = {}
    asks: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
        "no-op": (_noop, ()), "page mark": (page.__getitem__, (0,)), "getpid": (os.getpid, ())}
    for p in ("usage", "record", "put", *asks):
        fn, fargs = asks[p] if p in asks else LAST[id(probes.samples[p])]
        single = []
        for _ in range(2000):  # single calls: a median, like the parts' (a block's mean would
            t0 = _pc()         # include the journal's GIL hand-off at each 4 KiB page it fills)
            fn(*fargs)
            single.append(_pc() - t0)
        hot[p] = statistics.median(single) / 1000
    hot = {p: t - hot["no-op"] for p, t in hot.items()}
    am.uninstrument()
    assert am.flush(30)
    st = am.stats()
    assert st.usage_missing == 0 and st.internal_errors == 0, st
    print(f"load after {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.rounds} rounds x "
          f"{args.calls} calls; µs per call: bare and added in the calling thread's CPU time, the parts in "
          "wall time (medians over the probed calls, the probes' cost subtracted)\n")
    print("| call | bare | added | begin | finish | of which usage | of which record | of which put | rest |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in ops:
        bare = statistics.median(blocks[name]["bare"])
        added = statistics.median(blocks[name]["patched"]) - bare
        med = {p: (statistics.median(parts[name][p]) - NESTED[p] * cost) / 1000 for p in PARTS}
        rest = added - med["begin"] - med["finish"]
        print(f"| {name} | {bare:.1f} | +{added:.1f} | {med['begin']:.2f} | {med['finish']:.2f} | "
              f"{med['usage']:.2f} | {med['record']:.2f} | {med['put']:.2f} | {rest:+.1f} |")
    print("\nMeter.record in place, the page mark (a byte read) | the pid mark (os.getpid()): " + "; ".join(
        f"{name} {(statistics.median(parts[name]['record']) - NESTED['record'] * cost) / 1000:.2f} | "
        f"{(statistics.median(pid_record[name]) - NESTED['record'] * cost) / 1000:.2f} µs" for name in ops))
    print(f"\nhot (the last probed call repeated in a loop, the last op's objects; medians): usage reader {hot['usage']:.2f} µs, "
          f"Meter.record {hot['record']:.2f} µs, the journal record {hot['put']:.2f} µs; a fork check: "
          f"os.getpid() {(hot['getpid'] - hot['page mark']) * 1000:+.0f} ns over the page mark's byte (both C calls)")
    am.shutdown()


def _stainless_base(module: str) -> Any:
    from aerostack_meter.providers import all_providers

    for p in all_providers():
        base = getattr(p, "base_client", None)
        if base is not None and base.module == module:
            return base
    raise SystemExit(f"no base client for {module}")


if __name__ == "__main__":
    main()
