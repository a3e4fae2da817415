"""Compaction of the journal while requests are unsettled: under a steady load (the reporter is
never idle) or through an outage, the journal grew without bound (it was only rotated when
everything in it was settled). Past ``spool_max_bytes`` it now starts a new file holding the
unsettled requests (``P`` records, with their delivery state) and what was not read yet; a death
afterwards replays each request once, from the new file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from aerostack_meter import Meter
from aerostack_meter._journal import adopt_dead, rotation_marks
from aerostack_meter._journal_format import (
    B_INFLIGHT,
    encode_batch,
    encode_event,
    encode_mark,
    key_blob,
)
from tests.standin import standin_server

KEY = "ac_secret_compaction_key"
SMALL = 1 << 16  # the least spool_max_bytes takes


def _journal_bytes(state: Path) -> int:
    total = 0
    for p in state.rglob("*.journal"):
        with contextlib.suppress(FileNotFoundError):  # deleted by a compaction meanwhile
            total += p.stat().st_size
    return total


def _watch(state: Path, stop: threading.Event, seen: list[int]) -> None:
    while not stop.is_set():
        seen.append(_journal_bytes(state))
        time.sleep(0.005)


@pytest.mark.parametrize("outage", [False, True], ids=["steady", "outage"])
def test_a_journal_never_all_settled_is_compacted_and_every_record_delivered(tmp_path: Path, outage: bool) -> None:
    # 300,000 records of ~55 bytes over a few seconds: 16 MiB in one file before the fix (the
    # reporter, stepping every 0.2 s, always finds the next records summing: never idle); now a
    # file holds at most about one step's records (~1 MiB here)
    n, names = 300_000, [f"usr_{i}" for i in range(5)]
    with standin_server() as gw:
        if outage:
            gw.respond(*([503] * 1_000_000))
        meter = Meter(KEY, api_id="api", base_url=gw.url, state_dir=str(tmp_path), flush_interval=0.2,
                      spool_max_bytes=SMALL, backoff_base=0.01, max_backoff=0.05)
        stop, seen, logged, over = threading.Event(), [0], [0], [0]
        watcher = threading.Thread(target=_watch, args=(tmp_path, stop, seen))
        watcher.start()

        def pending() -> None:  # never more than was logged (the carried requests are read)
            while not stop.is_set():
                p = meter.stats().pending
                over[0] = max(over[0], p - logged[0])
                time.sleep(0.01)

        counter = threading.Thread(target=pending)
        counter.start()
        try:
            for i in range(n):
                meter.log(names[i % 5], 3)
                logged[0] += 1
                if i % 100 == 0:
                    time.sleep(0.001)  # a steady load, not a burst between two steps
            deadline = time.monotonic() + 30
            while meter.stats().journal_compactions < 3 and time.monotonic() < deadline:
                time.sleep(0.01)  # the reporter reads the last of it
        finally:
            stop.set()
            watcher.join()
            counter.join()
        compactions = meter.stats().journal_compactions
        with gw.lock:
            gw.script.clear()  # the outage ends
        assert meter.flush(30)
        st = meter.stats()
        assert meter.shutdown(10)
    assert compactions >= 3
    assert max(seen) <= 4 << 20, max(seen)
    assert over[0] <= 1  # (the record being logged when pending was read)
    if outage:  # a failing key's sum goes on summing across compactions: a few requests per
        # key, however many compactions (one more per key per compaction before: ~1,000 here)
        assert len({r.headers["idempotency-key"] for r in gw.accepted()}) <= 4 * len(names)
    assert gw.units_by_consumer() == {c: 3 * n // 5 for c in names}
    assert (st.events_sent, st.events_dropped, st.ambiguous_retries) == (n, 0, 0)
    assert not list(tmp_path.rglob("*.journal"))


def test_a_process_killed_after_compactions_in_an_outage_is_replayed_once(tmp_path: Path) -> None:
    # every request the child formed failed (503: not delivered) and was carried from file to
    # file; what it left is adopted by the next start and delivered exactly once
    n = 60_000
    with standin_server() as gw:
        gw.respond(*([503] * 1_000_000))
        child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import time
            import aerostack_meter as am
            am.init({KEY!r}, api_id="api", base_url={gw.url!r}, state_dir={str(tmp_path)!r},
                    flush_interval=0.05, spool_max_bytes={SMALL}, backoff_base=0.01,
                    max_backoff=0.05, instrument=False)
            for i in range({n}):
                am.log("usr_" + str(i % 3), 2)
            while am.stats().journal_compactions < 3:
                time.sleep(0.01)
            time.sleep(0.2)  # retries keep failing meanwhile (F marks after the carried requests)
            print("logged", am.stats().journal_compactions, am.stats().events_sent, flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        line = child.stdout.readline().split()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        assert line[0] == "logged" and int(line[1]) >= 3 and int(line[2]) == 0
        assert not gw.units_by_consumer()
        with gw.lock:
            gw.script.clear()
        meter = Meter(KEY, api_id="api", base_url=gw.url, state_dir=str(tmp_path), flush_interval=0.05)
        deadline = time.monotonic() + 20
        while sum(gw.units_by_consumer().values()) < 2 * n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert meter.flush(10)
        st = meter.stats()
        assert meter.shutdown(10)
    assert gw.units_by_consumer() == {f"usr_{i}": 2 * n // 3 for i in range(3)}
    # (each open sum was carried as one record: the units are exact, the count of events not)
    assert 0 < st.events_adopted <= n
    assert not list(tmp_path.rglob("*.journal"))


def test_a_request_in_two_files_of_a_dead_process_is_adopted_once(tmp_path: Path) -> None:
    """A death between a compaction's new file and the old one's deletion leaves a request in
    both (a ``B`` in the old, a ``P`` in the new); its settlement, if any, is only in the new."""
    blob = key_blob("usr", "api", "units")
    old = encode_event(blob, 5, 0, 1.0) + encode_batch("B", blob, 5, 1, 0, "am-x-1", 0, 1 << 40) \
        + encode_event(blob, 7, 0, 1.0) + encode_batch("B", blob, 7, 1, 0, "am-x-2", 0, 1 << 40)
    new = encode_batch("P", blob, 5, 1, B_INFLIGHT, "am-x-1") \
        + encode_batch("P", blob, 7, 1, B_INFLIGHT, "am-x-2") + encode_mark("D", "am-x-2")
    (tmp_path / "deadbeef00.0.journal").write_bytes(old)
    (tmp_path / "deadbeef00.1.journal").write_bytes(new)
    (tmp_path / "deadbeef00.lock").touch()
    found = adopt_dead(str(tmp_path), None, None)
    assert [(r.idempotency_key, r.units) for r in found.requests] == [("am-x-1", 5)]
    assert found.events == []


@pytest.mark.parametrize("where", ["dup2", "unlink"], ids=["before_the_switch", "before_the_old_file_goes"])
def test_a_death_inside_a_compaction_bills_each_record_once(tmp_path: Path, where: str) -> None:
    """Killed in its third compaction, after the new segment is written (before the switch, or
    before the old segment is deleted), with calls still appending: both files are adopted, and
    every record is billed once (before the fix, the records copied from the old segment and
    the sums carried out of it were billed twice, under new keys: +600 to +1,800 units)."""
    counts = tmp_path / "counts"
    counts.write_bytes(b"\0" * 64)
    state = tmp_path / "state"
    with standin_server() as gw:
        child = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import mmap, os, signal, struct, sys, threading, time
            import aerostack_meter as am
            shared = mmap.mmap(os.open({str(counts)!r}, os.O_RDWR), 64)
            real, seen = os.{where}, [0]
            def dying(*args, **kwargs):  # the fault: death at this instant of the 3rd rotation
                if sys._getframe(1).f_code.co_name == "rotate":
                    seen[0] += 1
                    if seen[0] == 3:
                        os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kwargs)
            os.{where} = dying
            m = am.Meter({KEY!r}, api_id="api", base_url={gw.url!r}, state_dir={str(state)!r},
                         flush_interval=0.05, spool_max_bytes={SMALL})
            def work(t):
                i = 0
                while True:
                    m.log("usr_" + str((i + t) % 20), 1)
                    i += 1
                    struct.pack_into("<q", shared, t * 8, i)
                    if i % 100 == 0:
                        time.sleep(0.001)
            for t in range(4):
                threading.Thread(target=work, args=(t,), daemon=True).start()
            time.sleep(60)
        """)], timeout=90)
        assert child.returncode == -signal.SIGKILL
        logged = sum(int.from_bytes(counts.read_bytes()[t * 8:t * 8 + 8], "little") for t in range(4))
        meter = Meter(KEY, api_id="api", base_url=gw.url, state_dir=str(state), flush_interval=0.05)
        deadline = time.monotonic() + 20
        while meter.stats().events_adopted == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert meter.flush(20)
        assert meter.shutdown(10)
        billed: dict[str, int] = {}
        for r in gw.accepted():  # a request replayed under its own key is one debit at most
            billed.setdefault(r.headers["idempotency-key"], r.body["units"])
    # (each of the 4 threads may have had one more record on disk than it counted)
    assert logged <= sum(billed.values()) <= logged + 4, (logged, sum(billed.values()))
    assert not list(state.rglob("*.journal"))


def test_a_compaction_the_disk_refuses_changes_nothing_and_is_tried_again(tmp_path: Path) -> None:
    """Files may not grow past 4 KiB (``RLIMIT_FSIZE``: the new segment cannot be written) while
    calls go on and requests fail: the compaction fails with the journal as it was (before the
    fix the switch came first, and what was copied out of the old segment was lost, with
    ``flush()`` returning True); once files may grow again it succeeds, and every record is
    billed once."""
    state = tmp_path / "state"
    with standin_server() as gw:
        gw.respond(*([503] * 1_000_000))
        child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import resource, signal, sys, threading, time
            import aerostack_meter as am
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (EFBIG instead)
            m = am.Meter({KEY!r}, api_id="api", base_url={gw.url!r}, state_dir={str(state)!r},
                         flush_interval=0.05, spool_max_bytes={SMALL}, backoff_base=0.01, max_backoff=0.05)
            m.log("usr_0", 1)
            logged = [1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
            stop = threading.Event()
            def work():
                i = 0
                while not stop.is_set():
                    m.log("usr_" + str(i % 100), 1)  # (100 requests to carry: more than 4 KiB)
                    logged[0] += 1
                    i += 1
                    if i % 50 == 0:
                        time.sleep(0.001)
            t = threading.Thread(target=work)
            t.start()
            while m.stats().journal_errors < 3 or logged[0] < 3000:
                time.sleep(0.01)
            failed = m.stats().journal_compactions
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            print("limited", failed, flush=True)
            sys.stdin.readline()  # the outage ends
            time.sleep(0.3)
            stop.set()
            t.join()
            ok = m.flush(60)  # (~1,000 requests retried at once: the stand-in takes its time)
            st = m.stats()
            print("done", logged[0], int(ok), st.journal_compactions, st.pending, int(m.shutdown(10)), flush=True)
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdin is not None and child.stdout is not None
        limited = child.stdout.readline().split()
        with gw.lock:
            gw.script.clear()
        child.stdin.write("go\n")
        child.stdin.flush()
        done = child.stdout.readline().split()
        assert child.wait(60) == 0
        child.stdin.close()
        child.stdout.close()
    assert limited == ["limited", "0"]  # every compaction refused while files could not grow
    logged = int(done[1])
    assert done[2:] == ["1", done[3], "0", "1"] and int(done[3]) >= 1
    assert sum(gw.units_by_consumer().values()) == logged
    assert not list(state.rglob("*.journal"))


def _pair(token: str) -> tuple[bytes, bytes]:
    """A compacted pair of a process killed before its old segment was deleted: the old one
    (7 + 5 read and summing, 9 appended after the last read) and the new one replacing it (the
    sum carried, the 9 copied)."""
    blob = key_blob("usr", "api", "units")
    old = encode_event(blob, 7, 0, 1.0) + encode_event(blob, 5, 0, 1.0) + encode_event(blob, 9, 0, 1.0)
    first, last = rotation_marks(f"{token}.2.journal")
    new = first + encode_event(blob, 12, 0, 1.0) + encode_event(blob, 9, 0, 1.0) + last
    return old, new


@pytest.mark.parametrize("how", ["its_own", "moving_in"])
def test_a_compacted_pair_left_by_a_death_is_adopted_once(tmp_path: Path, how: str) -> None:
    """As the dead process's own segments, or as files a dead adopter was moving in (before the
    fix, moved files were each read alone: the pair billed twice)."""
    old, new = _pair("aaaa")
    suffix = ".adopting-bbbb" if how == "moving_in" else ""
    (tmp_path / f"aaaa.2.journal{suffix}").write_bytes(old)
    (tmp_path / f"aaaa.3.journal{suffix}").write_bytes(new)
    if how == "moving_in":  # the adopter died after renaming them, before copying them in
        (tmp_path / "bbbb.0.journal").write_bytes(b"")
        (tmp_path / "bbbb.lock").touch()
    else:
        (tmp_path / "aaaa.lock").touch()
    found = adopt_dead(str(tmp_path), None, None)
    assert sorted(e.units for e in found.events) == [9, 12]


def test_a_segment_a_death_left_half_written_is_skipped(tmp_path: Path) -> None:
    """Killed while the new segment was written (before the switch): it has its opening mark,
    not its closing one; the old segment is adopted as it is."""
    old, new = _pair("aaaa")
    (tmp_path / "aaaa.2.journal").write_bytes(old)
    (tmp_path / "aaaa.3.journal").write_bytes(new[:-10])
    (tmp_path / "aaaa.lock").touch()
    found = adopt_dead(str(tmp_path), None, None)
    assert sorted(e.units for e in found.events) == [5, 7, 9]
