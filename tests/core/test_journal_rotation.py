"""Rotation of the journal while callers keep appending: callers append without a lock, so a record
can land in the old segment after the reporter found it all read and before the switch. It is
carried into the new segment at once: read by the next step, covered by a ``flush()`` that began
before it was read, and never deleted with the old segment when the process shuts down."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from aerostack_meter import Meter
from aerostack_meter._journal import Journal
from aerostack_meter._journal_format import Event, encode_event, key_blob
from aerostack_meter._stats import Counters
from aerostack_meter._store import JournalStore
from tests.standin import standin_server


def _event(consumer: str, units: int) -> bytes:
    return encode_event(key_blob(consumer, "api", "units"), units, 0, 1.0)


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped", "unmapped"])
def test_a_record_appended_after_the_last_read_is_carried_into_the_new_segment(tmp_path: Path, mapped: bool) -> None:
    journal = Journal(str(tmp_path), mapped=mapped)
    try:
        journal.append(_event("read", 1))
        assert [r.units for r in journal.read_new()[0]] == [1]  # type: ignore[union-attr]
        journal.append(_event("late", 2))  # after the read, before the switch
        journal.rotate()
        journal.append(_event("new", 3))
        records, bad = journal.read_new()  # at once
        assert bad == 0
        assert sorted((r.consumer_id, r.units) for r in records if isinstance(r, Event)) == [("late", 2), ("new", 3)]
        assert journal.read_new() == ([], 0)
        # in one file only (a process that died now would be adopted with each record once)
        assert [p.name for p in tmp_path.glob("*.journal")] == [Path(journal.path).name]
    finally:
        journal.close(delete=True)


def test_a_mark_taken_before_a_rotation_waits_for_the_records_carried_over(tmp_path: Path) -> None:
    store = JournalStore(str(tmp_path), 1 << 30, Counters())
    try:
        store.put("read", "api", "units", 1, 0, 1.0)
        assert len(store.read()) == 1
        store.put("late", "api", "units", 2, 0, 1.0)
        mark = store.mark()  # flush() of a caller whose record is the late one
        store.journal.rotate()
        assert not store.reached(mark)
        assert [r.consumer_id for r in store.read() if isinstance(r, Event)] == ["late"]
        assert store.reached(mark)
    finally:
        store.close(settled=False)


def test_tight_loops_with_flushes_between_them_deliver_every_record(tmp_path: Path) -> None:
    # The reporter rotates the journal (past 1 MiB, everything settled) in the step that answers a
    # flush(), while the caller is already appending its next loop: before the fix, 20-160 records
    # per rotation waited a second for retire_old (flush() returned True without them), and a
    # shutdown within that second deleted them with the old segment.
    rounds, per_round = 6, 20_000
    with standin_server() as gw:
        meter = Meter("ac_secret_rotation_key", api_id="api_rot", base_url=gw.url,
                      state_dir=str(tmp_path), flush_interval=60)
        names = [f"usr_{i}" for i in range(4)]
        for r in range(1, rounds + 1):
            for i in range(per_round):
                meter.log(names[i % 4], 7)
            assert meter.flush(30)
            st = meter.stats()
            assert (st.events_sent, st.units_sent["units"]) == (r * per_round, 7 * r * per_round)
        assert meter.shutdown(10)
        assert sum(gw.units_by_consumer().values()) == 7 * rounds * per_round
    assert not [p for p in Path(tmp_path).rglob("*.journal")]


def test_a_mark_taken_while_the_journal_rotates_is_reached(tmp_path: Path) -> None:
    # flush() takes its mark on the caller's thread while the reporter may be rotating: a mark
    # pairing the new segment's number with the old segment's end (or a size read between the two
    # files) is never reached, and flush() / shutdown() wait for their whole timeout.
    store = JournalStore(str(tmp_path), 1 << 30, Counters())
    journal = store.journal
    done = threading.Event()

    def reporter() -> None:
        try:
            for _ in range(100):
                for i in range(200):
                    store.put(f"usr_{i % 4}", "api", "units", 1, 0, 1.0)
                store.read()
                journal.rotate()
        finally:
            done.set()

    marks = []
    thread = threading.Thread(target=reporter)
    thread.start()
    try:
        while not done.is_set():
            marks.append(store.mark())
            time.sleep(0)  # the reporter runs; its system calls inside rotate() hand the GIL back
    finally:
        thread.join()
    store.read()
    try:
        assert len(marks) > 50
        assert [m for m in marks if not store.reached(m)] == []
    finally:
        store.close(settled=True)


def test_a_closed_journal_still_counts_and_keeps_a_late_record(tmp_path: Path) -> None:
    # Kept (not everything settled): a record appended after the close lands in the file and is
    # counted as unread (stats().pending reads it through the write descriptor). Deleted (all
    # settled): a late record starts a new journal of ours, adoptable once we die, never a write
    # into a deleted file.
    (tmp_path / "kept").mkdir()
    (tmp_path / "gone").mkdir()
    kept = Journal(str(tmp_path / "kept"))
    kept.append(_event("unread", 1))
    kept.close(delete=False)
    kept.append(_event("late", 2))
    data, pos = kept.unread()
    assert (pos, len(data)) == (0, len(_event("unread", 1)) + len(_event("late", 2)))

    gone_dir = tmp_path / "gone"
    gone = Journal(str(gone_dir))
    gone.append(_event("read", 1))
    assert len(gone.read_new()[0]) == 1
    old = gone.path
    gone.close(delete=True)
    assert not Path(old).exists()
    gone.append(_event("late", 3))
    assert not gone.closed and Path(gone.path).exists() and gone.path != old
    assert [(r.consumer_id, r.units) for r in gone.read_new()[0] if isinstance(r, Event)] == [("late", 3)]
    gone.close(delete=True)
