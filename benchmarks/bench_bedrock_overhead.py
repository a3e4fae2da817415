"""Bedrock metering overhead: added time per ``converse`` / ``invoke_model`` and per streamed
``converse_stream`` event, metered vs bare ``boto3``, in one process without a network.

    python benchmarks/bench_bedrock_overhead.py [--rounds 60] [--calls 40] [--no-write]

No network: a botocore ``before-send`` handler (the hook botocore offers to answer a request
itself) returns canned responses — JSON bodies with count headers, and AWS event-stream bytes
built by the mock server's encoder — so the whole botocore parsing path runs. The meter reports
into a sink that drops every batch. Variants (``bare``, ``patched``: a client built after
``init()``, a ``wrap()`` proxy) are interleaved round by round; each figure is the median of the
per-round means of process CPU time (see ``bench_anthropic_overhead.py``). Streams are timed at
two sizes; the per-event cost is the slope. Figures go to docs/performance.md, section "Bedrock
overhead".
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import boto3
import botocore
from _perfdoc import load_note, machine
from _timing import measure, overhead_summary, parse_args, publish, section
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from aerostack_meter.servers import _eventstream as es

MODEL = "anthropic.claude-bench-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hello there"}]}]
SMALL, LARGE = 10, 300  # text events per stream
USAGE = {"inputTokens": 12, "outputTokens": 20, "totalTokens": 32}


def _stream(events: int) -> bytes:
    parts = [es.event("messageStart", {"role": "assistant"})]
    parts += [es.event("contentBlockDelta", {"delta": {"text": " word"}, "contentBlockIndex": 0})] * events
    parts += [es.event("contentBlockStop", {"contentBlockIndex": 0}),
              es.event("messageStop", {"stopReason": "end_turn"}),
              es.event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 1}})]
    return b"".join(parts)


CONVERSE = json.dumps({"output": {"message": {"role": "assistant", "content": [{"text": "word " * 20}]}},
                       "stopReason": "end_turn", "usage": USAGE, "metrics": {"latencyMs": 1}}).encode()
INVOKE = json.dumps({"type": "message", "role": "assistant", "content": [{"type": "text", "text": "hi"}],
                     "usage": {"input_tokens": 12, "output_tokens": 20}}).encode()
STREAMS = {SMALL: _stream(SMALL), LARGE: _stream(LARGE)}


class _Raw(io.BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


def answer(request: Any, **_: Any) -> AWSResponse:
    path = request.url.split("?", 1)[0]
    headers = {"content-type": "application/json"}
    if path.endswith("/converse-stream"):
        n = int(request.headers.get("x-bench-events", SMALL))
        body = STREAMS[n]
        headers = {"content-type": "application/vnd.amazon.eventstream"}
    elif path.endswith("/invoke"):
        body = INVOKE
        headers["x-amzn-bedrock-input-token-count"] = "12"
        headers["x-amzn-bedrock-output-token-count"] = "20"
    else:
        body = CONVERSE
    return AWSResponse(request.url, 200, headers, _Raw(body))


def make_client() -> Any:
    client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="AKIDBENCH",
                          aws_secret_access_key="bench", endpoint_url="http://bench.invalid",
                          config=Config(retries={"max_attempts": 1}))
    client.meta.events.register("before-send.bedrock-runtime.*", answer)
    return client


def op_converse(c: Any) -> None:
    c.converse(modelId=MODEL, messages=MESSAGES)


def op_invoke(c: Any) -> None:
    c.invoke_model(modelId=MODEL, body=b'{"messages": [], "max_tokens": 10}')["body"].read()


def op_stream(events: int) -> Callable[[Any], None]:
    def add_header(request: Any, **_: Any) -> None:
        request.headers["x-bench-events"] = str(events)

    def run(c: Any) -> None:
        c.meta.events.register("before-sign.bedrock-runtime.ConverseStream", add_header,
                               unique_id=f"bench-events-{events}")
        try:
            for _ in c.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"]:
                pass
        finally:
            c.meta.events.unregister("before-sign.bedrock-runtime.ConverseStream",
                                     unique_id=f"bench-events-{events}")

    return run


def main() -> None:
    args = parse_args(__doc__, rounds=60, calls=40)
    load_before = os.getloadavg()[0]
    n = args.calls
    ops = {
        "converse": (op_converse, n),
        "invoke_model": (op_invoke, n),
        f"converse_stream {SMALL}": (op_stream(SMALL), max(1, n // 2)),
        f"converse_stream {LARGE}": (op_stream(LARGE), max(1, n // 30)),
    }
    m = measure(ops, args.rounds, make_client=make_client, provider="bedrock", built_patched=True)
    summary = overhead_summary(m, "converse", f"converse_stream {SMALL}", f"converse_stream {LARGE}",
                               LARGE - SMALL, "event")
    load = load_note(load_before, os.getloadavg()[0])
    head = (
        f"`python benchmarks/bench_bedrock_overhead.py` — {machine()}, boto3 {boto3.__version__} "
        f"(botocore {botocore.__version__}), {args.rounds} interleaved rounds, medians of round means "
        "of process CPU time; canned responses from a `before-send` handler (no network), the default "
        "durable store on, a sink that drops batches."
    )
    note = (
        "`invoke_model` is read from its count headers (the body is left to the caller), so its cost "
        "does not grow with the body. Patched calls also pass botocore's `BaseClient._make_api_call` "
        "hook, which meters clients built before `init()` and steps aside for a call metered at its "
        "method (part of the gap between patched and `wrap()`). Instructions per call "
        "(load-independent; `callgrind_overhead.py --ops converse,invoke_model`): \"New providers\" "
        "under \"Overhead attribution (issue 16)\"."
    )
    body = section(head, m, summary, load, note)
    publish("Bedrock overhead", body, args)


if __name__ == "__main__":
    main()
