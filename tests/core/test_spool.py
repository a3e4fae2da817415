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
        child.stdout.close()
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


def test_a_batch_adopted_while_in_flight_is_replayed_as_an_ambiguous_retry(tmp_path: Path) -> None:
    from aerostack_meter._events import UsageEvent
    from aerostack_meter._spool import Spool

    path = str(tmp_path / "spool.db")
    dead = Spool(path, 1 << 30)
    dead.append([UsageEvent("a", "api", "tokens", 5), UsageEvent("b", "api", "tokens", 6)])
    dead.claim(coalesce=True)
    sent, waiting = dead.due(time.time(), 10, set())
    dead.sending([sent])  # an attempt went out; the owner dies before the answer
    dead.close()
    with standin_server() as gw:
        m = make(gw.url, tmp_path / "spool.db")
        assert m.flush(5)
        st = m.stats()
        m.shutdown()
    assert gw.units_by_consumer() == {"a": 5, "b": 6}
    assert st.ambiguous_retries == 1 and st.retries == 1  # only the batch that was in flight
    keys = {r.body["consumerId"]: r.headers["idempotency-key"] for r in gw.accepted()}
    assert keys == {"a": sent.idempotency_key, "b": waiting.idempotency_key}


def test_a_spool_file_from_before_the_inflight_column_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE batches (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, consumer_id TEXT NOT NULL,
            api_id TEXT NOT NULL, metric TEXT NOT NULL, units INTEGER NOT NULL,
            n_events INTEGER NOT NULL, idempotency_key TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, ambiguous INTEGER NOT NULL DEFAULT 0,
            next_at REAL NOT NULL DEFAULT 0);
        INSERT INTO batches (owner, consumer_id, api_id, metric, units, n_events, idempotency_key)
            VALUES ('gone', 'old', 'api', 'tokens', 7, 1, 'am-old');
        CREATE TABLE owners (token TEXT PRIMARY KEY, pid INTEGER NOT NULL, started REAL NOT NULL);
        INSERT INTO owners VALUES ('gone', 1, 0);
    """)
    conn.close()
    with standin_server() as gw:
        m = make(gw.url, path)
        assert m.flush(5)
        m.shutdown()
    assert gw.units_by_consumer() == {"old": 7}
    assert rows(path) == 0
