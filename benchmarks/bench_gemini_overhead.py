"""Gemini metering overhead: added time per non-streaming ``models.generate_content`` and per
streamed chunk, metered vs the bare ``google-genai`` SDK, in one process over an in-process
transport.

    python benchmarks/bench_gemini_overhead.py [--rounds 60] [--calls 40] [--no-write]

No network: the SDK's httpx client gets an ``httpx.MockTransport`` (``HttpOptions.client_args``)
answering canned bodies, and the meter reports into a sink that drops every batch. Variants
(``bare``, ``patched`` after ``init()``, a ``wrap()`` proxy) are interleaved round by round and
each figure is the median of the per-round means of process CPU time (see
``bench_anthropic_overhead.py``). Streams are timed at two sizes; the per-chunk cost is the slope.
Figures go to docs/performance.md, section "Gemini overhead".
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _perfdoc import load_note, machine
from _timing import measure, overhead_summary, parse_args, publish, section
from google import genai
from google.genai import types

MODEL = "gemini-bench"
SMALL, LARGE = 10, 300  # chunks per stream


def _response(text: str, candidates: int, finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "modelVersion": MODEL, "responseId": "bench",
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": candidates,
                              "thoughtsTokenCount": 8, "totalTokenCount": 20 + candidates}}


def _sse(chunks: int) -> bytes:
    parts = [f"data: {json.dumps(_response(' word', i + 1, None))}\r\n\r\n" for i in range(chunks)]
    parts.append(f"data: {json.dumps(_response('', chunks, 'STOP'))}\r\n\r\n")
    return "".join(parts).encode()


BODIES = {"json": json.dumps(_response("word " * 20, 20, "STOP")).encode(),
          SMALL: _sse(SMALL), LARGE: _sse(LARGE)}


def handler(request: httpx.Request) -> httpx.Response:
    if "streamGenerateContent" in request.url.path:
        n = int(request.headers.get("x-bench-chunks", SMALL))
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=BODIES[n])
    return httpx.Response(200, headers={"content-type": "application/json"}, content=BODIES["json"])


def make_client() -> Any:
    options = types.HttpOptions(base_url="http://bench.invalid",
                                client_args={"transport": httpx.MockTransport(handler)})
    return genai.Client(api_key="bench", http_options=options)


def op_generate(c: Any) -> None:
    c.models.generate_content(model=MODEL, contents="hello there")


def op_stream(chunks: int) -> Callable[[Any], None]:
    config = types.GenerateContentConfig(
        http_options=types.HttpOptions(headers={"x-bench-chunks": str(chunks)}))

    def run(c: Any) -> None:
        for _ in c.models.generate_content_stream(model=MODEL, contents="hello there", config=config):
            pass

    return run


def main() -> None:
    args = parse_args(__doc__, rounds=60, calls=40)
    load_before = os.getloadavg()[0]
    n = args.calls
    ops = {
        "generate_content": (op_generate, n),
        f"generate_content_stream {SMALL}": (op_stream(SMALL), max(1, n // 2)),
        f"generate_content_stream {LARGE}": (op_stream(LARGE), max(1, n // 30)),
    }
    m = measure(ops, args.rounds, make_client=make_client, provider="gemini")
    summary = overhead_summary(m, "generate_content", f"generate_content_stream {SMALL}",
                               f"generate_content_stream {LARGE}", LARGE - SMALL, "chunk")
    load = load_note(load_before, os.getloadavg()[0])
    head = (
        f"`python benchmarks/bench_gemini_overhead.py` — {machine()}, google-genai "
        f"{genai.__version__}, {args.rounds} interleaved rounds, medians of round means of process "
        "CPU time; in-process `MockTransport`, the default durable store on, a sink that drops batches."
    )
    note = (
        "Each chunk carries the usage so far; the meter keeps the last two usage objects by "
        "reference and reads them when the stream ends. `wrap()` evaluates the SDK's public "
        "methods with the proxy as `self` so that their per-request calls are metered: its "
        "per-call cost includes that forwarding. Instructions per call (load-independent; "
        "`callgrind_overhead.py --ops gemini,agemini`): \"New providers\" under \"Overhead "
        "attribution (issue 16)\"."
    )
    body = section(head, m, summary, load, note)
    publish("Gemini overhead", body, args)


if __name__ == "__main__":
    main()
