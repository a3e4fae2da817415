"""Instructions of the parts of a metered chunk's path, on the SDKs' own parsed chunks, with no SDK
work in the count: what ``callgrind_stream_chunk.py``'s slope (which moves by ~0.5-2 k between runs)
cannot split, deterministic to a few instructions.

    python benchmarks/callgrind_chunk_parts.py

Runs itself under ``valgrind --tool=callgrind`` (collection inside ``functools.reduce`` only; the
collector paused). The chunks are read once from the CPU benchmarks' own streams (OpenAI chat with
``include_usage``, its usage-only chunk dropped; Gemini), then each block loops over them:

* ``a model's attribute read``   - one field of the SDK's pydantic model (the class has
  ``__getattr__``, so CPython 3.11 does not specialize the read);
* ``a plain object's attribute read`` - the same read on a plain object, for scale;
* ``the model's __dict__``        - reading the instance dictionary (then a key costs a subscript);
* ``the reducer``                 - the provider's stream reducer's ``observe``, called per chunk;
* ``generator, no-op observe``    - the meter's per-chunk layer (``_streams._observed``) with an
  ``observe`` that does nothing;
* ``generator + reducer``         - the meter's per-chunk path without the SDK.

Each is printed per chunk, less the bare loop. Nothing is written.
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


class _Call:  # what _observed's end of the stream touches; nothing is billed here
    def end_stream(self, reducer: Any, complete: bool) -> None:
        pass


def _chunks(which: str) -> tuple[list[Any], Callable[[], Any], str]:
    sys.path.insert(0, str(HERE))
    if which == "openai":
        import bench_openai_overhead as b

        from aerostack_meter.providers._openai_endpoints import _INJECTED, ChatReducer

        c = b.make_client()
        got = list(c.chat.completions.create(model="gpt-bench", messages=b.MESSAGES, stream=True,
                                             stream_options={"include_usage": True},
                                             extra_headers={"x-bench-chunks": str(b.LARGE)}))
        return got[:-1], lambda: ChatReducer("openai", {"model": "gpt-bench"}, _INJECTED), "choices"
    import bench_gemini_overhead as g
    from google.genai import types

    from aerostack_meter.providers.gemini import GeminiReducer

    config = types.GenerateContentConfig(http_options=types.HttpOptions(headers={"x-bench-chunks": str(g.LARGE)}))
    client = g.make_client()  # kept while the stream is read (a dropped client closes its transport)
    got = list(client.models.generate_content_stream(model=g.MODEL, contents="hi", config=config))
    return got, lambda: GeminiReducer("gemini", {"model": g.MODEL}), "usage_metadata"


def _inner(which: str) -> None:
    from aerostack_meter import _streams

    chunks, reducer, field = _chunks(which)

    class Plain:
        pass

    plain = []
    for _ in chunks:
        p = Plain()
        setattr(p, field, None)
        plain.append(p)
    ns: dict[str, Any] = {}
    exec(f"def read(chunks):\n    for ch in chunks:\n        ch.{field}\n", ns)  # the field named as code
    read = ns["read"]

    def observer(observe: Callable[[Any], bool]) -> Any:
        obs = _streams._Observer.__new__(_streams._Observer)
        obs.call, obs.reducer, obs.observe, obs.failures, obs.key = _Call(), None, observe, 0, 0
        return obs

    def loop() -> None:
        for _ in chunks:
            pass

    def model_read() -> None:
        read(chunks)

    def plain_read() -> None:
        read(plain)

    def dict_read() -> None:
        for ch in chunks:
            ch.__dict__  # noqa: B018

    def reducer_alone() -> None:
        observe = reducer().observe
        for ch in chunks:
            observe(ch)

    def generator_noop() -> None:
        for _ in _streams._observed(observer(lambda item: False), iter(chunks)):
            pass

    def generator_reducer() -> None:
        for _ in _streams._observed(observer(reducer().observe), iter(chunks)):
            pass

    blocks = {"loop": loop, "a model's attribute read": model_read,
              "a plain object's attribute read": plain_read, "the model's __dict__": dict_read,
              "the reducer": reducer_alone, "generator, no-op observe": generator_noop,
              "generator + reducer": generator_reducer}
    for name, fn in blocks.items():
        for _ in range(3):
            fn()
        gc.disable()
        print(f"BLOCK {name}|{len(chunks)}", flush=True)
        functools.reduce(lambda acc, _i, fn=fn: fn(), range(1), None)
        gc.enable()


def run(which: str) -> None:
    out = os.path.join(tempfile.mkdtemp(prefix="aerostack-cg-parts-"), "cg.out")
    cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=functools_reduce",
           "--dump-after=functools_reduce", f"--callgrind-out-file={out}",
           sys.executable, __file__, "--inner", which]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    blocks = [ln.split(" ", 1)[1].split("|") for ln in proc.stdout.splitlines() if ln.startswith("BLOCK ")]
    dumps = sorted(Path(out).parent.glob("cg.out.*"), key=lambda p: int(re.sub(r".*\.", "", p.name)))
    if proc.returncode != 0 or not blocks or len(dumps) < len(blocks):
        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
        raise SystemExit(proc.returncode or 1)
    per: dict[str, float] = {}
    for (name, n), path in zip(blocks, dumps[-len(blocks):], strict=True):
        for line in path.read_text().splitlines():
            if line.startswith("totals:"):
                per[name] = int(line.split()[1]) / int(n)
    print(f"{which}: instructions per chunk, less the bare loop ({blocks[0][1]} chunks)")
    print("| part | instructions |")
    print("|---|---:|")
    for name, x in per.items():
        if name != "loop":
            print(f"| {name} | {x - per['loop']:,.0f} |")
    print()


def main() -> None:
    if "--inner" in sys.argv:
        _inner(sys.argv[sys.argv.index("--inner") + 1])
        return
    import argparse

    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--only", choices=("openai", "gemini"))
    args = ap.parse_args()
    for which in ("openai", "gemini"):
        if args.only in (None, which):
            run(which)


if __name__ == "__main__":
    main()
