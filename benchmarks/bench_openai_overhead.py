"""OpenAI metering overhead: added time per non-streaming call and per streamed chunk, metered vs
the bare SDK, in one process over an in-process transport.

    python benchmarks/bench_openai_overhead.py [--rounds 40] [--calls 100] [--no-write]

No network: the SDK talks to an ``httpx(2).MockTransport`` (httpx2 on 3.x, httpx before) answering
canned bodies, and the meter reports into a sink that drops every batch. Variants are interleaved
round by round (in a rotating order) and each figure is the median of the per-round means, so
drift in machine load hits all of them alike:

* ``bare``     - the SDK, not instrumented;
* ``patched``  - after ``init()`` (the class-level patches);
* ``wrap()``   - a ``wrap(client)`` proxy on an un-patched SDK.

Times are process CPU time (all threads: the background reporter's work counts as overhead).
Chat streams are timed at two sizes; the per-chunk cost is the slope between them, the per-call
cost the remainder. The metered chat streams carry the ``include_usage`` we add (one more chunk,
hidden from the caller); the bare ones do not, as a user without us would not.
Figures go to docs/performance.md, section "OpenAI overhead".
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import openai
import openai._base_client as _bc
from _perfdoc import machine
from _timing import added_slope, bare_slope, init_durable, measure, parse_args, publish, table

import aerostack_meter as am

HX: Any = getattr(_bc, "httpx2", None) or _bc.httpx  # 3.x: httpx2; 1.x/2.x: httpx

MESSAGES = [{"role": "user", "content": "hello there"}]
SMALL, LARGE = 10, 500  # content chunks per stream
USAGE = {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32,
         "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}


def _completion() -> bytes:
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "gpt-bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "word " * 20},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": USAGE,
    }).encode()


def _response() -> bytes:
    return json.dumps({
        "id": "resp_bench", "object": "response", "created_at": 1, "model": "gpt-bench", "status": "completed",
        "output": [{"id": "msg_b", "type": "message", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": "word " * 20, "annotations": []}]}],
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "usage": {"input_tokens": 12, "output_tokens": 20, "total_tokens": 32,
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
    }).encode()


def _sse(chunks: int, usage: bool) -> bytes:
    def chunk(choices: list[Any], **extra: Any) -> str:
        data = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-bench", "choices": choices, **extra}
        return f"data: {json.dumps(data)}\n\n"

    def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}

    null = {"usage": None} if usage else {}
    parts = [chunk([choice({"role": "assistant", "content": ""})], **null)]
    parts += [chunk([choice({"content": " word"})], **null)] * chunks
    parts.append(chunk([choice({}, "stop")], **null))
    if usage:
        parts.append(chunk([], usage=USAGE))
    parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


BODIES = {"chat": _completion(), "responses": _response(),
          **{(n, u): _sse(n, u) for n in (SMALL, LARGE) for u in (False, True)}}


def handler(request: Any) -> Any:
    body = json.loads(request.content)
    if body.get("stream"):
        n = int(request.headers.get("x-bench-chunks", SMALL))
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return HX.Response(200, headers={"content-type": "text/event-stream"}, content=BODIES[(n, usage)])
    kind = "responses" if request.url.path.endswith("/responses") else "chat"
    return HX.Response(200, headers={"content-type": "application/json"}, content=BODIES[kind])


def make_client() -> Any:
    http = HX.Client(transport=HX.MockTransport(handler))
    return openai.OpenAI(api_key="sk-bench", base_url="http://bench.invalid/v1", http_client=http, max_retries=0)


# -- the operations timed ------------------------------------------------------------------------

def op_chat(c: Any) -> None:
    c.chat.completions.create(model="gpt-bench", messages=MESSAGES)


def op_responses(c: Any) -> None:
    c.responses.create(model="gpt-bench", input="hello there")


def op_stream(chunks: int) -> Callable[[Any], None]:
    headers = {"x-bench-chunks": str(chunks)}

    def run(c: Any) -> None:
        for _ in c.chat.completions.create(model="gpt-bench", messages=MESSAGES, stream=True,
                                           extra_headers=headers):
            pass

    return run


def op_helper(c: Any) -> None:
    with c.chat.completions.stream(model="gpt-bench", messages=MESSAGES,
                                   extra_headers={"x-bench-chunks": str(SMALL)}) as s:
        s.until_done()


def isolated(repeat: int) -> dict[str, float]:
    """The metering path alone, without the SDK's HTTP and parsing around it (precise where the
    end-to-end figures drown in the SDK's own cost and machine noise): nanoseconds added per
    non-streaming call (the patched wrapper around a function returning a parsed ``ChatCompletion``)
    and per chunk (our stream proxy and reducer over already parsed ``ChatCompletionChunk`` s)."""
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    from aerostack_meter._streams import proxy_stream
    from aerostack_meter._wrapping import make_wrapper
    from aerostack_meter.providers.openai import CHAT_CREATE

    meter = init_durable(flush_interval=0.5)
    am.uninstrument()
    completion = ChatCompletion.construct(**json.loads(BODIES["chat"]))
    sse = BODIES[(LARGE, True)].decode().split("\n\n")
    chunks = [ChatCompletionChunk.construct(**json.loads(line[6:])) for line in sse
              if line.startswith("data: {")]

    def sdk(**kwargs: Any) -> Any:
        return completion

    wrapper = make_wrapper(CHAT_CREATE, False, lambda: meter)
    kwargs = {"model": "gpt-bench", "messages": MESSAGES}
    calls = 2000

    clock = time.thread_time_ns  # this thread's CPU time: other processes' load does not count

    def per_call(metered: bool) -> float:
        t0 = clock()
        if metered:
            for _ in range(calls):
                wrapper(sdk, None, (), kwargs)
        else:
            for _ in range(calls):
                sdk(**kwargs)
        return (clock() - t0) / calls

    def per_chunk(metered: bool) -> float:
        t0 = clock()
        for _ in range(10):
            if metered:
                call = _Call(meter)
                for _c in proxy_stream(iter(chunks), call, CHAT_CREATE.reducer(kwargs, _HINT)):
                    pass
            else:
                for _c in iter(chunks):
                    pass
        return (clock() - t0) / (10 * len(chunks))

    runs: dict[str, list[float]] = {"call+": [], "call": [], "chunk+": [], "chunk": []}
    for _ in range(repeat):
        runs["call+"].append(per_call(True))
        runs["call"].append(per_call(False))
        runs["chunk+"].append(per_chunk(True))
        runs["chunk"].append(per_chunk(False))
    assert am.flush(30)
    am.shutdown()
    # the fastest run of each: noise only ever adds time
    return {"call": min(runs["call+"]) - min(runs["call"]), "chunk": min(runs["chunk+"]) - min(runs["chunk"])}


class _Call:
    """A call that records nothing: the reporter's share is measured end to end above."""

    done = False

    def __init__(self, meter: Any) -> None:
        self.meter = meter

    def end_stream(self, reducer: Any, complete: bool) -> None:
        reducer.final(complete)

    def end_unfinished(self, reducer: Any) -> None:  # the GC fallback: measured as an early end
        reducer.final(False)


def _injected_hint() -> Any:
    from aerostack_meter.providers._openai_endpoints import _INJECTED

    return _INJECTED


_HINT = None


def main() -> None:
    args = parse_args(__doc__, rounds=40, calls=100)

    n = args.calls
    ops = {
        "chat.completions.create": (op_chat, n),
        f"chat stream {SMALL}": (op_stream(SMALL), max(1, n // 2)),
        f"chat stream {LARGE}": (op_stream(LARGE), max(1, n // 40)),
        f"chat stream() helper {SMALL}": (op_helper, max(1, n // 2)),
    }
    if hasattr(make_client(), "responses"):
        ops["responses.create"] = (op_responses, n)
    m = measure(ops, args.rounds, make_client=make_client, provider="openai")
    global _HINT
    _HINT = _injected_hint()
    iso = isolated(max(5, args.rounds // 2))

    lines = table(m, "×")  # noqa: RUF001
    small, large = m[f"chat stream {SMALL}"], m[f"chat stream {LARGE}"]
    bare_chunk = bare_slope(small, large, LARGE - SMALL)
    create = m["chat.completions.create"]

    def per_chunk(variant: str) -> float:
        return added_slope(small, large, LARGE - SMALL, variant)

    summary = [
        f"- **metering path alone** (no HTTP, no parsing; thread CPU time, fastest of {max(5, args.rounds // 2)} runs): "
        f"**{iso['call'] / 1000:.1f} µs per non-streaming call** "
        f"({iso['call'] / 1000 / create['bare'] * 100:.1f}% of the bare SDK's {create['bare']:.0f} µs), "
        f"**{iso['chunk']:.0f} ns per streamed chunk** "
        f"({iso['chunk'] / 1000 / bare_chunk * 100:.2f}% of the SDK's own {bare_chunk:.1f} µs per chunk).",
        f"- end to end, added per streamed chunk (slope between {SMALL} and {LARGE} content chunks): "
        f"patched **{per_chunk('patched') * 1000:.0f} ns**, wrap() **{per_chunk('wrap()') * 1000:.0f} ns** "
        f"(the bare SDK spends {bare_chunk:.1f} µs per chunk).",
        f"- end to end, added per non-streaming `chat.completions.create`: patched **{create['patched'] - create['bare']:.1f} µs"
        f" ({(create['patched'] / create['bare'] - 1) * 100:.1f}%)**, wrap() "
        f"**{create['wrap()'] - create['bare']:.1f} µs ({(create['wrap()'] / create['bare'] - 1) * 100:.1f}%)**.",
    ]
    body = "\n".join([
        f"`python benchmarks/bench_openai_overhead.py` — {machine()}, openai {openai.__version__} "
        f"({HX.__name__}), {args.rounds} interleaved rounds, medians of round means of process CPU "
        f"time; in-process `MockTransport`, the default durable store on (a journal in a temporary state directory), a sink that drops batches; load average "
        f"{os.getloadavg()[0]:.1f} at the end of the run.",
        "",
        *lines,
        "",
        *summary,
        "",
        "Metered chat streams include the usage-only chunk we ask for (and hide), so their per-call "
        "figure includes parsing one extra chunk; the chat `stream()` helper is metered through the "
        "`create` it calls. End-to-end figures are process CPU time, so they include the background "
        "reporter's per-event work (policy, coalescing, batching), not only the caller's. "
        "Figures on a shared, busy machine vary by tens of µs between runs; the "
        "ratios are the stable part (a negative figure is noise larger than the overhead); the "
        "isolated figures are the precise ones.",
    ])
    publish("OpenAI overhead", body, args)


if __name__ == "__main__":
    main()
