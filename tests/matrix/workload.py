"""The fault matrix's workload: a real process making real SDK calls through a metered client.

    python tests/matrix/workload.py '<json config>'

It calls the mock LLM server (openai chat, and anthropic messages when its provider is there;
plain and streamed), each call in a ``consumer()`` scope and tagged ``x-mock-consumer`` so the
mock tallies usage under the same consumer the meter bills. Every line it prints is JSON:

* ``{"done": consumer, "units": n}`` after each completed call, when ``print_calls`` is set;
* ``{"phase": "ready"}`` when the calls are done and the process waits for a signal;
* ``{"stats": {...}, "pid": n, "exit": how}`` last, after the meter's own exit hook has run.

Modes: ``seq`` (calls one after another), ``concurrent`` (threads and asyncio tasks at once),
``fork`` (init in the parent, fork workers that call and exit), ``forever`` (calls until killed),
``idle`` (calls, then waits for SIGTERM), ``replay`` (no calls: a restart on an old spool).
"""

from __future__ import annotations

import asyncio
import atexit
import faulthandler
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import aerostack_meter as am


def emit(obj: dict[str, Any]) -> None:
    # One write of less than PIPE_BUF bytes is atomic: lines from threads and forked workers never
    # interleave, and no lock is needed (a signal handler may emit while the main thread does).
    os.write(1, (json.dumps(obj) + "\n").encode())


def stats_dict() -> dict[str, Any]:
    s = am.stats()
    return {
        "events_enqueued": s.events_enqueued, "events_sent": s.events_sent,
        "requests_sent": s.requests_sent, "units_sent": dict(s.units_sent), "retries": s.retries,
        "ambiguous_retries": s.ambiguous_retries, "dropped": dict(s.dropped),
        "calls_metered": s.calls_metered, "usage_missing": s.usage_missing,
        "queue_overflows": s.queue_overflows, "internal_errors": s.internal_errors,
        "pending": s.pending, "spooled": s.spooled,
    }


class Caller:
    """Makes call number ``i`` for a consumer with a sync or an async client; returns the units
    the provider reported (the same number the meter should bill under the "tokens" policy)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.llm = cfg["llm"]
        self.providers = cfg.get("providers", ["openai"])
        self.stream_every = cfg.get("stream_every", 3)
        self._sync: dict[str, Any] = {}
        self._async: dict[str, Any] = {}

    def _client(self, provider: str, is_async: bool) -> Any:
        cache = self._async if is_async else self._sync
        if provider not in cache:
            if provider == "openai":
                import openai

                cls = openai.AsyncOpenAI if is_async else openai.OpenAI
                cache[provider] = cls(base_url=self.llm, api_key="sk-mock", max_retries=0, timeout=30)
            else:
                import anthropic

                cls = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
                cache[provider] = cls(base_url=self.llm.removesuffix("/v1"), api_key="sk-mock",
                                      max_retries=0, timeout=30)
        return cache[provider]

    def _args(self, consumer: str, i: int) -> tuple[str, bool, dict[str, Any]]:
        provider = self.providers[i % len(self.providers)]
        stream = self.stream_every > 0 and i % self.stream_every == self.stream_every - 1
        text = " ".join(["metered"] * (1 + i % 7))
        kw: dict[str, Any] = {"messages": [{"role": "user", "content": text}],
                              "extra_headers": {"x-mock-consumer": consumer}}
        if provider == "openai":
            kw["model"] = "gpt-4o-mini"
            if stream:
                kw.update(stream=True, stream_options={"include_usage": True})
        else:
            kw.update(model="claude-3-5-haiku-latest", max_tokens=64)
            if stream:
                kw["stream"] = True
        return provider, stream, kw

    def call(self, consumer: str, i: int) -> int:
        provider, stream, kw = self._args(consumer, i)
        with am.consumer(consumer):
            if provider == "openai":
                r = self._client(provider, False).chat.completions.create(**kw)
                if not stream:
                    return int(r.usage.total_tokens)
                return _openai_stream_units(list(r))
            r = self._client(provider, False).messages.create(**kw)
            if not stream:
                return _anthropic_units(r.usage)
            return _anthropic_stream_units(list(r))

    async def acall(self, consumer: str, i: int) -> int:
        provider, stream, kw = self._args(consumer, i)
        async with am.consumer(consumer):
            if provider == "openai":
                r = await self._client(provider, True).chat.completions.create(**kw)
                if not stream:
                    return int(r.usage.total_tokens)
                return _openai_stream_units([c async for c in r])
            r = await self._client(provider, True).messages.create(**kw)
            if not stream:
                return _anthropic_units(r.usage)
            return _anthropic_stream_units([e async for e in r])


def _openai_stream_units(chunks: list[Any]) -> int:
    return sum(int(c.usage.total_tokens) for c in chunks if getattr(c, "usage", None))


def _anthropic_units(u: Any, output: int | None = None) -> int:
    ins = u.input_tokens + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0)
    return int(ins + (u.output_tokens if output is None else output))


def _anthropic_stream_units(events: list[Any]) -> int:
    start = next(e.message.usage for e in events if e.type == "message_start")
    output = [e.usage.output_tokens for e in events if e.type == "message_delta"][-1]
    return _anthropic_units(start, output)


def main() -> None:
    cfg: dict[str, Any] = json.loads(sys.argv[1])
    faulthandler.register(signal.SIGUSR1)  # a stuck cell: kill -USR1 <pid> dumps every stack
    mode = cfg.get("mode", "seq")
    consumers: list[str] = cfg["consumers"]
    calls = int(cfg.get("calls", 0))
    print_calls = bool(cfg.get("print_calls", False))
    exit_how = {"v": "normal"}

    def report_stats() -> None:  # registered before init: atexit runs it after the meter's hook
        emit({"stats": stats_dict(), "pid": os.getpid(), "exit": exit_how["v"]})

    atexit.register(report_stats)
    if mode == "idle":
        # The application's own SIGTERM handler; the meter's (opt-in) handler chains to it.
        def on_term(signum: int, frame: Any) -> None:
            exit_how["v"] = "sigterm"
            report_stats()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_term)

    options = {"instrument": cfg.get("providers", ["openai"]), **cfg.get("meter", {})}
    am.init(cfg["key"], api_id=cfg["api_id"], base_url=cfg["gateway"], **options)
    caller = Caller(cfg)

    def one(i: int) -> None:
        c = consumers[i % len(consumers)]
        units = caller.call(c, i)
        if print_calls:
            emit({"done": c, "units": units})

    if mode in ("seq", "idle"):
        pace = float(cfg.get("pace", 0))
        deadline = time.monotonic() + float(cfg.get("duration", 0))
        i = 0
        while i < calls or time.monotonic() < deadline:
            one(i)
            i += 1
            if pace:
                time.sleep(pace)
        for j in range(int(cfg.get("extra_log", 0))):  # a fast producer on top of the calls
            am.log("bulk", 1 + j % 3)
    elif mode == "forever":
        i = 0
        while True:
            one(i)
            i += 1
    elif mode == "concurrent":
        run_concurrent(cfg, caller, consumers)
    elif mode == "fork":
        run_fork(cfg, consumers, exit_how)

    if cfg.get("flush") is not None:
        emit({"flushed": am.flush(float(cfg["flush"]))})
    if mode == "idle":
        emit({"phase": "ready"})
        while True:
            time.sleep(1)


def run_concurrent(cfg: dict[str, Any], caller: Caller, consumers: list[str]) -> None:
    n_threads, per_thread, n_tasks = cfg["threads"], cfg["calls"], cfg["tasks"]
    barrier = threading.Barrier(n_threads + 1)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        barrier.wait()
        try:
            for k in range(per_thread):
                i = t * per_thread + k
                caller.call(consumers[i % len(consumers)], i)
        except BaseException as exc:
            errors.append(exc)

    async def tasks() -> None:
        barrier.wait()  # the loop's thread joins the start line, then every task runs at once
        await asyncio.gather(*(caller.acall(consumers[i % len(consumers)], i) for i in range(n_tasks)))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    asyncio.run(tasks())
    for th in threads:
        th.join()
    if errors:
        raise errors[0]


def run_fork(cfg: dict[str, Any], consumers: list[str], exit_how: dict[str, str]) -> None:
    # gunicorn --preload: the parent initialised the meter (and records usage of its own) before
    # forking; each worker makes calls with its own SDK client and exits normally (atexit runs).
    parent = Caller(cfg)
    for i in range(int(cfg.get("parent_calls", 0))):
        parent.call(consumers[i % len(consumers)], i)
    pids = []
    for w in range(int(cfg["workers"])):
        pid = os.fork()
        if pid == 0:
            exit_how["v"] = "worker"
            caller = Caller(cfg)
            for k in range(int(cfg["calls"])):
                i = w * 1000 + k
                caller.call(consumers[i % len(consumers)], i)
            sys.exit(0)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
    emit({"workers": codes})


if __name__ == "__main__":
    main()
