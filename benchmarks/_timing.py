"""What the SDK overhead benchmarks share: a sink that drops batches, the CPU-time timer, the
interleaved bare / patched / wrap() rounds, the slopes between two stream sizes, the results
table, and the command line (print, then write the docs section unless ``--no-write``)."""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from _perfdoc import update_section

import aerostack_meter as am
from aerostack_meter.sinks import SendResult

Op = Callable[[Any], None]
Medians = dict[str, dict[str, float]]  # operation -> variant -> median µs per call

VARIANTS = ["bare", "patched", "wrap()"]


class NullSink:
    """Accepts every batch and does nothing: no network in the measurement."""

    def send(self, batch: Any) -> SendResult:
        return SendResult("ok")

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        pass


class DurableNullSink(NullSink):
    """Drops every batch, but names a destination, so the meter journals every record to disk
    before the call returns: the default durable store (a sink without ``destination`` gets the
    memory store), which is what issue 16's per-call goals are measured with."""

    destination = "bench-null"


def init_durable(**options: Any) -> am.Meter:
    """``am.init`` with a :class:`DurableNullSink` and a fresh temporary state directory."""
    import tempfile

    options.setdefault("state_dir", tempfile.mkdtemp(prefix="aerostack-bench-"))
    meter = am.init(sink=DurableNullSink(), api_id="api_bench", default_consumer_id="bench", **options)
    assert am.stats().durable, "the durable store is not on"
    return meter


def parse_args(doc: str | None, *, rounds: int, calls: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--calls", type=int, default=calls, help="non-streaming calls per round")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the docs alone")
    return parser.parse_args()


def timed(fn: Op, c: Any, n: int) -> float:
    """Mean microseconds per call over ``n`` calls, in CPU time of the whole process (the
    reporter's thread included), which a busy shared machine disturbs less than wall time."""
    gc.collect()
    t0 = time.process_time_ns()
    for _ in range(n):
        fn(c)
    return (time.process_time_ns() - t0) / n / 1000


def measure(
    ops: dict[str, tuple[Op, int]],
    rounds: int,
    *,
    make_client: Callable[[], Any],
    provider: str,
    allow_estimates: bool = False,
    built_patched: bool = False,
) -> Medians:
    """Time every operation on the bare SDK, patched, and through ``wrap()``, interleaved round by
    round in a rotating order; return the median of the per-round means. ``built_patched``: the
    patched client is built while the provider is instrumented (an SDK metered from the class it
    builds per client, e.g. botocore's)."""
    init_durable(flush_interval=0.5)
    am.uninstrument()
    bare, proxied = make_client(), am.wrap(make_client())
    if built_patched:
        am.instrument((provider,))
    patched_client = make_client()
    am.uninstrument()
    samples: dict[str, dict[str, list[float]]] = {op: {v: [] for v in VARIANTS} for op in ops}
    for fn, n in ops.values():  # warm up every path once
        for c in (bare, proxied):
            timed(fn, c, max(1, n // 10))
    for r in range(rounds):
        order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
        for op, (fn, n) in ops.items():
            for variant in order:
                if variant == "patched":
                    am.instrument((provider,))
                    samples[op][variant].append(timed(fn, patched_client, n))
                    am.uninstrument()
                else:
                    samples[op][variant].append(timed(fn, bare if variant == "bare" else proxied, n))
    assert am.flush(30)
    stats = am.stats()
    am.shutdown()
    expected = rounds * sum(n for _, n in ops.values()) * 2  # patched + wrap() runs
    assert stats.calls_metered >= expected, (stats.calls_metered, expected)
    assert stats.usage_missing == 0 and stats.internal_errors == 0, stats
    assert allow_estimates or stats.events_estimated == 0, stats
    return {op: {v: statistics.median(s) for v, s in by.items()} for op, by in samples.items()}


def bare_slope(small: dict[str, float], large: dict[str, float], span: int) -> float:
    """The bare SDK's µs per streamed item: the slope between two stream sizes ``span`` apart."""
    return (large["bare"] - small["bare"]) / span


def added_slope(small: dict[str, float], large: dict[str, float], span: int, variant: str) -> float:
    """µs a variant adds per streamed item: the slope of its added time between two stream sizes."""
    return ((large[variant] - large["bare"]) - (small[variant] - small["bare"])) / span


def table(m: Medians, times: str) -> list[str]:
    """The markdown table of bare time and added time and ratio per variant (``times`` is the
    ratio's sign, as each benchmark has always printed it)."""
    lines = [
        "| operation (CPU µs per call) | bare | patched: added, ratio | wrap(): added, ratio |",
        "|---|---:|---:|---:|",
    ]
    for op, v in m.items():
        b, p, w = v["bare"], v["patched"], v["wrap()"]
        lines.append(
            f"| {op} | {b:.1f} | {p - b:+.1f} µs, {p / b:.3f}{times} | {w - b:+.1f} µs, {w / b:.3f}{times} |"
        )
    return lines


def publish(heading: str, body: str, args: argparse.Namespace) -> None:
    """Print the section; write it into docs/performance.md unless ``--no-write``."""
    print(body)
    if not args.no_write:
        update_section(heading, body)


def overhead_summary(m: Medians, call: str, small: str, large: str, span: int, item: str) -> list[str]:
    """Two lines: ns a variant adds per streamed ``item`` (the slope between the ``small`` and
    ``large`` stream operations, ``span`` items apart) and µs it adds per ``call``."""
    s, big, c = m[small], m[large], m[call]

    def per(variant: str) -> float:
        return added_slope(s, big, span, variant) * 1000

    return [
        f"- added per streamed {item} (slope between `{small}` and `{large}`): patched "
        f"**{per('patched'):.0f} ns**, wrap() **{per('wrap()'):.0f} ns** "
        f"(the bare SDK spends {bare_slope(s, big, span):.1f} µs per {item}).",
        f"- added per `{call}`: patched **{c['patched'] - c['bare']:.1f} µs**, "
        f"wrap() **{c['wrap()'] - c['bare']:.1f} µs**.",
    ]


def section(head: str, m: Medians, summary: list[str], load: str, note: str) -> str:
    """A docs section: the command and setup line, the table, the summary, the load, a note."""
    return "\n".join([head, "", *table(m, "x"), "", *summary, "", load, "", note])
