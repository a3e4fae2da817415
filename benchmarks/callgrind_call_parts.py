"""Instructions of the parts of a metered non-streaming call's path at the Stainless HTTP layer
(OpenAI, Anthropic), on the SDKs' own parsed responses, with no SDK work in the count: what
``callgrind_overhead.py``'s per-call figure (which moves by a few k between runs) cannot split,
deterministic to a few instructions.

    python benchmarks/callgrind_call_parts.py

Runs itself under ``valgrind --tool=callgrind`` (collection inside ``functools.reduce`` only; the
garbage collector paused). The default durable store is on (a journal in a temporary
``state_dir``). Blocks, per call:

* ``hooks, whole``  - the base client's ``request`` and ``_process_response`` hooks around stubs
  of the SDK's functions (the stub request calls the process hook, whose stub returns a parsed
  response): everything the meter adds to one call on the calling thread;
* ``usage reader``  - the endpoint's ``usage`` on the response;
* ``begin``         - attribution and the call object (``_wrapping.begin``);
* ``record``        - ``Meter.record`` of one usage (the store's ``put``, the journal's append);
* ``store put``     - the store's ``put`` alone.

Each is printed per call, less the bare loop. Nothing is written.
"""

from __future__ import annotations

import functools
import gc
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
N = 2000


def _inner() -> None:
    sys.path.insert(0, str(HERE))
    import anthropic
    import httpx2
    import openai
    from _peers_worker import MSGS, anthropic_options, make_handler
    from _timing import DurableNullSink

    import aerostack_meter as am
    from aerostack_meter._wrapping import begin
    from aerostack_meter.providers.anthropic import PROVIDER as ANTHROPIC
    from aerostack_meter.providers.openai import PROVIDER as OPENAI

    meter = am.init(sink=DurableNullSink(), api_id="api_bench", default_consumer_id="bench",
                    state_dir=tempfile.mkdtemp(prefix="aerostack-cg-parts-"))
    handler = make_handler()
    oc = openai.OpenAI(api_key="x", base_url="http://mock.invalid/v1",
                       http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    ac = anthropic.Anthropic(api_key="x", base_url="http://mock.invalid", http_client=httpx2.Client(
        transport=httpx2.MockTransport(handler)), **anthropic_options())
    am.uninstrument()
    chat = oc.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    message = ac.messages.create(model="claude-3-5-haiku-latest", max_tokens=256, messages=MSGS)
    am.instrument()

    def options_of(module: Any, url: str, body: dict[str, Any]) -> Any:
        return module.FinalRequestOptions.construct(method="post", url=url, json_data=body)

    blocks: list[tuple[str, Callable[[], Any]]] = []

    def noop() -> None:
        return None

    blocks.append(("bare loop", noop))
    for name, base, client, url, body, result in (
            ("chat", OPENAI.base_client, oc, "/chat/completions",
             {"model": "gpt-4o-mini", "messages": MSGS}, chat),
            ("messages", ANTHROPIC.base_client, ac, "/v1/messages",
             {"model": "claude-3-5-haiku-latest", "max_tokens": 256, "messages": MSGS}, message)):
        assert base is not None
        module = sys.modules[base.module]
        options = options_of(module, url, body)

        def process_stub(self: Any, *, cast_to: Any, options: Any, response: Any, stream: Any,
                         stream_cls: Any, retries_taken: Any = 0, result: Any = result) -> Any:
            return result

        process = base._process_hook(False)(lambda: meter, process_stub)

        def request_stub(self: Any, cast_to: Any, options: Any, *, stream: Any = False,
                         stream_cls: Any = None, process: Any = process) -> Any:
            return process(self, cast_to=cast_to, options=options, response=None, stream=stream,
                           stream_cls=stream_cls)

        request = base._request_hook(False)(lambda: meter, request_stub)
        cast_to = type(result)
        blocks.append((f"{name}: hooks, whole", functools.partial(request, client, cast_to, options)))
        endpoint = base.routes[url]
        blocks.append((f"{name}: usage reader", functools.partial(endpoint.usage, result)))
        blocks.append((f"{name}: begin", functools.partial(
            begin, meter, endpoint, None, client, body, f"{name} site", None)))
    usage = OPENAI.base_client.routes["/chat/completions"].usage(chat)  # type: ignore[union-attr]
    attribution = meter.attribute(None, "site")
    blocks.append(("record", functools.partial(meter.record, usage, attribution)))
    store = meter._reporter.store
    blocks.append(("store put", functools.partial(store.put, "bench", "api_bench", "tokens", 10, 1, 1.0)))
    for label, fn in blocks:
        for _ in range(200):
            fn()
        print(f"BLOCK {label}", flush=True)
        gc.collect()
        gc.disable()
        functools.reduce(eval(compile("lambda acc, _i: fn()", label, "eval"), {"fn": fn}), range(N), None)  # a code object per block: a call site specialized for the previous block would be deoptimized
        gc.enable()
    assert am.flush(30)
    print(f"STATS {am.stats().internal_errors} {am.stats().calls_metered}", flush=True)
    am.shutdown()


def _total(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise ValueError(path)


def main() -> None:
    if "--inner" in sys.argv:
        _inner()
        return
    work = tempfile.mkdtemp(prefix="aerostack-cg-parts-out-")
    out = os.path.join(work, "cg.out")
    cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=functools_reduce",
           "--dump-after=functools_reduce", f"--callgrind-out-file={out}", sys.executable, __file__, "--inner"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    blocks = [ln.split(" ", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("BLOCK ")]
    if proc.returncode != 0 or not blocks:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        raise SystemExit(proc.returncode or 1)
    dumps = sorted(glob_dumps(out), key=lambda p: int(re.sub(r".*\.", "", p)))
    dumps = [d for d in dumps if _total(d) > 0][-len(blocks):]
    per = {b: _total(d) / N for b, d in zip(blocks, dumps, strict=True)}
    base = per.pop("bare loop")
    print(f"instructions per call, less the bare loop ({base:,.0f}); {N} calls per block\n")
    for label, v in per.items():
        print(f"{label:28s} {v - base:>10,.0f}")
    print("\n" + "\n".join(ln for ln in proc.stdout.splitlines() if ln.startswith("STATS")))
    print(f"(callgrind files: {work})")


def glob_dumps(out: str) -> list[str]:
    import glob

    return glob.glob(out + ".*")


if __name__ == "__main__":
    main()
