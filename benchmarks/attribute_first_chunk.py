"""What a metered stream adds before its first chunk, against what a metered call adds.

    python benchmarks/attribute_first_chunk.py [--rounds 20] [--calls 30]

Real SDKs on an in-process ``MockTransport`` (the peers' canned bodies), the default durable store
on. ``bare`` and ``patched`` (``instrument()``) blocks alternate round by round, each with the
garbage collector on (as users run) and paused (as ``callgrind_overhead.py`` counts). Timed per
call, thread CPU time and wall time: from ``create(stream=True)`` to the first chunk (the rest of
the stream is read, untimed), and a non-streaming ``create`` for comparison. OpenAI chat is timed
twice: as a caller writes it (the meter injects ``stream_options.include_usage``: a copy of the
request options, and a server that adds ``"usage": null`` to every chunk) and with the caller
asking for the usage itself (nothing injected); and, bare only, with ``include_usage`` sent in
``extra_body`` (the SDK's own cost of the option without its transform of the caller's
``stream_options``: what an injected request costs the SDK). Medians per call, µs; then the
attribution lines: the SDK's own cost of the option, and each first chunk beyond the per-call
figure. Prints only; figures go to docs/performance.md ("Streams" under "Overhead attribution
(issue 16)"). Run it on a quiet machine (``uptime``): the cells move by ~15 µs between runs.
"""

from __future__ import annotations

import argparse
import gc
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

Timing = tuple[float, float]  # (wall µs, thread CPU µs)


def _first(make: Callable[[], Any]) -> Timing:
    w0, t0 = time.perf_counter_ns(), time.thread_time_ns()
    stream = make()
    next(iter(stream))
    t1, w1 = time.thread_time_ns(), time.perf_counter_ns()
    for _ in stream:
        pass
    return (w1 - w0) / 1000, (t1 - t0) / 1000


def _whole(make: Callable[[], Any]) -> Timing:
    w0, t0 = time.perf_counter_ns(), time.thread_time_ns()
    make()
    t1, w1 = time.thread_time_ns(), time.perf_counter_ns()
    return (w1 - w0) / 1000, (t1 - t0) / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--calls", type=int, default=30, help="timed calls per block")
    args = ap.parse_args()
    am.init(sink=DurableNullSink(), api_id="api_bench", default_consumer_id="bench",
            state_dir=tempfile.mkdtemp(prefix="aerostack-first-"))
    c = _clients(make_handler())
    o, a = c["openai"], c["anthropic"]
    chat = dict(model="gpt-4o-mini", messages=MSGS)
    msg = dict(model="claude-3-5-haiku-latest", max_tokens=256, messages=MSGS)
    ops: dict[str, Callable[[], Timing]] = {
        "OpenAI chat, first chunk": lambda: _first(lambda: o.chat.completions.create(**chat, stream=True)),
        "OpenAI chat, first chunk, caller asks include_usage": lambda: _first(
            lambda: o.chat.completions.create(**chat, stream=True, stream_options={"include_usage": True})),
        "OpenAI chat, first chunk, include_usage in extra_body": lambda: _first(
            lambda: o.chat.completions.create(**chat, stream=True, extra_body={"stream_options": {"include_usage": True}})),
        "OpenAI chat, non-streaming call": lambda: _whole(lambda: o.chat.completions.create(**chat)),
        "Anthropic messages, first chunk": lambda: _first(lambda: a.messages.create(**msg, stream=True)),
        "Anthropic messages, non-streaming call": lambda: _whole(lambda: a.messages.create(**msg)),
    }
    got: dict[tuple[str, bool, str], list[Timing]] = {}
    print(f"load before {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for r in range(args.rounds):
        for collector in (True, False):
            for variant in (("bare", "patched") if r % 2 else ("patched", "bare")):
                (am.instrument if variant == "patched" else am.uninstrument)()
                for name, op in ops.items():
                    for _ in range(5):  # after a switch: steady state before timing
                        op()
                    gc.collect()
                    if not collector:
                        gc.disable()
                    got.setdefault((name, collector, variant), []).extend(op() for _ in range(args.calls))
                    gc.enable()
    am.uninstrument()
    print(f"{args.rounds} rounds x {args.calls} calls; load after "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; medians, µs\n")
    print("| operation | collector | bare wall | patched: wall added | thread CPU added |")
    print("|---|---|---:|---:|---:|")
    for name in ops:
        for collector in (True, False):
            bare, patched = got[(name, collector, "bare")], got[(name, collector, "patched")]
            bw = statistics.median(x[0] for x in bare)
            pw = statistics.median(x[0] for x in patched)
            bc = statistics.median(x[1] for x in bare)
            pc = statistics.median(x[1] for x in patched)
            print(f"| {name} | {'on' if collector else 'paused'} | {bw:.1f} | {pw - bw:+.1f} | {pc - bc:+.1f} |")

    def med(name: str, collector: bool, variant: str, i: int = 0) -> float:
        return statistics.median(x[i] for x in got[(name, collector, variant)])

    def added(name: str, collector: bool) -> float:
        return med(name, collector, "patched") - med(name, collector, "bare")

    first = "OpenAI chat, first chunk"
    print("\nattribution (wall, µs; collector on / paused):")
    for label, name in (("the bare SDK's own include_usage, the caller's stream_options (its transform "
                         "included)", f"{first}, caller asks include_usage"),
                        ("the bare SDK's own include_usage, sent in extra_body (no transform)",
                         f"{first}, include_usage in extra_body")):
        print(f"- {label}: " + " / ".join(f"{med(name, c, 'bare') - med(first, c, 'bare'):+.1f}"
                                          for c in (True, False)))
    for label, name, call in (("OpenAI chat first chunk, injected", first, "OpenAI chat, non-streaming call"),
                              ("OpenAI chat first chunk, the caller asks", f"{first}, caller asks include_usage",
                               "OpenAI chat, non-streaming call"),
                              ("Anthropic first chunk", "Anthropic messages, first chunk",
                               "Anthropic messages, non-streaming call")):
        print(f"- {label}, added beyond the per-call figure: "
              + " / ".join(f"{added(name, c) - added(call, c):+.1f}" for c in (True, False)))
    am.shutdown()


if __name__ == "__main__":
    main()
