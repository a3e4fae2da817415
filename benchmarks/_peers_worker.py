"""One configuration of benchmarks/compare_peers.py, run in a fresh process (peers patch globally).

    python benchmarks/_peers_worker.py MODE --config NAME [--sink URL] [--gateway URL] [...]

MODE is ``micro`` (figures 1-2: per-call and per-chunk cost over an in-process MockTransport;
bare and configured blocks alternated in one process),
``slow`` (figure 3: the same calls while the exporter's collector answers slowly), ``tput``
(figure 5: calls per second against the mock LLM server over loopback HTTP) or ``import``
(figure 4: time and memory of the enabling import). ``micro`` and ``slow`` first measure the bare
SDK in this same process, then enable the configuration and measure again, so every figure is a
difference within one process. The result is one line ``RESULT {json}`` on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CONFIGS = ("bare", "aerostack", "langfuse", "openllmetry", "posthog")
MSGS = [{"role": "user", "content": "Say hello to the benchmark in a few words."}]
OPENAI_MODEL = "gpt-4o-mini"
CLAUDE_MODEL = "claude-3-5-haiku-latest"
OUTPUT_WORDS = 32  # reply length: 34 chat chunks, 40 responses events, 37 messages events

pc = time.perf_counter


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the in-process transport ---------------------------------------------------------------------


def _mock_bodies() -> dict[tuple[str, bool, bool], tuple[bytes, str]]:
    """Wire bytes for each endpoint, built once by the mock LLM server's own response builders."""
    from aerostack_meter.servers import _mock_anthropic as ma
    from aerostack_meter.servers import _mock_openai as mo
    from aerostack_meter.servers._mock_plan import JsonPlan, RequestInfo
    from aerostack_meter.servers._mock_usage import Controls

    def build(fn: Callable[..., Any], body: dict[str, Any]) -> tuple[bytes, str]:
        plan = fn(body, RequestInfo(Controls(output_tokens=OUTPUT_WORDS), 1, 1_700_000_000))
        if isinstance(plan, JsonPlan):
            return json.dumps(plan.body).encode(), "application/json"
        return b"".join(f.data for f in plan.frames), "text/event-stream"

    chat = {"model": OPENAI_MODEL, "messages": MSGS}
    resp = {"model": OPENAI_MODEL, "input": "Say hello."}
    msg = {"model": CLAUDE_MODEL, "max_tokens": 256, "messages": MSGS}
    s = {"stream": True}
    return {
        ("chat", False, False): build(mo.chat, chat),
        ("chat", True, False): build(mo.chat, {**chat, **s}),
        ("chat", True, True): build(mo.chat, {**chat, **s, "stream_options": {"include_usage": True}}),
        ("responses", False, False): build(mo.responses, resp),
        ("responses", True, False): build(mo.responses, {**resp, **s}),
        ("messages", False, False): build(ma.messages, msg),
        ("messages", True, False): build(ma.messages, {**msg, **s}),
    }


def make_handler() -> Callable[[Any], Any]:
    import httpx2

    bodies = _mock_bodies()
    headers = {k: {"content-type": ct} for k, (_, ct) in bodies.items()}

    def handler(request: Any) -> Any:
        c = request.content
        p = request.url.path
        ep = "chat" if p.endswith("/chat/completions") else "responses" if p.endswith("/responses") else "messages"
        stream = b'"stream":true' in c or b'"stream": true' in c
        usage = ep == "chat" and stream and (b'"include_usage":true' in c or b'"include_usage": true' in c)
        key = (ep, stream, usage)
        return httpx2.Response(200, content=bodies[key][0], headers=headers[key])

    return handler


# -- the configurations ---------------------------------------------------------------------------


@dataclass
class Setup:
    """What a configuration changes: client classes, per-call arguments, a scope, a flush."""

    openai_cls: Any = None
    async_openai_cls: Any = None
    anthropic_cls: Any = None  # None: this configuration does not meter Anthropic
    async_anthropic_cls: Any = None
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    scope: Callable[[], Any] = contextlib.nullcontext
    flush: Callable[[], Any] = lambda: None


def bare() -> Setup:
    import anthropic
    import openai

    return Setup(openai.OpenAI, openai.AsyncOpenAI, anthropic.Anthropic, anthropic.AsyncAnthropic)


def enable(name: str, sink: str, gateway: str) -> Setup:
    """The documented way to turn each configuration on, pointed at a loopback sink."""
    if name == "bare":
        return bare()
    if name == "aerostack":
        import tempfile

        # the default durable store (the billing sink names its destination): a fresh state
        # directory, so no journal of an earlier run is adopted and delivered during the timing
        os.environ.update(AEROSTACK_API_KEY="ac_secret_bench", AEROSTACK_API_ID="api_bench",
                          AEROSTACK_BASE_URL=gateway,
                          AEROSTACK_METER_STATE_DIR=tempfile.mkdtemp(prefix="aerostack-peers-"))
        import aerostack_meter
        import aerostack_meter.auto

        assert aerostack_meter.stats().durable, "the durable store is not on"

        return Setup(*_sdk_classes(), scope=lambda: aerostack_meter.consumer("usr_1"),
                     flush=lambda: aerostack_meter.flush(30))
    if name == "langfuse":
        os.environ.update(LANGFUSE_PUBLIC_KEY="pk-lf-bench", LANGFUSE_SECRET_KEY="sk-lf-bench",
                          LANGFUSE_BASE_URL=sink, LANGFUSE_HOST=sink)
        from langfuse import get_client, propagate_attributes
        from langfuse.openai import openai as lf_openai  # the drop-in: OpenAI only

        return Setup(lf_openai.OpenAI, lf_openai.AsyncOpenAI,
                     scope=lambda: propagate_attributes(user_id="usr_1"),
                     flush=lambda: get_client().flush())
    if name == "openllmetry":
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{sink}/v1/traces")))
        trace.set_tracer_provider(provider)
        OpenAIInstrumentor().instrument()
        AnthropicInstrumentor().instrument()
        return Setup(*_sdk_classes(), flush=lambda: provider.force_flush(30_000))
    if name == "posthog":
        from posthog import Posthog
        from posthog.ai.anthropic import Anthropic, AsyncAnthropic
        from posthog.ai.openai import AsyncOpenAI, OpenAI

        ph = Posthog("phc_bench", host=sink)

        def bind(cls: Any) -> Any:
            return lambda **kw: cls(posthog_client=ph, **kw)

        return Setup(bind(OpenAI), bind(AsyncOpenAI), bind(Anthropic), bind(AsyncAnthropic),
                     call_kwargs={"posthog_distinct_id": "usr_1"}, flush=ph.flush)
    raise SystemExit(f"unknown config {name!r}")


def _sdk_classes() -> tuple[Any, Any, Any, Any]:
    import anthropic
    import openai

    return openai.OpenAI, openai.AsyncOpenAI, anthropic.Anthropic, anthropic.AsyncAnthropic


# -- the operations -------------------------------------------------------------------------------


@dataclass
class Op:
    name: str
    provider: str
    is_async: bool
    stream: bool
    call: Callable[[], Any]


def operations(setup: Setup, handler: Callable[[Any], Any]) -> list[Op]:
    import httpx2

    kw = setup.call_kwargs
    oc = setup.openai_cls(api_key="sk-bench", base_url="http://mock.invalid/v1", max_retries=0,
                          http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    aoc = setup.async_openai_cls(api_key="sk-bench", base_url="http://mock.invalid/v1", max_retries=0,
                                 http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)))
    ops = [
        Op("chat", "openai", False, False,
           lambda: oc.chat.completions.create(model=OPENAI_MODEL, messages=MSGS, **kw)),
        Op("chat", "openai", True, False,
           lambda: aoc.chat.completions.create(model=OPENAI_MODEL, messages=MSGS, **kw)),
        Op("responses", "openai", False, False,
           lambda: oc.responses.create(model=OPENAI_MODEL, input="Say hello.", **kw)),
        Op("responses", "openai", True, False,
           lambda: aoc.responses.create(model=OPENAI_MODEL, input="Say hello.", **kw)),
        Op("chat", "openai", False, True,
           lambda: oc.chat.completions.create(model=OPENAI_MODEL, messages=MSGS, stream=True, **kw)),
        Op("chat", "openai", True, True,
           lambda: aoc.chat.completions.create(model=OPENAI_MODEL, messages=MSGS, stream=True, **kw)),
        Op("responses", "openai", False, True,
           lambda: oc.responses.create(model=OPENAI_MODEL, input="Say hello.", stream=True, **kw)),
        Op("responses", "openai", True, True,
           lambda: aoc.responses.create(model=OPENAI_MODEL, input="Say hello.", stream=True, **kw)),
    ]
    if setup.anthropic_cls is not None:
        opts = anthropic_options()
        ac = setup.anthropic_cls(api_key="sk-ant-bench", base_url="http://mock.invalid", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.MockTransport(handler)), **opts)
        aac = setup.async_anthropic_cls(
            api_key="sk-ant-bench", base_url="http://mock.invalid", max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)), **opts)

        def msg(client: Any, stream: bool) -> Callable[[], Any]:
            extra = {"stream": True} if stream else {}
            return lambda: client.messages.create(model=CLAUDE_MODEL, max_tokens=256, messages=MSGS,
                                                  **extra, **kw)

        ops += [Op("messages", "anthropic", False, False, msg(ac, False)),
                Op("messages", "anthropic", True, False, msg(aac, False)),
                Op("messages", "anthropic", False, True, msg(ac, True)),
                Op("messages", "anthropic", True, True, msg(aac, True))]
    return ops


def anthropic_options() -> dict[str, Any]:
    """anthropic 2.x traces its own calls with OpenTelemetry by default (into whatever tracer
    provider is set, e.g. OpenLLMetry's): off for every configuration, so only wrappers are timed."""
    import inspect

    import anthropic

    return {"open_telemetry": False} if "open_telemetry" in inspect.signature(anthropic.Anthropic).parameters else {}


def op_key(op: Op) -> str:
    return f"{op.name}{' stream' if op.stream else ''} {'async' if op.is_async else 'sync'}"


# Each returns (seconds to the first chunk, seconds for the rest, chunks) summed over n calls;
# a plain call reports its whole time as "first".
def run_sync(op: Op, n: int) -> tuple[float, float, int]:
    call = op.call
    if not op.stream:
        t0 = pc()
        for _ in range(n):
            call()
        return pc() - t0, 0.0, 0
    first = rest = 0.0
    chunks = 0
    for _ in range(n):
        t0 = pc()
        it = iter(call())
        next(it)
        t1 = pc()
        k = 1
        for _ in it:
            k += 1
        t2 = pc()
        first += t1 - t0
        rest += t2 - t1
        chunks += k
    return first, rest, chunks


async def run_async(op: Op, n: int) -> tuple[float, float, int]:
    call = op.call
    if not op.stream:
        t0 = pc()
        for _ in range(n):
            await call()
        return pc() - t0, 0.0, 0
    first = rest = 0.0
    chunks = 0
    for _ in range(n):
        t0 = pc()
        it = (await call()).__aiter__()
        await it.__anext__()
        t1 = pc()
        k = 1
        while True:
            try:
                await it.__anext__()
            except StopAsyncIteration:
                break
            k += 1
        t2 = pc()
        first += t1 - t0
        rest += t2 - t1
        chunks += k
    return first, rest, chunks


def measure(ops: list[Op], sizes: dict[str, int], batches: int, target: float) -> dict[str, Any]:
    """Median over ``batches`` of per-call (or per-chunk) means for every op; ``sizes`` is filled
    on the first (bare) pass so both passes time the same number of calls."""
    out: dict[str, Any] = {}
    loop = asyncio.new_event_loop()

    def run(op: Op, n: int) -> tuple[float, float, int]:
        return loop.run_until_complete(run_async(op, n)) if op.is_async else run_sync(op, n)

    for op in ops:
        key = op_key(op)
        run(op, 20)  # warm up (imports, caches, the interpreter's specialisation)
        if key not in sizes:
            t = run(op, 20)
            sizes[key] = max(5, int(target / ((t[0] + t[1]) / 20)))
        n = sizes[key]
        firsts, rests, chunks = [], [], 0
        for _ in range(batches):
            f, r, c = run(op, n)
            firsts.append(f / n)
            rests.append(r / n)
            chunks = c // n if op.stream else 0
        out[key] = {"first": statistics.median(firsts), "rest": statistics.median(rests),
                    "chunks": chunks, "n": n}
    loop.close()
    return out


# -- modes ----------------------------------------------------------------------------------------


_MISSING = object()


def _sdk_class_attrs() -> dict[tuple[type, str], Any]:
    """Every attribute of every class defined in the SDKs' (non-type) modules: what peers patch."""
    out: dict[tuple[type, str], Any] = {}
    for name, mod in list(sys.modules.items()):
        if mod is None or not name.startswith(("openai", "anthropic")) or ".types" in name:
            continue
        for obj in list(vars(mod).values()):
            if isinstance(obj, type) and obj.__module__ == name:
                for attr, value in list(vars(obj).items()):
                    out[(obj, attr)] = value
    return out


class Toggle:
    """Switches a configuration's class-level patches off and on again, so the bare SDK and the
    configuration can be timed in alternating blocks in one process (what each peer patched is
    found by comparing the SDK classes before and after it was enabled)."""

    def __init__(self, before: dict[tuple[type, str], Any], after: dict[tuple[type, str], Any]) -> None:
        known = {cls for cls, _ in before}  # classes imported since are not used by the bare calls
        self.changes = [(cls, attr, before.get((cls, attr), _MISSING), after.get((cls, attr), _MISSING))
                        for (cls, attr) in before.keys() | after.keys()
                        if cls in known
                        and before.get((cls, attr), _MISSING) is not after.get((cls, attr), _MISSING)]

    def set(self, on: bool) -> None:
        for cls, attr, off_value, on_value in self.changes:
            value = on_value if on else off_value
            if value is _MISSING:
                if attr in vars(cls):
                    delattr(cls, attr)
            else:
                setattr(cls, attr, value)


def mode_micro(args: argparse.Namespace) -> dict[str, Any]:
    """Bare and configured blocks alternated ``--batches`` times in this process; each side's
    median. Patches are switched off for the bare blocks (PostHog uses its own client classes)."""
    handler = make_handler()
    sizes: dict[str, int] = {}
    bare_ops = operations(bare(), handler)
    measure(bare_ops, sizes, 1, args.target)  # imports every lazily loaded SDK module; sizes
    before = _sdk_class_attrs()
    setup = enable(args.config, args.sink, args.gateway)
    toggle = Toggle(before, _sdk_class_attrs())
    print(f"{args.config}: {len(toggle.changes)} SDK class attributes patched: "
          + ", ".join(sorted(f"{c.__name__}.{a}" for c, a, _, _ in toggle.changes)), file=sys.stderr)
    cfg_ops = operations(setup, handler)
    pre: list[dict[str, Any]] = []
    post: list[dict[str, Any]] = []
    with setup.scope():
        for i in range(args.batches):
            for on in ((False, True) if i % 2 == 0 else (True, False)):
                toggle.set(on)
                (post if on else pre).append(measure(cfg_ops if on else bare_ops, sizes, 1, args.target))
    toggle.set(True)
    setup.flush()

    def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
        return {k: {f: statistics.median(r[k][f] for r in runs) for f in ("first", "rest")}
                | {"chunks": runs[0][k]["chunks"], "n": runs[0][k]["n"]} for k in runs[0]}

    return {"pre": median_of(pre), "post": median_of(post), "patched": len(toggle.changes)}


def _latencies(call: Callable[[], Any], seconds: float) -> list[float]:
    out = []
    end = pc() + seconds
    while True:
        t0 = pc()
        call()
        t1 = pc()
        out.append(t1 - t0)
        if t1 > end:
            return out


def _summary(lat: list[float]) -> dict[str, float]:
    lat = sorted(lat)
    return {"mean": statistics.fmean(lat), "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)],
            "max": lat[-1], "n": len(lat)}


def mode_slow(args: argparse.Namespace) -> dict[str, Any]:
    """Sync chat calls for ``--seconds`` while every export waits ``delay`` on the collector."""
    handler = make_handler()
    ops = [op for op in operations(bare(), handler) if op_key(op) == "chat sync"]
    run_sync(ops[0], 50)
    pre = _summary(_latencies(ops[0].call, args.seconds))
    setup = enable(args.config, args.sink, args.gateway)
    op = next(op for op in operations(setup, handler) if op_key(op) == "chat sync")
    with setup.scope():
        run_sync(op, 50)
        post = _summary(_latencies(op.call, args.seconds))
    return {"pre": pre, "post": post}


def mode_tput(args: argparse.Namespace) -> dict[str, Any]:
    """Completed chat calls per second against the mock LLM server: 8 threads, then 200 tasks."""
    setup = enable(args.config, args.sink, args.gateway)
    kw = setup.call_kwargs
    client = setup.openai_cls(api_key="sk-bench", base_url=args.llm, max_retries=0)

    def call() -> Any:
        return client.chat.completions.create(model=OPENAI_MODEL, messages=MSGS, **kw)

    out: dict[str, Any] = {}
    with setup.scope():
        call()
        stop = threading.Event()
        counts = [0] * args.threads
        errors = [0]

        def worker(i: int) -> None:
            while not stop.is_set():
                try:
                    call()
                    counts[i] += 1
                except Exception:
                    errors[0] += 1

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
        for t in ts:
            t.start()
        time.sleep(args.warmup)
        c0, t0 = sum(counts), pc()
        time.sleep(args.seconds)
        c1, t1 = sum(counts), pc()
        stop.set()
        for t in ts:
            t.join()
        out["threads"] = {"rate": (c1 - c0) / (t1 - t0), "errors": errors[0]}

        async def tasks() -> dict[str, Any]:
            aclient = setup.async_openai_cls(api_key="sk-bench", base_url=args.llm, max_retries=0)
            done = [0]
            errs = [0]
            halt = asyncio.Event()

            async def task() -> None:
                while not halt.is_set():
                    try:
                        await aclient.chat.completions.create(model=OPENAI_MODEL, messages=MSGS, **kw)
                        done[0] += 1
                    except Exception:
                        errs[0] += 1

            running = [asyncio.create_task(task()) for _ in range(args.tasks)]
            await asyncio.sleep(args.warmup)
            a0, s0 = done[0], pc()
            await asyncio.sleep(args.seconds)
            a1, s1 = done[0], pc()
            halt.set()
            await asyncio.gather(*running, return_exceptions=True)
            return {"rate": (a1 - a0) / (s1 - s0), "errors": errs[0]}

        out["tasks"] = asyncio.run(tasks())
    setup.flush()
    return out


def mode_import(args: argparse.Namespace) -> dict[str, Any]:
    """The enabling code's time and resident memory, with the SDKs already imported by the app."""
    t0 = pc()
    import anthropic  # noqa: F401
    import openai  # noqa: F401

    t1 = pc()
    rss0 = _rss()
    t2 = pc()
    if args.config != "bare":
        enable(args.config, args.sink, args.gateway)
    t3 = pc()
    return {"sdk_s": t1 - t0, "sdk_rss": rss0, "enable_s": t3 - t2, "enable_rss": _rss() - rss0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("micro", "slow", "tput", "import"))
    ap.add_argument("--config", required=True, choices=CONFIGS)
    ap.add_argument("--sink", default="http://127.0.0.1:9")
    ap.add_argument("--gateway", default="http://127.0.0.1:9/v1")
    ap.add_argument("--llm", default="")
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.1, help="seconds per timed batch")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--tasks", type=int, default=200)
    args = ap.parse_args()
    result = {"micro": mode_micro, "slow": mode_slow, "tput": mode_tput, "import": mode_import}[args.mode](args)
    print("RESULT " + json.dumps(result), flush=True)
    sys.stdout.flush()
    os._exit(0)  # skip the peers' exit hooks: exit time is not what is measured here


if __name__ == "__main__":
    main()
