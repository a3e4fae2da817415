"""Where a streamed chunk's added CPU time goes: the garbage collector, and the SDK's own parse of
what ``include_usage`` adds to every OpenAI chat chunk.

    python benchmarks/attribute_stream_chunk.py [--rounds 30] [--streams 4]

``callgrind_overhead.py`` counts instructions with the collector paused inside its blocks; the
CPU-time benchmarks (``bench_openai_overhead.py``, ``bench_gemini_overhead.py``) run with it on.
This script measures, in one process with the variants interleaved round by round (median of the
per-round figures, process CPU time), the per-chunk slope between a short and a long stream (the
benchmarks' own clients, bodies and stream sizes) of:

* ``bare``            - the SDK, not instrumented, as a user without us calls it;
* ``bare again``      - the same, a second time: its difference to ``bare`` is the noise floor;
* ``bare+usage``      - OpenAI chat only: the bare SDK asked for ``include_usage`` by the caller,
  so the server sends ``"usage": null`` on every chunk and one usage-only chunk at the end: what
  the SDK itself spends on what the meter injects;
* ``+loop``            - the bare SDK (OpenAI: with ``include_usage``, as metered) read through a
  pass-through generator, the shape of the meter's per-chunk path (``_streams._observed``): what a
  layer between the user's loop and the SDK's iterator costs by itself;
* ``+reducer``         - the same generator calling the provider's own stream reducer
  (``ChatReducer`` / ``GeminiReducer``, as metered) on each chunk: ``+reducer`` minus ``+loop`` is
  the reducer's reads, ``patched`` minus ``+reducer`` whatever else metering does per chunk;
* ``patched``         - after ``init()``;

each with the collector on (as users run) and paused (as callgrind counts), plus the collections
of each generation per chunk and the time spent inside them (``gc.callbacks``). Nothing is
written; figures go to docs/performance.md ("Streams" under "Overhead attribution (issue 16)").
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import init_durable

import aerostack_meter as am

_gc_ns = [0]
_gc_t0 = [0]


def _gc_clock(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_t0[0] = time.perf_counter_ns()
    else:
        _gc_ns[0] += time.perf_counter_ns() - _gc_t0[0]


def _collections() -> list[int]:
    return [s["collections"] for s in gc.get_stats()]


def _block(fn: Callable[[Any], None], client: Any, n: int, collector: bool) -> tuple[float, float, list[int]]:
    """CPU µs per stream, µs in collections per stream, and collections per generation."""
    gc.collect()
    if not collector:
        gc.disable()
    before, ns0 = _collections(), _gc_ns[0]
    t0 = time.process_time_ns()
    for _ in range(n):
        fn(client)
    cpu = (time.process_time_ns() - t0) / n / 1000
    gc_us = (_gc_ns[0] - ns0) / n / 1000
    counts = [b - a for a, b in zip(before, _collections(), strict=True)]
    gc.enable()
    return cpu, gc_us, counts


def _layer(reducer: Callable[[], Any] | None) -> Callable[[Any], Any]:
    """A pass-through generator between the loop and the SDK's iterator (``+loop``), calling a
    fresh reducer's ``observe`` on each chunk when given (``+reducer``)."""
    def loop(it: Any) -> Any:
        for item in it:  # noqa: UP028 - the shape of the meter's generator, not ``yield from``
            yield item

    def observed(it: Any) -> Any:
        observe = reducer().observe  # type: ignore[misc]
        for item in it:
            if observe(item):
                continue
            yield item

    return loop if reducer is None else observed


def _openai() -> tuple[dict[str, Callable[[Any], None]], Callable[[], Any], int, int, str]:
    import bench_openai_overhead as b

    from aerostack_meter.providers._openai_endpoints import _INJECTED, ChatReducer

    kwargs = {"model": "gpt-bench", "messages": b.MESSAGES, "stream": True}
    layers = {"bare+usage+loop": _layer(None),
              "bare+usage+reducer": _layer(lambda: ChatReducer("openai", kwargs, _INJECTED))}

    def stream(chunks: int, variant: str) -> Callable[[Any], None]:
        headers = {"x-bench-chunks": str(chunks)}
        extra: dict[str, Any] = ({"stream_options": {"include_usage": True}} if variant.startswith("bare+usage")
                                 else {})
        layer = layers.get(variant)

        def run(c: Any) -> None:
            s = c.chat.completions.create(**kwargs, extra_headers=headers, **extra)
            for _ in (s if layer is None else layer(s)):
                pass

        return run

    ops = {f"{v} {n}": stream(n, v) for v in ("bare", "bare again", "bare+usage", *layers, "patched")
           for n in (b.SMALL, b.LARGE)}
    return ops, b.make_client, b.SMALL, b.LARGE, "openai"


def _gemini() -> tuple[dict[str, Callable[[Any], None]], Callable[[], Any], int, int, str]:
    import bench_gemini_overhead as b
    from google.genai import types

    from aerostack_meter.providers.gemini import GeminiReducer

    layers = {"bare+loop": _layer(None),
              "bare+reducer": _layer(lambda: GeminiReducer("gemini", {"model": b.MODEL}))}

    def stream(chunks: int, variant: str) -> Callable[[Any], None]:
        if variant not in layers:
            return b.op_stream(chunks)
        layer = layers[variant]
        config = types.GenerateContentConfig(
            http_options=types.HttpOptions(headers={"x-bench-chunks": str(chunks)}))

        def run(c: Any) -> None:
            for _ in layer(c.models.generate_content_stream(model=b.MODEL, contents="hello there", config=config)):
                pass

        return run

    ops = {f"{v} {n}": stream(n, v) for v in ("bare", "bare again", *layers, "patched")
           for n in (b.SMALL, b.LARGE)}
    return ops, b.make_client, b.SMALL, b.LARGE, "gemini"


def run(which: str, rounds: int, streams: int) -> list[str]:
    ops, make_client, small, large, provider = _openai() if which == "openai" else _gemini()
    init_durable(flush_interval=0.5)
    am.uninstrument()
    client = make_client()
    variants = sorted({k.rsplit(" ", 1)[0] for k in ops}, key=lambda v: list(ops).index(f"{v} {small}"))
    per_size = {small: streams * 10, large: streams}
    # sample[variant][collector] -> list of (cpu per chunk, gc per chunk, collections per chunk)
    samples: dict[tuple[str, bool], list[tuple[float, float, list[float]]]] = {
        (v, c): [] for v in variants for c in (True, False)}
    for key, fn in ops.items():  # warm up
        if key.startswith("patched"):
            am.instrument((provider,))
        _block(fn, client, 2, True)
        am.uninstrument()
    for r in range(rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for collector in ((True, False) if r % 2 else (False, True)):
            for v in order:
                if v == "patched":
                    am.instrument((provider,))
                res = {n: _block(ops[f"{v} {n}"], client, per_size[n], collector) for n in (small, large)}
                am.uninstrument()
                span = large - small
                cpu = (res[large][0] - res[small][0]) / span
                gcu = (res[large][1] - res[small][1]) / span
                # collections per chunk: from the long block alone (the short one's share is small)
                cols = [b / per_size[large] / large for b in res[large][2]]
                samples[(v, collector)].append((cpu, gcu, cols))
    assert am.flush(30)
    st = am.stats()
    am.shutdown()
    assert st.usage_missing == 0 and st.internal_errors == 0 and st.events_estimated == 0, st

    def med(v: str, c: bool, i: int) -> float:
        return statistics.median(s[i] for s in samples[(v, c)])

    def cols(v: str) -> str:
        per = [statistics.median(s[2][g] for s in samples[(v, True)]) * 1000 for g in range(3)]
        return " / ".join(f"{x:.2f}" for x in per)

    lines = [f"{which}: per-chunk slope between {small} and {large} chunks, µs of process CPU time "
             f"(median of {rounds} rounds)",
             "| variant | collector on | paused | in collections (on) | collections per 1000 chunks, gen 0/1/2 |",
             "|---|---:|---:|---:|---:|"]
    for v in variants:
        lines.append(f"| {v} | {med(v, True, 0):.2f} | {med(v, False, 0):.2f} | {med(v, True, 1):.2f} | {cols(v)} |")
    def added(v: str, c: bool, ref: str = "bare") -> str:
        """The median of the per-round differences to ``ref``, with their interquartile range."""
        d = sorted(x[0] - b[0] for x, b in zip(samples[(v, c)], samples[(ref, c)], strict=True))
        q = statistics.quantiles(d, n=4) if len(d) > 1 else [d[0]] * 3
        return f"{q[1]:+.2f} µs (IQR {q[0]:+.2f} to {q[2]:+.2f})"

    for v in variants[1:]:
        lines.append(f"- {v} adds per chunk: collector on {added(v, True)}, paused {added(v, False)}")
    # the layers, each over the one below it
    chain = [v for v in variants if v != "bare again" and (v == "bare" or v.startswith("bare+") or v == "patched")]
    if len(chain) > 2:
        lines.append("Layer by layer (each over the one before):")
        for below, v in itertools.pairwise(chain):
            lines.append(f"- {v} over {below}: collector on {added(v, True, below)}, paused {added(v, False, below)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--streams", type=int, default=4, help="long streams per block")
    parser.add_argument("--only", choices=("openai", "gemini"))
    args = parser.parse_args()
    gc.callbacks.append(_gc_clock)
    load0 = os.getloadavg()[0]
    out: list[str] = []
    for which in ("openai", "gemini"):
        if args.only in (None, which):
            out += [*run(which, args.rounds, args.streams), ""]
    out.append(f"load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("\n".join(out))


if __name__ == "__main__":
    main()
