"""Where aerostack-meter's own time goes on the call and chunk paths, without the SDK around it.

    python benchmarks/profile_hot_paths.py [--n 200000] [--profile] [--sdk]

1. The patched method's wrapper around a stub that returns a pre-built SDK object (a
   ``ChatCompletion``, a ``Message``): ns per call, ours alone, against calling the stub directly.
2. The stream proxy over pre-built chunks (chat chunks, responses events, messages events):
   ns per chunk, against iterating the same list.
3. ``--sdk``: the real SDK on a ``MockTransport``, patched vs unpatched, alternated in one process
   (``instrument()`` / ``uninstrument()``): µs per call and the ratio.
``--profile`` adds a cProfile table of 1 and 2 (function-level costs, call counts per call).
Prints only; nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aerostack_meter
from aerostack_meter import Meter
from aerostack_meter._wrapping import make_wrapper
from aerostack_meter.testing import MemorySink

pc = time.perf_counter_ns


def best_of(fn: Callable[[int], None], n: int, reps: int = 7) -> float:
    """Median ns per iteration over ``reps`` runs of ``fn(n)``."""
    fn(min(n, 1000))
    out = []
    for _ in range(reps):
        t0 = pc()
        fn(n)
        out.append((pc() - t0) / n)
    return statistics.median(out)


def sdk_objects() -> dict[str, Any]:
    """Pre-built SDK objects parsed from the mock LLM's wire bodies."""
    import json

    import anthropic.types as at
    import openai.types.chat as oc
    import openai.types.responses as orr
    from _peers_worker import _mock_bodies

    bodies = _mock_bodies()

    def sse(raw: bytes) -> list[dict[str, Any]]:
        return [json.loads(line[6:]) for line in raw.decode().splitlines()
                if line.startswith("data: ") and line[6:] != "[DONE]"]

    chat_chunks = [oc.ChatCompletionChunk.model_validate(d) for d in sse(bodies[("chat", True, True)][0])]
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    ev = TypeAdapter(ResponseStreamEvent)
    resp_events = [ev.validate_python(d) for d in sse(bodies[("responses", True, False)][0])]
    from anthropic.types import RawMessageStreamEvent

    mev = TypeAdapter(RawMessageStreamEvent)
    msg_events = [mev.validate_python(d) for d in sse(bodies[("messages", True, False)][0])
                  if d.get("type") != "ping"]  # the SDK skips pings
    return {
        "chat": oc.ChatCompletion.model_validate_json(bodies[("chat", False, False)][0]),
        "responses": orr.Response.model_validate_json(bodies[("responses", False, False)][0]),
        "messages": at.Message.model_validate_json(bodies[("messages", False, False)][0]),
        "chat_chunks": chat_chunks, "responses_events": resp_events, "messages_events": msg_events,
    }


def endpoints() -> dict[str, Any]:
    from aerostack_meter.providers import anthropic as pa
    from aerostack_meter.providers import openai as po

    msg = next(t.endpoint for t in pa._targets() if t.path == "Messages.create")
    return {"chat": po.CHAT_CREATE, "responses": po.RESPONSES_CREATE, "messages": msg}


class _Stub:
    """Stands in for an SDK resource instance (``stream_usage`` looks at ``_client.base_url``)."""

    class _client:
        base_url = "https://api.openai.com/v1"


def per_call(meter: Meter, objs: dict[str, Any], eps: dict[str, Any], n: int) -> dict[str, tuple[float, float]]:
    out = {}
    inst = _Stub()
    for name in ("chat", "responses", "messages"):
        obj = objs[name]

        def stub(*args: Any, obj: Any = obj, **kwargs: Any) -> Any:
            return obj

        w = make_wrapper(eps[name], False, lambda: meter)
        kw = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

        def plain(k: int, stub: Any = stub, kw: Any = kw) -> None:
            for _ in range(k):
                stub(**kw)

        def wrapped(k: int, w: Any = w, stub: Any = stub, kw: Any = kw) -> None:
            for _ in range(k):
                w(stub, inst, (), kw)

        with aerostack_meter.consumer("usr_1"):
            base = best_of(plain, n)
            ours = best_of(wrapped, n)
        meter.flush(30)
        out[name] = (base, ours)
    return out


def per_chunk(meter: Meter, objs: dict[str, Any], eps: dict[str, Any], n: int) -> dict[str, tuple[float, float]]:
    out = {}
    inst = _Stub()
    for name, key in (("chat", "chat_chunks"), ("responses", "responses_events"), ("messages", "messages_events")):
        chunks = objs[key]
        w = make_wrapper(eps[name], False, lambda: meter)

        class FakeStream:  # what the SDK's Stream is to the proxy: an iterator of parsed events
            def __init__(self, chunks: list[Any] = chunks) -> None:
                self._it = iter(chunks)

            def __iter__(self) -> Any:
                return self._it

            def __next__(self) -> Any:
                return next(self._it)

            def close(self) -> None:
                pass

        import openai

        # The proxy is chosen by endpoint.kind(): make the fake pass as the SDK's stream type.
        ep = eps[name]
        kind = ep.kind
        ep.kind = lambda result, kind=kind: "stream" if isinstance(result, FakeStream) else kind(result)  # type: ignore[method-assign]
        kw = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
              "max_tokens": 10}
        streams = max(1, n // len(chunks))

        def plain(k: int) -> None:
            for _ in range(k):
                for _ in FakeStream():
                    pass

        def wrapped(k: int, w: Any = w, kw: Any = kw) -> None:
            for _ in range(k):
                for _ in w(lambda **_: FakeStream(), inst, (), kw):
                    pass

        with aerostack_meter.consumer("usr_1"):
            base = best_of(plain, streams) / len(chunks)
            ours = best_of(wrapped, streams) / len(chunks)
        ep.kind = kind  # type: ignore[method-assign]
        meter.flush(30)
        out[name] = (base, ours)
        del openai
    return out


def allocations(meter: Meter, objs: dict[str, Any], eps: dict[str, Any]) -> float:
    """Bytes still held per call after 20,000 wrapped calls (the queue drained): leak check."""
    obj = objs["chat"]
    w = make_wrapper(eps["chat"], False, lambda: meter)
    kw = {"model": "m", "messages": []}
    with aerostack_meter.consumer("usr_1"):
        for _ in range(1000):
            w(lambda **_: obj, None, (), kw)
        meter.flush(30)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20_000):
            w(lambda **_: obj, None, (), kw)
        meter.flush(30)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    return (after - before) / 20_000


def sdk_alternating(rounds: int, calls: int) -> dict[str, tuple[float, float]]:
    """Real SDK calls on a MockTransport: patched and unpatched blocks alternated in one process."""
    import anthropic
    import httpx2
    import openai
    from _peers_worker import MSGS, anthropic_options, make_handler

    handler = make_handler()
    oc = openai.OpenAI(api_key="x", base_url="http://mock.invalid/v1",
                       http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    ac = anthropic.Anthropic(api_key="x", base_url="http://mock.invalid", **anthropic_options(),
                             http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    aoc = openai.AsyncOpenAI(api_key="x", base_url="http://mock.invalid/v1",
                             http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)))
    loop = asyncio.new_event_loop()

    async def achat(k: int) -> None:
        for _ in range(k):
            await aoc.chat.completions.create(model="gpt-4o-mini", messages=MSGS)

    ops: dict[str, Callable[[], Any]] = {
        "chat sync": lambda: oc.chat.completions.create(model="gpt-4o-mini", messages=MSGS),
        "responses sync": lambda: oc.responses.create(model="gpt-4o-mini", input="Say hello."),
        "messages sync": lambda: ac.messages.create(model="claude-3-5-haiku-latest", max_tokens=256,
                                                    messages=MSGS),
    }
    times: dict[str, dict[bool, list[float]]] = {k: {False: [], True: []} for k in [*ops, "chat async"]}
    with aerostack_meter.consumer("usr_1"):
        for r in range(rounds * 2):
            on = r % 2 == 1
            (aerostack_meter.instrument if on else aerostack_meter.uninstrument)()
            for name, fn in ops.items():
                for _ in range(20):
                    fn()
                t0 = pc()
                for _ in range(calls):
                    fn()
                times[name][on].append((pc() - t0) / calls / 1000)
            loop.run_until_complete(achat(20))
            t0 = pc()
            loop.run_until_complete(achat(calls))
            times["chat async"][on].append((pc() - t0) / calls / 1000)
    aerostack_meter.uninstrument()
    return {k: (statistics.median(v[False]), statistics.median(v[True])) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sdk", action="store_true")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    meter = aerostack_meter.init(sink=MemorySink(), api_id="api", flush_interval=0.2, instrument=False)
    objs, eps = sdk_objects(), endpoints()

    print("ours alone, ns per call (stub returning a pre-built response):")
    for name, (base, ours) in per_call(meter, objs, eps, args.n).items():
        print(f"  {name:10s} stub {base:7.0f}   wrapped {ours:7.0f}   ours {ours - base:7.0f}")
    print("ours alone, ns per chunk (proxy over pre-built events; includes one call per stream):")
    for name, (base, ours) in per_chunk(meter, objs, eps, args.n).items():
        print(f"  {name:10s} list {base:7.0f}   proxied {ours:7.0f}   ours {ours - base:7.0f}")
    print(f"bytes retained per call (leak check): {allocations(meter, objs, eps):.1f}")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        per_call(meter, objs, eps, args.n // 10)
        per_chunk(meter, objs, eps, args.n // 10)
        prof.disable()
        pstats.Stats(prof).strip_dirs().sort_stats("tottime").print_stats(30)
    if args.sdk:
        print("real SDK on a MockTransport, µs per call, unpatched vs patched (alternated):")
        for name, (off, on) in sdk_alternating(args.rounds, 300).items():
            print(f"  {name:15s} bare {off:7.1f}   patched {on:7.1f}   added {on - off:+6.1f} "
                  f"({(on / off - 1) * 100:+.1f}%)")
    aerostack_meter.shutdown(5)


if __name__ == "__main__":
    main()
