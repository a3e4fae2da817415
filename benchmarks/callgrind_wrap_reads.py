"""Instructions per attribute read through a ``wrap()`` proxy, against the same read on the bare
client, counted by valgrind's callgrind (robust to a loaded machine).

    python benchmarks/callgrind_wrap_reads.py [--reads 2000]

Runs ONE process under ``valgrind --tool=callgrind`` with collection on only inside
``functools.reduce`` and a profile dump after each: each row is one ``reduce`` over ``--reads``
reads (after 50 warm-up reads), minus an empty row (the loop's own cost). The reads are the ones a
metered call makes before its request: the resource and method a user writes
(``wrapped.messages.create``), and the attributes the SDK's own methods read when ``wrap()`` runs
them with the proxy as ``self`` (Gemini's ``self._api_client``). The clients are built offline (no
request is sent). Printed: instructions per read, bare and through ``wrap()``. Nothing is written.
"""

from __future__ import annotations

import argparse
import functools
import gc
import glob
import os
import re
import subprocess
import sys
import tempfile
from typing import Any


def _rows() -> list[tuple[str, Any, Any]]:
    """(read, on the bare client, through wrap()): each a function of no arguments."""
    import anthropic
    import openai
    from google import genai

    import aerostack_meter as am

    am.init(api_id="api_bench", default_consumer_id="bench", state_dir=tempfile.mkdtemp(prefix="aerostack-cg-"))
    am.uninstrument()
    a = anthropic.Anthropic(api_key="x", base_url="http://mock.invalid")
    o = openai.OpenAI(api_key="x", base_url="http://mock.invalid/v1")
    g = genai.Client(api_key="x")
    wa, wo, wg = am.wrap(a), am.wrap(o), am.wrap(g)
    gm, wgm = g.models, wg.models  # the proxy Gemini's generate_content runs on as self
    return [
        ("anthropic: client.messages", lambda: a.messages, lambda: wa.messages),
        ("anthropic: client.messages.create", lambda: a.messages.create, lambda: wa.messages.create),
        ("openai: client.chat.completions.create", lambda: o.chat.completions.create,
         lambda: wo.chat.completions.create),
        ("openai: client.responses.create", lambda: o.responses.create, lambda: wo.responses.create),
        ("openai: client.max_retries (not listed)", lambda: o.max_retries, lambda: wo.max_retries),
        ("gemini: client.aio.models.generate_content", lambda: g.aio.models.generate_content,
         lambda: wg.aio.models.generate_content),
        ("gemini: models._api_client (SDK method, self)", lambda: gm._api_client, lambda: wgm._api_client),
        ("gemini: models._generate_content (SDK method, self)", lambda: gm._generate_content,
         lambda: wgm._generate_content),
    ]


def _inner(reads: int) -> None:
    rows = _rows()
    blocks = [("empty", lambda: None)] + [(f"{label}|{variant}", fn) for label, bare, wrapped in rows
                                          for variant, fn in (("bare", bare), ("wrap()", wrapped))]
    for label, fn in blocks:
        for _ in range(50):
            fn()
        print(f"BLOCK {label}", flush=True)
        gc.disable()
        functools.reduce(lambda acc, _i, fn=fn: fn(), range(reads), None)
        gc.enable()


def _total(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise ValueError(f"no totals in {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        _inner(args.reads)
        return
    out = os.path.join(tempfile.mkdtemp(prefix="aerostack-cg-out-"), "cg.out")
    cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=functools_reduce",
           "--dump-after=functools_reduce", f"--callgrind-out-file={out}",
           sys.executable, __file__, "--inner", "--reads", str(args.reads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    blocks = [ln.split(" ", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("BLOCK ")]
    dumps = sorted(glob.glob(out + ".*"), key=lambda p: int(re.sub(r".*\.", "", p)))
    dumps = [d for d in dumps if _total(d) > 0][-len(blocks):]
    if proc.returncode != 0 or not blocks or len(dumps) != len(blocks):
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        raise SystemExit(proc.returncode or 1)
    per = {b: _total(d) / args.reads for b, d in zip(blocks, dumps, strict=True)}
    empty = per.pop("empty")
    print(f"callgrind instructions per read ({args.reads} reads per row, the loop's own {empty:,.0f} taken off)\n")
    print("| read | bare | through wrap() |")
    print("|---|---:|---:|")
    for label in dict.fromkeys(b.split("|")[0] for b in per):
        print(f"| {label} | {per[label + '|bare'] - empty:,.0f} | {per[label + '|wrap()'] - empty:,.0f} |")


if __name__ == "__main__":
    main()
