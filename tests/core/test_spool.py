"""The durable spool: nothing lost across outages, exits and kill -9; nothing sent twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from aerostack_meter import Meter
from tests.standin import standin_server

KEY = "ac_secret_spool_key"


def make(url: str, spool: Path, **options: object) -> Meter:
    options.setdefault("flush_interval", 0.05)
    options.setdefault("backoff_base", 0.01)
    options.setdefault("max_backoff", 0.05)
    return Meter(KEY, api_id="api", base_url=url, spool_path=str(spool), **options)  # type: ignore[arg-type]


def rows(spool: Path) -> int:
    conn = sqlite3.connect(spool)
    try:
        return int(conn.execute("SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM batches)").fetchone()[0])
    finally:
        conn.close()


def test_spooled_events_are_delivered_and_removed(tmp_path: Path) -> None:
    with standin_server() as gw:
        m = make(gw.url, tmp_path / "spool.db")
        for i in range(100):
            m.log(f"c{i % 5}", 2)
        assert m.flush(5)
        assert m.stats().spooled == 0
        m.shutdown()
        assert gw.units_by_consumer() == {f"c{i}": 40 for i in range(5)}
        assert rows(tmp_path / "spool.db") == 0


def test_what_the_exit_budget_cannot_send_stays_and_is_replayed_with_the_same_keys(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    with standin_server() as gw:
        gw.respond(*([503] * 1000))
        m = make(gw.url, spool)
        m.log("a", 5)
        m.log("b", 6)
        time.sleep(0.5)  # batches formed and attempted
        assert m.shutdown(0.2) is False
        failed_keys = {r.headers["idempotency-key"] for r in gw.requests}
        assert len(failed_keys) == 2
        assert rows(spool) == 2
        gw.script.clear()
        m2 = make(gw.url, spool)  # the next start adopts and replays
        assert m2.flush(5)
        m2.shutdown()
        assert gw.units_by_consumer() == {"a": 5, "b": 6}
        assert {r.headers["idempotency-key"] for r in gw.accepted()} == failed_keys
        assert rows(spool) == 0


def test_kill_9_mid_run_then_restart_loses_nothing(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    with standin_server() as gw:
        gw.respond(*([503] * 50))  # keep a backlog while the process dies
        child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import aerostack_meter as am
            am.init({KEY!r}, api_id="api", base_url={gw.url!r}, spool_path={str(spool)!r},
                    flush_interval=0.05, backoff_base=0.01, max_backoff=0.05, instrument=False)
            for i in range(400):
                am.log("killed", 1)
            print("logged", flush=True)
            import time; time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "logged"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        m = make(gw.url, spool)
        assert m.flush(10)
        m.shutdown()
        assert gw.units_by_consumer() == {"killed": 400}
        assert rows(spool) == 0


def test_concurrent_processes_on_one_spool_never_send_twice(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    with standin_server() as gw:
        code = textwrap.dedent(f"""
            import sys, aerostack_meter as am
            am.init({KEY!r}, api_id="api", base_url={gw.url!r}, spool_path={str(spool)!r},
                    flush_interval=0.02, coalesce=False, instrument=False)
            for i in range(200):
                am.log(sys.argv[1], 1)
            assert am.flush(20)
        """)
        procs = [subprocess.Popen([sys.executable, "-c", code, f"p{i}"]) for i in range(3)]
        for p in procs:
            assert p.wait(60) == 0
        assert gw.units_by_consumer() == {"p0": 200, "p1": 200, "p2": 200}
        keys = [r.headers["idempotency-key"] for r in gw.accepted()]
        assert len(keys) == len(set(keys)) == 600


def test_spool_over_its_cap_counts_what_it_drops(tmp_path: Path) -> None:
    with standin_server() as gw:
        gw.respond(*([503] * 10_000))
        m = make(gw.url, tmp_path / "spool.db", spool_max_bytes=1)
        m.log("c", 1)
        assert m.stats().dropped.get("spool_full") == 1
        m.shutdown(0.1)
