"""The fault matrix's harness: run the workload process, read what the servers saw, compare.

The accounting every cell checks: per consumer, units logged at the gateway minus the excess of
duplicated ``Idempotency-Key``s equals the usage the mock LLM server returned. Duplicates are
allowed only in cells where an ambiguous failure is possible, and there they must be accounted
for by ``stats().ambiguous_retries``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

KEY = "ac_secret_matrix_key_DO_NOT_LEAK"
API_ID = "api_matrix"
WORKLOAD = str(Path(__file__).with_name("workload.py"))
ROOT = str(Path(__file__).resolve().parents[2])

# Anthropic joins the workload where its provider module is there (it landed after openai).
PROVIDERS = ["openai"] + (
    ["anthropic"]
    if importlib.util.find_spec("anthropic") and importlib.util.find_spec("aerostack_meter.providers.anthropic")
    else []
)

# Fast retries so that every cell settles in seconds; the exit budget is generous because a
# loaded 2-core CI box is slow, and what is measured is whether everything arrives, not how fast.
FAST = {"flush_interval": 0.1, "backoff_base": 0.05, "max_backoff": 1.0, "exit_timeout": 10.0}


def config(gw: Any, llm: Any, **cfg: Any) -> dict[str, Any]:
    meter = {**FAST, **cfg.pop("meter", {})}
    base = {"key": KEY, "api_id": API_ID, "gateway": gw.url, "llm": llm.url,
            "consumers": ["usr_a", "usr_b", "usr_c"], "providers": ["openai"], "meter": meter}
    base.update(cfg)
    return base


def start(cfg: dict[str, Any]) -> subprocess.Popen[bytes]:
    return spawn([sys.executable, WORKLOAD, json.dumps(cfg)])


def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    """A child whose stdout is read by ``read_until`` and then ``finish``.

    The pipes are unbuffered on our side (``bufsize=0``: raw binary files). A buffered reader's
    ``readline()`` reads ahead up to 8 KiB, and ``communicate()`` reads the descriptor directly,
    so lines a loaded machine let pile up in the pipe were read ahead by ``read_until`` and never
    seen by ``finish``: a killed workload's "done" lines went missing. A raw ``readline()`` reads
    byte by byte and takes nothing past the line it returns."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": ROOT}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
                            env=env, cwd=ROOT)


@dataclass
class Run:
    returncode: int
    lines: list[dict[str, Any]]
    stderr: str

    @property
    def stats(self) -> list[dict[str, Any]]:
        return [line["stats"] for line in self.lines if "stats" in line]

    def total(self, name: str) -> int:
        return sum(int(s[name]) for s in self.stats)

    def dropped(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for s in self.stats:
            out.update(s["dropped"])
        return dict(out)


def parse(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def finish(proc: subprocess.Popen[bytes], timeout: float, lines: list[dict[str, Any]] | None = None) -> Run:
    """Wait for ``proc``; its lines are ``lines`` (what ``read_until`` took) and the rest of stdout."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"workload did not finish in {timeout}s; stderr:\n"
                             f"{err.decode(errors='replace')[-3000:]}") from None
    return Run(proc.returncode, (lines or []) + parse(out.decode()), err.decode(errors="replace"))


def run(cfg: dict[str, Any], timeout: float = 60) -> Run:
    return finish(start(cfg), timeout)


def read_until(stream: IO[bytes], predicate: Any, timeout: float) -> list[dict[str, Any]]:
    """Read JSON lines until ``predicate(lines)`` holds (``stream``: an unbuffered pipe from
    ``spawn``, so that what is not read here is left for ``finish``)."""
    deadline = time.monotonic() + timeout
    lines: list[dict[str, Any]] = []
    while not predicate(lines):
        assert time.monotonic() < deadline, f"timed out waiting; got {lines[-3:]}"
        raw = stream.readline()
        assert raw, f"the workload ended early; got {lines[-3:]}"
        lines.append(json.loads(raw))
    return lines


def expected_usage(llm: Any) -> dict[str, int]:
    """What the LLM server returned, per consumer, in the unit the meter bills ("tokens")."""
    return {c: int(v["total_tokens"]) for c, v in llm.usage()["by_consumer"].items()}


@dataclass
class Ledger:
    """The gateway's billing log, split into first deliveries and duplicate excess."""

    totals: dict[str, int]
    excess: dict[str, int]
    excess_rows: int
    rows: int
    keys_without_header: int = 0
    duplicate_keys: list[str] = field(default_factory=list)

    @property
    def net(self) -> dict[str, int]:
        return {c: u - self.excess.get(c, 0) for c, u in self.totals.items()}


def ledger(gw_client: Any, settle: float = 0.0) -> Ledger:
    """Read the log once it stopped growing (a timed-out attempt may still be committing)."""
    rows = gw_client.log()
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < settle:
        time.sleep(0.1)
        again = gw_client.log()
        if len(again) != len(rows):
            rows, quiet_since = again, time.monotonic()
    totals: Counter[str] = Counter()
    by_key: dict[str, list[dict[str, Any]]] = {}
    missing = 0
    for r in rows:
        totals[r["consumerId"]] += int(r["units"])
        if r["idempotencyKey"]:
            by_key.setdefault(r["idempotencyKey"], []).append(r)
        else:
            missing += 1
    excess: Counter[str] = Counter()
    excess_rows = 0
    dups = []
    for k, group in by_key.items():
        if len(group) > 1:
            dups.append(k)
            assert len({(g["consumerId"], g["units"]) for g in group}) == 1, group
            excess[group[0]["consumerId"]] += int(group[0]["units"]) * (len(group) - 1)
            excess_rows += len(group) - 1
    return Ledger(dict(totals), dict(excess), excess_rows, len(rows), missing, dups)


# -- the results table (docs/reliability.md); written when MATRIX_REPORT names a file ------------

RESULTS: list[dict[str, Any]] = []


def record(cell: str, expected: dict[str, int], book: Ledger, run_: Run | None, seconds: float,
           note: str = "") -> None:
    RESULTS.append({
        "cell": cell, "calls_units": sum(expected.values()), "gateway_units": sum(book.totals.values()),
        "duplicate_rows": book.excess_rows, "duplicate_units": sum(book.excess.values()),
        "ambiguous_retries": run_.total("ambiguous_retries") if run_ else None,
        "retries": run_.total("retries") if run_ else None,
        "exact": book.net == expected, "seconds": round(seconds, 1), "note": note,
    })


def write_report() -> None:
    path = os.environ.get("MATRIX_REPORT")
    if path and RESULTS:
        with open(path, "w") as f:
            json.dump(RESULTS, f, indent=1)
