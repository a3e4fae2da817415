"""Instructions of a metered stream's own setup and lifecycle, without the SDK around it.

    python benchmarks/callgrind_stream_setup.py

Runs itself under ``valgrind --tool=callgrind`` (collection inside ``functools.reduce`` only, as
``callgrind_overhead.py`` does) and prints instructions per stream for two blocks of 1000 streams
of OpenAI chat's endpoint over a plain iterator of three parsed ``ChatCompletionChunk`` s:

* ``setup``: a :class:`Call`, the endpoint's reducer and ``proxy_stream`` (what runs between the
  SDK returning its stream and the user asking for the first chunk; the streams are read after
  the block);
* ``lifecycle``: the same, then the three chunks read and the stream ended (the usage is read; the
  call records nothing: recording is the per-call figure).

The collector is paused inside the blocks. Nothing is written.
"""

from __future__ import annotations

import functools
import gc
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

N = 1000


def _inner() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _timing import init_durable
    from openai.types.chat import ChatCompletionChunk

    import aerostack_meter as am
    from aerostack_meter._call import Call
    from aerostack_meter._streams import proxy_stream
    from aerostack_meter.providers._openai_endpoints import _INJECTED
    from aerostack_meter.providers.openai import CHAT_CREATE

    meter = init_durable(flush_interval=0.5)
    am.uninstrument()
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-bench"}
    chunks = [ChatCompletionChunk.construct(**base, choices=[{"index": 0, "delta": {"content": " w"}}])
              for _ in range(2)]
    chunks.append(ChatCompletionChunk.construct(**base, choices=[], usage={
        "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}))
    kwargs = {"model": "gpt-bench", "messages": []}

    class Quiet(Call):
        __slots__ = ()

        def end(self, usage: Any, model: str | None = None, reason: str = "no_usage") -> None:
            self.done = True

    def setup(acc: list[Any], _i: int) -> list[Any]:
        call = Quiet(meter, None, CHAT_CREATE, kwargs)  # type: ignore[arg-type]
        acc.append(proxy_stream(iter(chunks), call, CHAT_CREATE.reducer(kwargs, _INJECTED)))
        return acc

    def lifecycle(acc: None, _i: int) -> None:
        call = Quiet(meter, None, CHAT_CREATE, kwargs)  # type: ignore[arg-type]
        for _ in proxy_stream(iter(chunks), call, CHAT_CREATE.reducer(kwargs, _INJECTED)):
            pass

    for _ in range(20):  # warm up (the first stream imports the SDK's types)
        for _c in setup([], 0)[0]:
            pass
        lifecycle(None, 0)
    gc.collect()
    gc.disable()
    print("BLOCK setup", flush=True)
    opened = functools.reduce(setup, range(N), [])
    gc.enable()
    for s in opened:
        for _ in s:
            pass
    gc.collect()
    gc.disable()
    print("BLOCK lifecycle", flush=True)
    functools.reduce(lifecycle, range(N), None)
    gc.enable()
    am.shutdown()


def main() -> None:
    if "--inner" in sys.argv:
        _inner()
        return
    out = os.path.join(tempfile.mkdtemp(prefix="aerostack-cg-setup-"), "cg.out")
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--collect-atstart=no",
                           "--toggle-collect=functools_reduce", "--dump-after=functools_reduce",
                           f"--callgrind-out-file={out}", sys.executable, __file__, "--inner"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    blocks = [ln.split(" ", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("BLOCK ")]
    dumps = sorted(Path(out).parent.glob("cg.out.*"), key=lambda p: int(re.sub(r".*\.", "", p.name)))
    totals = []
    for d in dumps:
        for line in d.read_text().splitlines():
            if line.startswith("totals:"):
                totals.append(int(line.split()[1]))
                break
    if proc.returncode != 0 or len(totals) < len(blocks) or not blocks:
        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
        raise SystemExit(proc.returncode or 1)
    for name, total in zip(blocks, totals[-len(blocks):], strict=True):
        print(f"{name}: {total / N:,.0f} instructions per stream")


if __name__ == "__main__":
    main()
