"""What ``import aerostack_meter`` (and then ``init()``) costs a process with no SDK installed.

    python benchmarks/bench_import.py [--runs 12] [--no-callgrind] [--src DIR]

Each case runs in a fresh interpreter (``sys.executable -c ...``) whose first statement installs
an import hook that refuses the SDKs (openai, anthropic, google, boto3, botocore, mistralai), as
if none were installed; the package is byte-compiled first (as pip installs it: without
``__pycache__`` every import of our modules would compile their source). The children run in a
temporary directory with a temporary ``AEROSTACK_METER_STATE_DIR`` and no ``AEROSTACK_*``
variable of this process (so ``init()`` takes the default configuration: no API key, the local
ledger, the durable journal). ``--src DIR`` measures the package in ``DIR`` (another checkout's
``src``, put first on the children's ``sys.path``) instead of the installed one: a before/after
comparison on one machine at one load.

Cases: ``pass`` (the hook alone: the interpreter's own start), ``import aerostack_meter``, and
``import aerostack_meter`` then ``init()``. Printed for each:

- the statement's own wall time, measured inside the child (``time.perf_counter`` around it),
  and the child process's wall time measured by this script: the fastest of ``--runs`` runs,
  the cases interleaved run by run;
- the modules the case adds to ``pass`` (``sys.modules``), and which of them are not ours;
- with valgrind installed, the instructions of the whole child process (valgrind callgrind, all
  threads), and what the case adds to ``pass``: the figure that does not depend on the load.

Nothing is written: the figures go into docs/performance.md by hand ("Overhead attribution").
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _perfdoc import machine

BLOCKED = ("openai", "anthropic", "google", "boto3", "botocore", "mistralai")
HOOK = f"""\
import sys, time
class _NoSDK:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {BLOCKED!r}:
            raise ImportError(name)
sys.meta_path.insert(0, _NoSDK())
_before = set(sys.modules)
_t0 = time.perf_counter()
"""
TAIL = """
_t1 = time.perf_counter()
print("RESULT", _t1 - _t0, *sorted(set(sys.modules) - _before))  # imports nothing more
"""
CASES = {
    "pass": "pass",
    "import aerostack_meter": "import aerostack_meter",
    "import + init()": "import aerostack_meter\naerostack_meter.init()",
}


def _script(case: str) -> str:
    return HOOK + CASES[case] + TAIL


SRC: str | None = None  # --src


def _env(tmp: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AEROSTACK_") and k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    env["AEROSTACK_METER_STATE_DIR"] = os.path.join(tmp, "state")
    env["PYTHONHASHSEED"] = "0"
    if SRC is not None:
        env["PYTHONPATH"] = SRC
    return env


def _run(case: str, tmp: str) -> tuple[float, float, list[str]]:
    """(the statement's wall time, the process's wall time, the modules it added) of one run."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _script(case)], capture_output=True, text=True,
                         cwd=tmp, env=_env(tmp), timeout=120)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{case}: exit {out.returncode}\n{out.stderr[-2000:]}")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    _, seconds, *modules = line.split()
    return float(seconds), wall, modules


def _instructions(case: str, tmp: str) -> int:
    """Instructions of the whole child process (all threads), counted by callgrind."""
    out_file = os.path.join(tmp, "cg.out")
    proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
                           sys.executable, "-c", _script(case)],
                          capture_output=True, text=True, cwd=tmp, env=_env(tmp), timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"callgrind {case}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    total = 0
    with open(out_file) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    os.unlink(out_file)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=12, help="runs per case (the fastest is printed)")
    ap.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    ap.add_argument("--src", help="measure the package in this directory (e.g. another checkout's src)")
    args = ap.parse_args()

    global SRC
    if args.src:
        SRC = os.path.abspath(args.src)
        package = os.path.join(SRC, "aerostack_meter")
        if not os.path.isfile(os.path.join(package, "__init__.py")):
            ap.error(f"no aerostack_meter package in {SRC}")
    else:
        spec = importlib.util.find_spec("aerostack_meter")  # finds the package without importing it
        assert spec is not None and spec.submodule_search_locations
        package = next(iter(spec.submodule_search_locations))
    compileall.compile_dir(package, quiet=1)

    load0 = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="aerostack-import-")
    try:
        inner: dict[str, list[float]] = {c: [] for c in CASES}
        outer: dict[str, list[float]] = {c: [] for c in CASES}
        modules: dict[str, list[str]] = {}
        for _ in range(args.runs):
            for case in CASES:  # interleaved: a load change hits every case alike
                s, wall, mods = _run(case, tmp)
                inner[case].append(s)
                outer[case].append(wall)
                modules[case] = mods
        counts: dict[str, int] = {}
        if not args.no_callgrind and shutil.which("valgrind"):
            counts = {case: _instructions(case, tmp) for case in CASES}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load1 = os.getloadavg()

    print(f"Machine: {machine()}")
    print(f"Package: {package}")
    print(f"Load average (1/5/15 min) at start {' '.join(f'{x:.2f}' for x in load0)}, "
          f"at end {' '.join(f'{x:.2f}' for x in load1)}; fastest of {args.runs} runs")
    print()
    base = set(modules["pass"])
    proc0 = min(outer["pass"]) * 1000
    print(f"{'case':<24} {'statement ms':>12} {'process ms':>11} {'added ms':>9} "
          f"{'instructions':>14} {'added':>10} {'modules':>8}")
    for case in CASES:
        stmt = min(inner[case]) * 1000
        proc = min(outer[case]) * 1000
        instr = f"{counts[case] / 1e6:.1f} M" if case in counts else "-"
        added = (f"+{(counts[case] - counts['pass']) / 1e6:.1f} M"
                 if case in counts and case != "pass" else "")
        extra = len(set(modules[case]) - base) if case != "pass" else len(modules[case])
        print(f"{case:<24} {stmt:>12.1f} {proc:>11.1f} "
              f"{'' if case == 'pass' else f'+{proc - proc0:.1f}':>9} "
              f"{instr:>14} {added:>10} {extra:>8}")
    for case in CASES:
        if case == "pass":
            continue
        added_mods = sorted(set(modules[case]) - base)
        foreign = sorted({m.partition(".")[0] for m in added_mods if not m.startswith("aerostack_meter")})
        ours = [m for m in added_mods if m.startswith("aerostack_meter")]
        print(f"\n{case}: {len(ours)} modules of ours, {len(added_mods) - len(ours)} others, "
              f"from: {' '.join(foreign)}")


if __name__ == "__main__":
    main()
