"""Instructions and simulated cache and branch misses per streamed chunk, on the CPU-time
benchmarks' own clients and streams (so the two kinds of figure can be set side by side).

    python benchmarks/callgrind_stream_chunk.py [--only openai|gemini] [--no-sim] [--reps 1]

Runs itself under ``valgrind --tool=callgrind --cache-sim=yes --branch-sim=yes`` (collection inside
``functools.reduce`` only; the collector paused inside the blocks). Per chunk is the slope between
the short and the long stream of ``bench_openai_overhead.py`` (10 and 500 content chunks) and
``bench_gemini_overhead.py`` (10 and 300; ``--reps N`` reads N times as many streams per block: the
slope moves by up to ~1-2 k instructions per chunk between single runs, so compare runs, not one).
Variants: ``bare``; for OpenAI chat ``bare+usage`` (the
bare SDK whose caller asks for ``include_usage``: the server adds ``"usage": null`` to every chunk,
as it does for the meter's injected option); ``patched`` (after ``init()``).

Printed per chunk: instructions (Ir) and callgrind's usual cycle estimate, Ir + 10 x (L1 misses +
mispredicted branches) + 100 x last-level misses, and its ratio to Ir: how much slower than the
average instruction the added ones run in the simulation. Nothing is written.
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

HERE = Path(__file__).resolve().parent

REPS = {"small": 10, "large": 1}  # streams per block


def _inner(which: str, reps_factor: int) -> None:
    sys.path.insert(0, str(HERE))
    from _timing import init_durable

    import aerostack_meter as am

    init_durable(flush_interval=0.5)
    am.uninstrument()
    if which == "openai":
        import bench_openai_overhead as b

        def stream(n: int, usage: bool) -> Any:
            extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if usage else {}

            def run(c: Any) -> None:
                for _ in c.chat.completions.create(model="gpt-bench", messages=b.MESSAGES, stream=True,
                                                   extra_headers={"x-bench-chunks": str(n)}, **extra):
                    pass

            return run

        variants = {v: {n: stream(n, v == "bare+usage") for n in (b.SMALL, b.LARGE)}
                    for v in ("bare", "bare+usage", "patched")}
    else:
        import bench_gemini_overhead as b  # type: ignore[no-redef]

        variants = {v: {n: b.op_stream(n) for n in (b.SMALL, b.LARGE)} for v in ("bare", "patched")}
    client = b.make_client()
    for v, ops in variants.items():
        if v == "patched":
            am.instrument((which,))
        for n, op in ops.items():
            reps = REPS["small" if n == b.SMALL else "large"] * reps_factor
            for _ in range(2):
                op(client)
            gc.collect()
            gc.disable()
            print(f"BLOCK {v}|{n}|{reps}", flush=True)
            functools.reduce(lambda acc, _i, op=op: op(client), range(reps), None)
            gc.enable()
        am.uninstrument()
    assert am.flush(30)
    st = am.stats()
    am.shutdown()
    assert st.usage_missing == 0 and st.internal_errors == 0 and st.events_estimated == 0, st


def _totals(path: Path) -> dict[str, float]:
    for line in path.read_text().splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        if line.startswith("totals:"):
            return dict(zip(names, map(float, line.split()[1:]), strict=True))
    raise ValueError(f"no totals in {path}")


def _cest(d: dict[str, float]) -> float:
    g = d.get
    return (d["Ir"] + 10 * (g("I1mr", 0) + g("D1mr", 0) + g("D1mw", 0) + g("Bcm", 0) + g("Bim", 0))
            + 100 * (g("ILmr", 0) + g("DLmr", 0) + g("DLmw", 0)))


def run(which: str, sim: bool, reps: int = 1) -> None:
    out = os.path.join(tempfile.mkdtemp(prefix="aerostack-cg-chunk-"), "cg.out")
    cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=functools_reduce",
           "--dump-after=functools_reduce", f"--callgrind-out-file={out}"]
    if sim:
        cmd += ["--cache-sim=yes", "--branch-sim=yes"]
    proc = subprocess.run([*cmd, sys.executable, __file__, "--inner", which, str(reps)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
    blocks = [ln.split(" ", 1)[1].split("|") for ln in proc.stdout.splitlines() if ln.startswith("BLOCK ")]
    dumps = sorted(Path(out).parent.glob("cg.out.*"), key=lambda p: int(re.sub(r".*\.", "", p.name)))
    if proc.returncode != 0 or not blocks or len(dumps) < len(blocks):
        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
        raise SystemExit(proc.returncode or 1)
    per: dict[str, dict[int, dict[str, float]]] = {}
    for (variant, n, reps), path in zip(blocks, dumps[-len(blocks):], strict=True):
        per.setdefault(variant, {})[int(n)] = {k: x / int(reps) for k, x in _totals(path).items()}

    def slope(v: str) -> dict[str, float]:
        small, large = sorted(per[v])
        return {k: (per[v][large][k] - per[v][small][k]) / (large - small) for k in per[v][large]}

    s = {v: slope(v) for v in per}
    print(f"{which}: per chunk (callgrind, the slope between {min(per['bare'])} and {max(per['bare'])} chunks)")
    print("| | instructions | estimated cycles | per instruction |")
    print("|---|---:|---:|---:|")
    rows = [("bare SDK", s["bare"])]
    if "bare+usage" in s:
        rows.append(("include_usage: the SDK's own (bare+usage - bare)",
                     {k: s["bare+usage"][k] - s["bare"][k] for k in s["bare"]}))
        rows.append(("the meter's own (patched - bare+usage)",
                     {k: s["patched"][k] - s["bare+usage"][k] for k in s["bare"]}))
    rows.append(("patched - bare", {k: s["patched"][k] - s["bare"][k] for k in s["bare"]}))
    for label, d in rows:
        print(f"| {label} | {d['Ir']:,.0f} | {_cest(d):,.0f} | {_cest(d) / d['Ir']:.2f} |")
    print()


def main() -> None:
    if "--inner" in sys.argv:
        i = sys.argv.index("--inner")
        _inner(sys.argv[i + 1], int(sys.argv[i + 2]))
        return
    import argparse

    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--only", choices=("openai", "gemini"))
    ap.add_argument("--no-sim", action="store_true", help="instructions only (faster)")
    ap.add_argument("--reps", type=int, default=1, help="streams per block, times 10 (short) and 1 (long)")
    args = ap.parse_args()
    for which in ("openai", "gemini"):
        if args.only in (None, which):
            run(which, not args.no_sim, args.reps)


if __name__ == "__main__":
    main()
