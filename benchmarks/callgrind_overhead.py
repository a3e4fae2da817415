"""Instructions a metered call adds, counted by valgrind's callgrind (robust to a loaded machine).

    python benchmarks/callgrind_overhead.py [--calls 100] [--ops chat,messages,...] [--annotate] [--cache-sim]

Runs ONE process under ``valgrind --tool=callgrind`` with collection off, except inside
``functools.reduce`` (``--toggle-collect``), and a profile dump after each ``reduce`` call: each
timed block runs as one ``reduce`` over ``--calls`` calls, so each dump holds exactly one block.
Blocks, in this order per operation: the bare SDK (before anything of ours touched its classes),
then patched (``instrument()``), then ``wrap()`` (after ``uninstrument()``); each after its own
warm-up calls. The default durable store is on (a journal in a temporary ``state_dir``; the sink
names a destination and drops every batch). Streams are counted per call (the whole stream read)
and per chunk (the slope between two stream lengths).

Operations: OpenAI (``chat``, ``responses``), Anthropic (``messages``), Gemini
(``gemini``: ``models.generate_content``), Bedrock (``converse``, ``invoke_model``; the patched
block uses a client built after ``instrument()``, as an application that calls ``init()`` first
does) and Mistral (``mistral``: ``chat.complete``); an ``a`` prefix is the async client. Each SDK
talks to an in-process transport answering the mock LLM server's own bodies (Bedrock: a botocore
``before-send`` handler). The run checks that every patched and ``wrap()`` call was metered
exactly (nothing missing, no internal error).

What is counted: the calling thread's instructions (callgrind collects per thread, and only the
calling thread enters ``reduce``): the reporter thread's share of the work is not in these
figures (``attribute_overhead.py`` measures it in CPU time). The garbage collector is paused
inside each block (and run between blocks): a collection's cost would otherwise land on
whichever block crosses a threshold, some tens of thousands of instructions per call of noise.

``--cache-sim`` adds callgrind's cache and branch-predictor simulation (about twice as slow) and a
second table of estimated cycles per call: instructions weighted by the L1 and last-level misses and
mispredicted branches they cause. The metered call's own code runs once per call between the SDK's
parts, with caches the SDK has just filled with its own data: by instructions alone it looks cheaper
than it runs. The estimate does not depend on the machine's load either.

Printed: instructions per call for each operation and variant, the ratio to bare, and (with
``--annotate``) the functions of ours that the patched and wrap() blocks spend the most in.
Nothing is written.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = ("bare", "patched", "wrap()")
OPS = ("chat", "achat", "responses", "aresponses", "messages", "amessages",
       "chat_stream", "messages_stream", "gemini", "agemini", "converse", "invoke_model",
       "mistral", "amistral", "achat_stream", "responses_stream", "amessages_stream",
       "gemini_stream", "converse_stream", "invoke_stream", "mistral_stream", "chat_usage_stream",
       "chat_first", "chat_usage_first", "responses_first", "messages_first", "gemini_first")
# ``*_first``: a stream created and read to its first chunk only (the rest is read outside the
# counted block): what a metered stream adds before its first chunk, to compare with the
# non-streaming call's row (``chat_usage_first``: the caller asks for ``include_usage``, nothing
# injected). ``chat_usage_stream``: a chat stream whose caller asks for
# ``include_usage`` itself (bare included): what the SDK spends on what the meter injects.
# The other providers' SDK clients (built only when an op needs them): op -> client key.
NEW = {"gemini": "gemini", "agemini": "gemini", "converse": "bedrock", "invoke_model": "bedrock",
       "mistral": "mistral", "amistral": "mistral"}
STREAM_WORDS = (8, 128)  # reply lengths for the per-chunk slope


def _canned(build: object, body: dict[str, object], model: str) -> bytes:
    """The mock LLM server's own JSON answer to ``body`` (32 output words)."""
    import json

    from aerostack_meter.servers._mock_plan import RequestInfo
    from aerostack_meter.servers._mock_usage import Controls

    plan = build(body, RequestInfo(Controls(output_tokens=32), 1, 1_700_000_000,
                                       {"model": model, "modelId": model}))  # type: ignore[operator]
    return json.dumps(plan.body).encode()  # type: ignore[attr-defined]


def _new_clients(key: str) -> object:
    """A client of another provider's SDK over an in-process transport (no network): Gemini
    (``httpx.MockTransport``, sync and async), Mistral (``httpx2.MockTransport``), Bedrock (a
    botocore ``before-send`` handler answering canned bodies: the whole botocore parsing runs)."""
    from aerostack_meter.servers import _mock_bedrock, _mock_gemini, _mock_mistral

    if key == "gemini":
        import httpx
        from google import genai
        from google.genai import types

        body = _canned(_mock_gemini.generate, {"contents": [{"parts": [{"text": "Say hello."}]}]},
                       "gemini-2.5-flash")

        def gemini(request: object) -> object:
            return httpx.Response(200, headers={"content-type": "application/json"}, content=body)

        transport = httpx.MockTransport(gemini)
        return genai.Client(api_key="x", http_options=types.HttpOptions(
            base_url="http://mock.invalid", client_args={"transport": transport},
            async_client_args={"transport": transport}))
    if key == "mistral":
        import httpx2

        try:
            from mistralai.client import Mistral
        except ImportError:  # 1.x
            from mistralai import Mistral  # type: ignore[attr-defined,no-redef]
        body = _canned(_mock_mistral.chat, {"model": "mistral-small-latest", "messages": [
            {"role": "user", "content": "Say hello."}]}, "mistral-small-latest")

        def mistral(request: object) -> object:
            return httpx2.Response(200, headers={"content-type": "application/json"}, content=body)

        transport = httpx2.MockTransport(mistral)
        return Mistral(api_key="x", server_url="http://mock.invalid",
                       client=httpx2.Client(transport=transport),
                       async_client=httpx2.AsyncClient(transport=transport))
    import io

    import boto3
    from botocore.awsrequest import AWSResponse
    from botocore.config import Config

    converse = _canned(_mock_bedrock.converse, {"messages": [{"role": "user", "content": [
        {"text": "Say hello."}]}]}, "anthropic.claude-3-5-haiku-20241022-v1:0")
    invoke = b'{"type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":12,"output_tokens":20}}'

    class Raw(io.BytesIO):
        def stream(self, **_: object) -> object:
            yield self.getvalue()

    def answer(request: object, **_: object) -> object:
        url = request.url.split("?", 1)[0]  # type: ignore[attr-defined]
        headers = {"content-type": "application/json"}
        if url.endswith("/invoke"):
            headers.update({"x-amzn-bedrock-input-token-count": "12",
                            "x-amzn-bedrock-output-token-count": "20"})
            return AWSResponse(url, 200, headers, Raw(invoke))
        return AWSResponse(url, 200, headers, Raw(converse))

    client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="AKIDBENCH",
                          aws_secret_access_key="x", endpoint_url="http://mock.invalid",
                          config=Config(retries={"max_attempts": 1}))
    client.meta.events.register("before-send.bedrock-runtime.*", answer)
    return client


def _inner(calls: int, ops: list[str], warm: int, with_floor: bool = False) -> None:
    """Run under callgrind: the blocks, one ``functools.reduce`` each, in a fixed order."""
    import asyncio
    import functools
    import gc

    sys.path.insert(0, str(HERE))
    import _peers_worker as pw
    import anthropic
    import httpx2
    import openai
    from _floor import FLOORED, Floor
    from _peers_worker import MSGS, anthropic_options
    from _timing import NullSink

    import aerostack_meter as am

    class DurableNullSink(NullSink):
        destination = "bench-null"

    def handler_for(words: int) -> object:
        old = pw.OUTPUT_WORDS
        pw.OUTPUT_WORDS = words
        try:
            return pw.make_handler()
        finally:
            pw.OUTPUT_WORDS = old

    am.init(sink=DurableNullSink(), api_id="api_bench", default_consumer_id="bench",
            state_dir=tempfile.mkdtemp(prefix="aerostack-cg-"))
    am.uninstrument()
    loop = asyncio.new_event_loop()
    url = "http://mock.invalid"

    def clients(handler: object, words: int = pw.OUTPUT_WORDS) -> dict[str, object]:
        return {**_other_clients(words, ops),
            "openai": openai.OpenAI(api_key="x", base_url=url + "/v1", http_client=httpx2.Client(
                transport=httpx2.MockTransport(handler))),
            "aopenai": openai.AsyncOpenAI(api_key="x", base_url=url + "/v1", http_client=httpx2.AsyncClient(
                transport=httpx2.MockTransport(handler))),
            "anthropic": anthropic.Anthropic(api_key="x", base_url=url, http_client=httpx2.Client(
                transport=httpx2.MockTransport(handler)), **anthropic_options()),
            "aanthropic": anthropic.AsyncAnthropic(api_key="x", base_url=url, http_client=httpx2.AsyncClient(
                transport=httpx2.MockTransport(handler)), **anthropic_options()),
        }

    def sync(fn):  # type: ignore[no-untyped-def]
        return fn

    def asyn(fn):  # type: ignore[no-untyped-def]
        def run(c: object) -> None:
            loop.run_until_complete(fn(c))
        return run

    async def achat(c):  # type: ignore[no-untyped-def]
        await c.chat.completions.create(model="gpt-4o-mini", messages=MSGS)

    async def aresponses(c):  # type: ignore[no-untyped-def]
        await c.responses.create(model="gpt-4o-mini", input="Say hello.")

    async def amessages(c):  # type: ignore[no-untyped-def]
        await c.messages.create(model="claude-3-5-haiku-latest", max_tokens=256, messages=MSGS)

    async def agemini(c):  # type: ignore[no-untyped-def]
        await c.aio.models.generate_content(model="gemini-2.5-flash", contents="Say hello.")

    async def amistral(c):  # type: ignore[no-untyped-def]
        await c.chat.complete_async(model="mistral-small-latest", messages=MSGS)

    def chat_stream(c):  # type: ignore[no-untyped-def]
        for _ in c.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True):
            pass

    def chat_usage_stream(c):  # type: ignore[no-untyped-def]
        for _ in c.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True,
                                           stream_options={"include_usage": True}):
            pass

    def first(create):  # type: ignore[no-untyped-def]
        def run(c):  # type: ignore[no-untyped-def]
            it = iter(create(c))
            next(it)
            return it  # read to its end after the block (not counted)
        return run

    def messages_stream(c):  # type: ignore[no-untyped-def]
        for _ in c.messages.create(model="claude-3-5-haiku-latest", max_tokens=256, messages=MSGS,
                                   stream=True):
            pass

    async def achat_stream(c):  # type: ignore[no-untyped-def]
        async for _ in await c.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True):
            pass

    async def amessages_stream(c):  # type: ignore[no-untyped-def]
        async for _ in await c.messages.create(model="claude-3-5-haiku-latest", max_tokens=256,
                                               messages=MSGS, stream=True):
            pass

    def responses_stream(c):  # type: ignore[no-untyped-def]
        for _ in c.responses.create(model="gpt-4o-mini", input="Say hello.", stream=True):
            pass

    def gemini_stream(c):  # type: ignore[no-untyped-def]
        for _ in c.models.generate_content_stream(model="gemini-bench", contents="Say hello."):
            pass

    def converse_stream(c):  # type: ignore[no-untyped-def]
        for _ in c.converse_stream(modelId=BEDROCK_MODEL, messages=BEDROCK_MSGS)["stream"]:
            pass

    def invoke_stream(c):  # type: ignore[no-untyped-def]
        for _ in c.invoke_model_with_response_stream(modelId=BEDROCK_MODEL, body=BEDROCK_BODY)["body"]:
            pass

    def mistral_stream(c):  # type: ignore[no-untyped-def]
        for _ in c.chat.stream(model="mistral-small-latest", messages=MSGS):
            pass

    table = {
        "chat": ("openai", sync(lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MSGS))),
        "achat": ("aopenai", asyn(achat)),
        "responses": ("openai", sync(lambda c: c.responses.create(model="gpt-4o-mini", input="Say hello."))),
        "aresponses": ("aopenai", asyn(aresponses)),
        "messages": ("anthropic", sync(lambda c: c.messages.create(
            model="claude-3-5-haiku-latest", max_tokens=256, messages=MSGS))),
        "amessages": ("aanthropic", asyn(amessages)),
        "chat_stream": ("openai", sync(chat_stream)),
        "messages_stream": ("anthropic", sync(messages_stream)),
        "gemini": ("gemini", sync(lambda c: c.models.generate_content(
            model="gemini-2.5-flash", contents="Say hello."))),
        "agemini": ("gemini", asyn(agemini)),
        "converse": ("bedrock", sync(lambda c: c.converse(modelId=BEDROCK_MODEL, messages=BEDROCK_MSGS))),
        "invoke_model": ("bedrock", sync(lambda c: c.invoke_model(
            modelId=BEDROCK_MODEL, body=b'{"messages": [], "max_tokens": 10}')["body"].read())),
        "mistral": ("mistral", sync(lambda c: c.chat.complete(model="mistral-small-latest", messages=MSGS))),
        "amistral": ("mistral", asyn(amistral)),
        "achat_stream": ("aopenai", asyn(achat_stream)),
        "amessages_stream": ("aanthropic", asyn(amessages_stream)),
        "responses_stream": ("openai", sync(responses_stream)),
        "gemini_stream": ("gemini", sync(gemini_stream)),
        "converse_stream": ("bedrock", sync(converse_stream)),
        "invoke_stream": ("bedrock", sync(invoke_stream)),
        "mistral_stream": ("mistral", sync(mistral_stream)),
        "chat_usage_stream": ("openai", sync(chat_usage_stream)),
        "chat_first": ("openai", first(lambda c: c.chat.completions.create(
            model="gpt-4o-mini", messages=MSGS, stream=True))),
        "chat_usage_first": ("openai", first(lambda c: c.chat.completions.create(
            model="gpt-4o-mini", messages=MSGS, stream=True, stream_options={"include_usage": True}))),
        "responses_first": ("openai", first(lambda c: c.responses.create(
            model="gpt-4o-mini", input="Say hello.", stream=True))),
        "messages_first": ("anthropic", first(lambda c: c.messages.create(
            model="claude-3-5-haiku-latest", max_tokens=256, messages=MSGS, stream=True))),
        "gemini_first": ("gemini", first(lambda c: c.models.generate_content_stream(
            model="gemini-bench", contents="Say hello."))),
    }
    plain = clients(pw.make_handler())
    # other providers' clients; the patched Bedrock clients are built while instrumented (botocore
    # builds a class per client: a client built before init() is metered at _make_api_call)
    for key in sorted({NEW[o] for o in ops if o in NEW}):
        plain[key] = _new_clients(key)
    by_words = {w: clients(handler_for(w), w) for w in STREAM_WORDS}
    patched_only: dict[tuple[int, str], object] = {}
    if "bedrock" in plain or "bedrock" in by_words[STREAM_WORDS[0]]:
        am.instrument(("bedrock",))
        if "bedrock" in plain and any(NEW.get(o) == "bedrock" for o in ops):
            patched_only[(id(plain), "bedrock")] = _new_clients("bedrock")
        for w, cs in by_words.items():
            if "bedrock" in cs:
                patched_only[(id(cs), "bedrock")] = _other_clients(w, ops)["bedrock"]
        am.uninstrument()
    wrapped = {id(cs): {k: am.wrap(v) for k, v in cs.items()} for cs in [plain, *by_words.values()]}
    # Variants in order: bare (nothing of ours on the SDK's classes yet: wrap() proxies, once
    # called, leave the base-client hooks installed), patched, then wrap().
    floor = Floor() if with_floor else None  # the SDKs' own methods: nothing of ours is on them yet
    floored = {o for o in ops if table[o][0] in FLOORED and not o.endswith(("_stream", "_first"))}
    for variant in (*VARIANTS[:1], "floor", *VARIANTS[1:]) if floor is not None else VARIANTS:
        if floor is not None:
            floor.off()  # first: it puts back what it found, which instrument() then wraps
        (am.instrument if variant == "patched" else am.uninstrument)()
        if floor is not None and variant == "floor":
            floor.on()
        for name in ops:
            key, op = table[name]
            if variant == "floor" and name not in floored:
                continue
            sets = ([(name, by_words[STREAM_WORDS[0]])] if name.endswith("_first") else
                    [(name, plain)] if not name.endswith("_stream") else
                    [(f"{name} {w}", by_words[w]) for w in STREAM_WORDS])
            for label, cs in sets:
                c = (wrapped[id(cs)][key] if variant == "wrap()" else
                     patched_only.get((id(cs), key), cs[key]) if variant == "patched" else cs[key])
                for _ in range(warm):
                    it = op(c)
                    if name.endswith("_first"):  # its stream, read to its end (billed exactly)
                        for _ in it:  # type: ignore[attr-defined]
                            pass
                print(f"BLOCK {variant}|{label}", flush=True)
                gc.collect()
                gc.disable()  # a collection's cost lands on whichever block crosses a threshold
                if name.endswith("_first"):
                    opened: list[object] = []
                    functools.reduce(lambda acc, _i, op=op, c=c: acc.append(op(c)) or acc, range(calls),
                                     opened)
                    gc.enable()
                    for it in opened:  # the rest of each stream, not counted
                        for _ in it:  # type: ignore[attr-defined]
                            pass
                    continue
                functools.reduce(lambda acc, _i, op=op, c=c: op(c), range(calls), None)
                gc.enable()
    am.uninstrument()
    if floor is not None:
        floor.off()
        assert floor.read_so_far >= calls * len(floored), floor.read_so_far
    assert am.flush(30)
    stats = am.stats()
    am.shutdown()
    print(f"STATS calls_metered={stats.calls_metered} estimated={stats.events_estimated} "
          f"missing={dict(stats.missing)} internal_errors={stats.internal_errors}", flush=True)
    # every patched and wrap() call was metered, exactly (nothing missing, nothing estimated)
    assert stats.usage_missing == 0 and stats.internal_errors == 0 and not stats.events_estimated, stats
    assert stats.calls_metered >= 2 * calls * len(ops), (stats.calls_metered, 2 * calls * len(ops))


BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
BEDROCK_MSGS = [{"role": "user", "content": [{"text": "Say hello."}]}]
BEDROCK_BODY = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 256,
                           "messages": [{"role": "user", "content": "Say hello."}]}).encode()


def _other_clients(words: int, ops: list[str]) -> dict[str, object]:
    """Gemini, Bedrock and Mistral clients answering ``words``-word replies from the mock LLM
    server's own builders (only for the SDKs the chosen ops use: each import costs)."""
    from aerostack_meter.servers._mock_plan import JsonPlan, RequestInfo
    from aerostack_meter.servers._mock_usage import Controls

    def body(fn, request):  # type: ignore[no-untyped-def]
        plan = fn(request, RequestInfo(Controls(output_tokens=words), 1, 1_700_000_000,
                                       params={"model": BEDROCK_MODEL}))
        return json.dumps(plan.body).encode() if isinstance(plan, JsonPlan) else b"".join(
            f.data for f in plan.frames)

    out: dict[str, object] = {}
    if "gemini_stream" in ops or "gemini_first" in ops:
        import httpx
        from google import genai
        from google.genai import types

        from aerostack_meter.servers import _mock_gemini as mg

        sse = body(mg.stream_generate, {"contents": [{"role": "user", "parts": [{"text": "Say hello."}]}]})

        def gemini(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse)

        out["gemini"] = genai.Client(api_key="x", http_options=types.HttpOptions(
            base_url="http://mock.invalid", client_args={"transport": httpx.MockTransport(gemini)}))
    if "mistral_stream" in ops:
        import httpx
        from mistralai.client import Mistral

        from aerostack_meter.servers import _mock_mistral as mm

        msse = body(mm.chat, {"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hi"}],
                              "stream": True})

        def mistral(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=msse)

        out["mistral"] = Mistral(api_key="x", server_url="http://mock.invalid",
                                 client=httpx.Client(transport=httpx.MockTransport(mistral)))
    if "converse_stream" in ops or "invoke_stream" in ops:
        import io

        import boto3
        from botocore.awsrequest import AWSResponse
        from botocore.config import Config

        from aerostack_meter.servers import _mock_bedrock as mb

        converse = body(mb.converse_stream, {"messages": BEDROCK_MSGS})
        invoke = body(mb.invoke_stream, json.loads(BEDROCK_BODY))

        class Raw(io.BytesIO):
            def stream(self, **_: object):  # type: ignore[no-untyped-def]
                yield self.getvalue()

        def answer(request, **_):  # type: ignore[no-untyped-def]
            data = converse if "/converse-stream" in request.url else invoke
            return AWSResponse(request.url, 200, {"content-type": "application/vnd.amazon.eventstream"},
                               Raw(data))

        client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="AKIDBENCH",
                              aws_secret_access_key="bench", endpoint_url="http://mock.invalid",
                              config=Config(retries={"max_attempts": 1}))
        client.meta.events.register("before-send.bedrock-runtime.*", answer)
        out["bedrock"] = client
    return out


def _events(path: str) -> dict[str, int]:
    """The dump's totals by event name (``Ir``; with the cache simulation also the L1 / last-level
    misses and the branch mispredictions)."""
    names: list[str] = []
    with open(path) as f:
        for line in f:
            if line.startswith("events:"):
                names = line.split()[1:]
            if line.startswith("summary:") or line.startswith("totals:"):
                return dict(zip(names, (int(x) for x in line.split()[1:]), strict=False))
    raise ValueError(f"no totals in {path}")


def _total(path: str) -> int:
    return _events(path)["Ir"]


def _cycles(path: str) -> int:
    """An estimate of the cycles, with KCachegrind's weights (``Ir + 10 * (L1 misses + branch
    mispredictions) + 100 * last-level misses``): the instructions, plus what running them with
    cold caches and predictors costs."""
    e = _events(path)
    l1 = e["I1mr"] + e["D1mr"] + e["D1mw"]
    last = e["ILmr"] + e["DLmr"] + e["DLmw"]
    return e["Ir"] + 10 * (l1 + e["Bcm"] + e["Bim"]) + 100 * last


def _ours(path: str, top: int) -> str:
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True).stdout
    keep = [ln for ln in out.splitlines() if "aerostack_meter" in ln or "wrapt" in ln]
    return "\n".join(keep[:top])


def _table(per: dict[str, dict[str, float]], millions: bool = True) -> None:
    """One row per call: the bare figure (in millions unless told not), then what patched, wrap()
    and the floor (where it ran) add to it, and the ratios."""
    floor = any("floor" in v for v in per.values())
    print("| call | bare | patched: added, ratio | wrap(): added, ratio |" + (" floor: added, ratio |" if floor else ""))
    print("|---|---:|---:|---:|" + ("---:|" if floor else ""))
    for label, v in per.items():
        b = v["bare"]
        cells = [f"{b / 1e6:.3f} M" if millions else f"{b:,.0f}"] + [
            f"{v[x] - b:+,.0f}, {v[x] / b:.4f}x" if x in v else "n/a"
            for x in ("patched", "wrap()", *(("floor",) if floor else ()))]
        print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--warm", type=int, default=20)
    ap.add_argument("--ops", default="chat,achat,responses,aresponses,messages,amessages")
    ap.add_argument("--annotate", action="store_true")
    ap.add_argument("--cache-sim", action="store_true",
                    help="also simulate the caches and branch predictors: estimated cycles per call")
    ap.add_argument("--ll", type=int, metavar="BYTES",
                    help="with --cache-sim: the simulated last-level cache's size (16-way, 64-byte lines; "
                         "default: the machine's own), e.g. 1048576 for the share of a contended host's")
    ap.add_argument("--floor", action="store_true",
                    help="add a 'floor' block to the OpenAI and Anthropic calls: a hook at the SDK's "
                         "_process_response that only reads the two token counts (benchmarks/_floor.py)")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ll and not args.cache_sim:
        ap.error("--ll needs --cache-sim")
    ops = [o for o in args.ops.split(",") if o]
    for o in ops:
        if o not in OPS:
            ap.error(f"unknown op {o!r}; known: {', '.join(OPS)}")
    if args.inner:
        _inner(args.calls, ops, args.warm, args.floor)
        return
    work = tempfile.mkdtemp(prefix="aerostack-cg-out-")
    out = os.path.join(work, "cg.out")
    cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=functools_reduce",
           "--dump-after=functools_reduce", f"--callgrind-out-file={out}",
           *(["--cache-sim=yes", "--branch-sim=yes"] if args.cache_sim else []),
           *([f"--LL={args.ll},16,64"] if args.ll else []),
           sys.executable, __file__, "--inner", "--calls", str(args.calls), "--warm", str(args.warm),
           "--ops", ",".join(ops), *(["--floor"] if args.floor else [])]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    blocks = [ln.split(" ", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("BLOCK ")]
    if proc.returncode != 0 or not blocks:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        raise SystemExit(proc.returncode or 1)
    dumps = sorted(glob.glob(out + ".*"), key=lambda p: int(re.sub(r".*\.", "", p)))
    dumps = [d for d in dumps if _total(d) > 0][-len(blocks):]
    if len(dumps) != len(blocks):
        raise SystemExit(f"{len(dumps)} dumps for {len(blocks)} blocks (another functools.reduce ran)")
    per: dict[str, dict[str, float]] = {}
    cycles: dict[str, dict[str, float]] = {}
    last: dict[str, dict[str, float]] = {}
    files: dict[tuple[str, str], str] = {}
    for block, path in zip(blocks, dumps, strict=True):
        variant, label = block.split("|", 1)
        per.setdefault(label, {})[variant] = _total(path) / args.calls
        if args.cache_sim:
            cycles.setdefault(label, {})[variant] = _cycles(path) / args.calls
            e = _events(path)
            last.setdefault(label, {})[variant] = (e["ILmr"] + e["DLmr"] + e["DLmw"]) / args.calls
        files[(variant, label)] = path
    print(f"callgrind instructions per call ({args.calls} calls per block after {args.warm} warm-up; "
          "durable store on)\n")
    _table(per)
    if cycles:
        print("\nestimated cycles per call (callgrind's cache and branch simulation, KCachegrind's weights: "
              "Ir + 10 * (L1 misses + mispredicted branches) + 100 * last-level misses)\n")
        _table(cycles)
        size = f"{args.ll:,} bytes" if args.ll else "the machine's own"
        print(f"\nlast-level cache misses per call (simulated last level: {size}; each one a trip to "
              "memory)\n")
        _table(last, millions=False)
    streams = sorted({lbl.rsplit(" ", 1)[0] for lbl in per if " " in lbl})
    for s in streams:
        lo, hi = per[f"{s} {STREAM_WORDS[0]}"], per[f"{s} {STREAM_WORDS[1]}"]
        words = STREAM_WORDS[1] - STREAM_WORDS[0]
        slope = {x: (hi[x] - lo[x]) / words for x in VARIANTS}
        print(f"\n{s}: per extra word (one content chunk/event): bare {slope['bare']:,.0f} instructions; "
              f"patched {slope['patched'] - slope['bare']:+,.0f}; wrap() {slope['wrap()'] - slope['bare']:+,.0f}")
    if args.annotate:
        for (variant, label), path in files.items():
            if variant != "bare":
                print(f"\n## {variant} {label}: our functions, inclusive (whole block)\n{_ours(path, 25)}")
    print("\n" + "\n".join(ln for ln in proc.stdout.splitlines() if ln.startswith("STATS")))
    print(f"\n(callgrind files: {work})")


if __name__ == "__main__":
    main()
