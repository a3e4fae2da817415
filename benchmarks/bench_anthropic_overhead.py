"""Anthropic metering overhead: added time per non-streaming ``messages.create`` and per streamed
event, metered vs the bare SDK, in one process over an in-process transport.

    python benchmarks/bench_anthropic_overhead.py [--rounds 100] [--calls 40] [--no-write]

No network: the SDK talks to an ``httpx(2).MockTransport`` answering canned bodies, and the meter
reports into a sink that drops every batch. Variants are interleaved round by round (in a
rotating order) and each figure is the median of the per-round means, so drift in machine load
hits all of them alike:

* ``bare``     - the SDK, not instrumented;
* ``patched``  - after ``init()`` (the class-level patches);
* ``wrap()``   - a ``wrap(client)`` proxy on an un-patched SDK.

Times are process CPU time (all threads: the background reporter's work counts as overhead).
Streams are timed at two sizes; the per-event cost is the slope between them, the per-call cost
the remainder. OpenTelemetry (1.x/2.x) is off (``open_telemetry=False``) for a fair floor.
Figures go to docs/performance.md, section "Anthropic overhead".
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anthropic
from _perfdoc import machine
from _timing import added_slope, bare_slope, measure, parse_args, publish, table

try:
    import anthropic._base_client as _bc

    HX: Any = getattr(_bc, "httpx2", None) or _bc.httpx
except Exception:  # pragma: no cover
    import httpx as HX

ARGS: dict[str, Any] = {"model": "claude-bench", "max_tokens": 1024,
                        "messages": [{"role": "user", "content": "hello there"}]}
SMALL, LARGE = 10, 500  # content deltas per stream


def _message() -> bytes:
    return json.dumps({
        "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-bench",
        "content": [{"type": "text", "text": "word " * 20}], "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 20, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0},
    }).encode()


def _sse(deltas: int) -> bytes:
    def ev(name: str, data: dict[str, Any]) -> str:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n"

    start = {"id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-bench",
             "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": 12, "output_tokens": 1}}
    parts = [ev("message_start", {"type": "message_start", "message": start}),
             ev("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}})]
    parts += [ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta", "text": " word"}})] * deltas
    parts += [ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
              ev("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                   "usage": {"output_tokens": deltas}}),
              ev("message_stop", {"type": "message_stop"})]
    return "".join(parts).encode()


BODIES = {"json": _message(), SMALL: _sse(SMALL), LARGE: _sse(LARGE)}


def handler(request: Any) -> Any:
    body = json.loads(request.content)
    if body.get("stream"):
        n = int(request.headers.get("x-bench-deltas", SMALL))
        return HX.Response(200, headers={"content-type": "text/event-stream"}, content=BODIES[n])
    return HX.Response(200, headers={"content-type": "application/json"}, content=BODIES["json"])


def make_client() -> Any:
    http = HX.Client(transport=HX.MockTransport(handler))
    kwargs: dict[str, Any] = {"api_key": "sk-bench", "base_url": "http://bench.invalid",
                              "http_client": http, "max_retries": 0}
    try:
        return anthropic.Anthropic(open_telemetry=False, **kwargs)
    except TypeError:  # 0.x has no built-in tracing
        return anthropic.Anthropic(**kwargs)


# -- the operations timed ------------------------------------------------------------------------

def op_create(c: Any) -> None:
    c.messages.create(**ARGS)


def op_stream(deltas: int) -> Callable[[Any], None]:
    headers = {"x-bench-deltas": str(deltas)}

    def run(c: Any) -> None:
        for _ in c.messages.create(**ARGS, stream=True, extra_headers=headers):
            pass

    return run


def op_helper(c: Any) -> None:
    with c.messages.stream(**ARGS, extra_headers={"x-bench-deltas": str(SMALL)}) as s:
        s.until_done()


def main() -> None:
    args = parse_args(__doc__, rounds=100, calls=40)

    n = args.calls
    ops = {
        "create": (op_create, n),
        f"stream {SMALL}": (op_stream(SMALL), max(1, n // 2)),
        f"stream {LARGE}": (op_stream(LARGE), max(1, n // 40)),
        f"stream() helper {SMALL}": (op_helper, max(1, n // 2)),
    }
    m = measure(
        ops, args.rounds, make_client=make_client, provider="anthropic", allow_estimates=True
    )

    lines = table(m, "x")
    small, large = m[f"stream {SMALL}"], m[f"stream {LARGE}"]

    def per_event(variant: str) -> float:
        return added_slope(small, large, LARGE - SMALL, variant)

    ev_b = bare_slope(small, large, LARGE - SMALL)
    summary = [
        f"- added per streamed event (slope between {SMALL} and {LARGE} content deltas): "
        f"patched **{per_event('patched') * 1000:.0f} ns**, wrap() **{per_event('wrap()') * 1000:.0f} ns** "
        f"(the bare SDK spends {ev_b:.1f} µs per event).",
        f"- added per non-streaming `messages.create`: patched **{m['create']['patched'] - m['create']['bare']:.1f} µs**, "
        f"wrap() **{m['create']['wrap()'] - m['create']['bare']:.1f} µs**.",
    ]
    version = anthropic.__version__
    body = "\n".join([
        f"`python benchmarks/bench_anthropic_overhead.py` — {machine()}, anthropic {version} "
        f"(`open_telemetry=False` where supported), {args.rounds} interleaved rounds, medians of "
        "round means of process CPU time; in-process `MockTransport`, the default durable store on (a journal in a temporary state directory), a sink that drops batches.",
        "",
        *lines,
        "",
        *summary,
        "",
        "The `stream()` helper is metered once, at the manager's exit, from the helper's own final "
        "snapshot: it adds a per-call cost and nothing per event. `patched` and `wrap()` run the same "
        "metering code (the proxy adds attribute forwarding), so differences between them are mostly "
        "noise. On a shared, busy machine the added per-call figures move by tens of µs between runs "
        "(a negative \"added\" is noise); run it a few times before reading much into one figure.",
    ])
    publish("Anthropic overhead", body, args)


if __name__ == "__main__":
    main()
