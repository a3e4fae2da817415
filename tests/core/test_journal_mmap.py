"""The journal written through a shared file mapping: what a killed process copied into it is on
disk, the pre-allocated zero tail is the end of the data (not damage), the mapping grows past its
pre-allocated end, a forked child never writes into its parent's mapping, and a mapping that cannot
grow falls back to ``os.write`` without a gap."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from aerostack_meter import Meter
from aerostack_meter._journal import MAPPED, Journal
from aerostack_meter._journal_format import Event, encode_event, key_blob, parse
from aerostack_meter._paths import destination_dir
from aerostack_meter._secret import Secret
from tests.standin import standin_server

KEY = "ac_secret_mmap_key"
pytestmark = pytest.mark.skipif(not MAPPED, reason="the journal is mapped only where posix_fallocate exists")


def _event(consumer: str, units: int) -> bytes:
    return encode_event(key_blob(consumer, "api", "units"), units, 0, 1.0)


def _events(journal: Journal) -> list[Event]:
    records, bad = journal.read_new()
    assert bad == 0
    return [r for r in records if isinstance(r, Event)]


def test_a_process_killed_right_after_recording_is_adopted_and_delivered_exactly_once(tmp_path: Path) -> None:
    with standin_server() as gw:
        child = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import os, signal, aerostack_meter as am
            am.init({KEY!r}, api_id="api", base_url={gw.url!r}, state_dir={str(tmp_path)!r},
                    flush_interval=30, instrument=False)
            for i in range(500):
                am.log(f"k{{i % 7}}", i + 1)
            os.kill(os.getpid(), signal.SIGKILL)  # no exit handler, no flush, no close
        """)], timeout=60)
        assert child.returncode == -9
        d = Path(destination_dir(str(tmp_path), gw.url, Secret(KEY).fingerprint()))
        [journal] = d.glob("*.journal")
        data = journal.read_bytes()
        parsed = parse(data, final=True)
        assert parsed.bad_bytes == 0 and parsed.zero_tail > 0  # a pre-allocated file, read to its data
        assert sum(r.units for r in parsed.records if isinstance(r, Event)) == 500 * 501 // 2
        m = Meter(KEY, api_id="api", base_url=gw.url, state_dir=str(tmp_path), flush_interval=0.05)
        assert m.flush(10)
        st = m.stats()
        m.shutdown()
    assert sum(gw.units_by_consumer().values()) == 500 * 501 // 2
    assert len({r.headers["idempotency-key"] for r in gw.accepted()}) == len(gw.accepted())
    assert st.events_adopted == 500 and st.state_files_quarantined == 0
    assert list(d.glob("*.corrupt-*")) == [] and list(d.glob("*.journal")) == []


def test_a_zero_tail_is_the_end_and_a_torn_record_before_it_is_still_skipped() -> None:
    good = [_event("a", 1), _event("b", 2)]
    clean = parse(b"".join(good) + bytes(4096), final=True)
    assert [r.units for r in clean.records] == [1, 2]  # type: ignore[union-attr]
    assert clean.bad_bytes == 0 and clean.zero_tail == 4096 and clean.consumed == len(b"".join(good)) + 4096
    torn = _event("c", 3)[:-5]  # a copy the kill cut short: the rest of the record is zeros
    damaged = parse(b"".join(good) + torn + bytes(4096), final=True)
    assert [r.units for r in damaged.records] == [1, 2]  # type: ignore[union-attr]
    assert 0 < damaged.bad_bytes <= len(torn)
    live = parse(b"".join(good) + bytes(64))  # a live reader stops at the zeros, consumes nothing of them
    assert live.consumed == len(b"".join(good)) and live.bad_bytes == 0


def test_the_mapping_grows_past_its_preallocated_end_and_a_clean_close_leaves_an_exact_file(
        tmp_path: Path) -> None:
    j = Journal(str(tmp_path))
    first = os.path.getsize(j.path)
    assert first > 0 and j.size() == 0  # pre-allocated; no data yet
    per_thread, threads = 1500, 8
    rec = _event("x" * 60, 1)

    def write(n: int) -> None:
        for _ in range(n):
            j.append(rec)

    workers = [threading.Thread(target=write, args=(per_thread,)) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    big = b"".join(_event(f"adopted{i}", 2) for i in range(20000))  # one append bigger than a step
    j.append(big)
    total = per_thread * threads * len(rec) + len(big)
    assert total > 2 * first and j.size() == total
    assert os.path.getsize(j.path) >= total
    events = _events(j)
    assert len(events) == per_thread * threads + 20000
    assert sum(e.units for e in events) == per_thread * threads + 40000
    path = j.path
    j.close(delete=False)
    assert os.path.getsize(path) == total  # cut to its data
    parsed = parse(Path(path).read_bytes(), final=True)
    assert parsed.bad_bytes == 0 and parsed.zero_tail == 0 and len(parsed.records) == len(events)


def test_rotation_starts_a_new_mapped_segment(tmp_path: Path) -> None:
    j = Journal(str(tmp_path))
    j.append(_event("a", 1))
    assert [e.units for e in _events(j)] == [1]
    old = j.path
    j.rotate()
    j.append(_event("b", 2))
    assert j.path != old and j.size() == len(_event("b", 2))
    assert [e.units for e in _events(j)] == [2]
    assert not os.path.exists(old)  # deleted at once: nothing of ours lands in it after the switch
    j.close(delete=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_writes_into_its_own_journal_never_its_parents_mapping(tmp_path: Path) -> None:
    j = Journal(str(tmp_path))
    j.append(_event("parent-before", 1))
    parent_path = j.path
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            j.after_fork()
            for _ in range(50):
                j.append(_event("child", 10))
            os.write(w, j.path.encode())
            code = 0
        finally:
            os._exit(code)  # dies without closing: its file keeps its zero tail
    os.close(w)
    with os.fdopen(r, "rb") as f:
        child_path = f.read().decode()
    assert os.waitpid(pid, 0)[1] == 0
    j.append(_event("parent-after", 2))  # at the offset the child would have taken in our mapping
    assert child_path != parent_path
    assert [(e.consumer_id, e.units) for e in _events(j)] == [("parent-before", 1), ("parent-after", 2)]
    child = parse(Path(child_path).read_bytes(), final=True)
    assert child.bad_bytes == 0 and child.zero_tail > 0
    assert [(e.consumer_id, e.units) for e in child.records] == [("child", 10)] * 50  # type: ignore[union-attr]
    j.close(delete=True)


def test_a_mapping_that_cannot_grow_falls_back_to_write_without_a_gap(tmp_path: Path) -> None:
    # A file-size limit makes growing the pre-allocation past 256 KiB fail (EFBIG).
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import resource, signal
        from aerostack_meter._journal import Journal
        from aerostack_meter._journal_format import encode_event, key_blob
        rec = encode_event(key_blob("c", "api", "units"), 1, 0, 1.0)
        limit = ((1 << 18) // len(rec) + 1000) * len(rec)  # whole records: no short last write
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        j = Journal({str(tmp_path)!r})
        seen = []
        j.on_unmapped = lambda exc: seen.append(exc.errno)
        n = 0
        try:
            while True:
                j.append(rec)
                n += 1
        except OSError:
            pass
        print(n, len(rec), len(seen), j.path)
    """)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    n, size, unmapped, path = out.stdout.split()
    assert int(unmapped) == 1
    assert int(n) * int(size) > 1 << 18  # past the first pre-allocation, through write()
    parsed = parse(Path(path).read_bytes(), final=True)
    assert parsed.bad_bytes == 0 and parsed.zero_tail == 0 and len(parsed.records) == int(n)


def test_a_meter_on_a_mapped_journal_delivers_and_leaves_nothing(tmp_path: Path) -> None:
    with standin_server() as gw:
        m = Meter(KEY, api_id="api", base_url=gw.url, state_dir=str(tmp_path), flush_interval=0.05)
        for i in range(3000):  # past the first pre-allocated size
            m.log(f"c{i % 3}", 1)
        deadline = time.monotonic() + 10
        while sum(gw.units_by_consumer().values()) < 3000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert m.flush(10)
        st = m.stats()
        m.shutdown()
    assert gw.units_by_consumer() == {"c0": 1000, "c1": 1000, "c2": 1000}
    assert st.journal_unmapped == 0 and st.journal_errors == 0 and st.durable
    assert list(tmp_path.rglob("*.journal")) == []


def test_appends_racing_rotations_are_all_read_once(tmp_path: Path) -> None:
    j = Journal(str(tmp_path))
    threads, per_thread = 4, 3000
    done = threading.Event()

    def write(t: int) -> None:
        for i in range(per_thread):
            j.append(_event(f"t{t}-{i}", 1))

    workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    seen: list[str] = []
    rotations = 0
    while not done.is_set():
        if not any(w.is_alive() for w in workers):
            done.set()
        seen.extend(e.consumer_id for e in _events(j))
        j.rotate()  # what was appended after the read lands in the old segment: copied over
        rotations += 1
    seen.extend(e.consumer_id for e in _events(j))
    j.close(delete=True)
    assert rotations > 1
    assert len(seen) == threads * per_thread
    assert set(seen) == {f"t{t}-{i}" for t in range(threads) for i in range(per_thread)}


def test_a_first_segment_that_cannot_be_mapped_is_counted_and_warned(tmp_path: Path) -> None:
    # A file-size limit below the first pre-allocation (a nearly full disk at start-up): the very
    # first segment is written with write(); stats() and the log must say so, and nothing is lost.
    with standin_server() as gw:
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import logging, resource, signal
            logging.basicConfig(level=logging.WARNING)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
            from aerostack_meter import Meter
            m = Meter({KEY!r}, api_id="api", base_url={gw.url!r}, state_dir={str(tmp_path)!r})
            m.log("c", 5)
            assert m.flush(10)
            st = m.stats()
            m.shutdown()
            print(st.journal_unmapped, st.durable)
        """)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["1", "True"]
        assert "cannot memory-map the usage journal" in out.stderr
        assert gw.units_by_consumer() == {"c": 5}


def test_a_short_write_keeps_every_record_once(tmp_path: Path) -> None:
    # A nearly full disk cuts an append short (here a file-size limit, not on a record boundary,
    # and the journal unmapped, as it is on Windows and macOS or when a mapping cannot be made).
    # A record written whole is journaled; the one cut and the rest are kept in memory: every
    # unit delivered once, never a torn record counted as written, never a whole one twice.
    # Split metrics: each call's two events go in one write, so the cut can fall in either.
    calls = 60
    with standin_server() as gw:
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import resource, signal
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            from aerostack_meter import Meter, Usage
            errors = []
            for delta in range(0, 90, 11):
                limit = 1500 + delta
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
                m = Meter({KEY!r}, api_id="api", base_url={gw.url!r}, metrics="split",
                          default_consumer_id=f"c{{delta}}", state_dir={str(tmp_path)!r} + f"/s{{delta}}",
                          flush_interval=60)
                att = m.attribute(None, "test")
                for _ in range({calls}):
                    m.record(Usage("openai", "gpt-mock", 3, 4, 7), att)
                resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                assert m.flush(10)
                errors.append(m.stats().journal_errors)
                m.shutdown()
            print(*errors)
        """)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert all(int(e) >= 1 for e in out.stdout.split())  # every run did hit the limit
        assert gw.units_by_consumer() == {f"c{d}": calls * 7 for d in range(0, 90, 11)}


def test_a_disk_too_full_for_delivery_state_does_not_spin_the_reporter(tmp_path: Path) -> None:
    # metrics="cost": each call's raw usage (U) is on disk, the priced records (X) that the
    # reporter must write cannot be. A flush then waits for the disk (the usage stays journaled
    # for the next start), retrying at the reporter's pace, not in a loop that burns a core.
    with standin_server() as gw:
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import resource, signal
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1500, resource.RLIM_INFINITY))
            from aerostack_meter import Meter, Usage
            m = Meter({KEY!r}, api_id="api", base_url={gw.url!r}, metrics="cost", default_consumer_id="c",
                      state_dir={str(tmp_path)!r}, flush_interval=0.05)
            att = m.attribute(None, "test")
            for i in range(40):
                m.record(Usage("openai", "gpt-4o-mini", 1000 + i, 37, 1037 + i), att)
            flushed = m.flush(2)
            print(flushed, m.stats().journal_errors)
            m.shutdown(1)
        """)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    flushed, errors = out.stdout.split()
    assert flushed == "False" and 0 < int(errors) < 2000  # (a spin: tens of thousands a second)


def _full_disk_child(url: str, state_dir: Path, limit: int, body: str) -> str:
    """A child's script: a file-size limit of ``limit`` bytes (a full disk), a meter ``m`` with its
    state in ``state_dir``, then ``body``."""
    return textwrap.dedent(f"""
        import os, resource, signal, sys, time
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
        from aerostack_meter import Meter
        m = Meter({KEY!r}, api_id="api", base_url={url!r}, state_dir={str(state_dir)!r}, flush_interval=0.05)
    """) + textwrap.dedent(body)


@pytest.mark.parametrize("room", [False, True], ids=["still-full", "room-again"])
def test_a_death_after_a_full_disk_bills_nothing_twice_under_new_keys(tmp_path: Path, room: bool) -> None:
    # A file-size limit (a full disk) reached while recording: the events written before it are
    # on disk, the rest in memory. A request for events on disk is sent only once its record is
    # journaled (else a death would leave them looking undelivered: an adopter would bill them
    # again under new keys, counted nowhere); events in memory are delivered meanwhile. Then
    # the process is killed and a new one adopts its journal. Still full: per Idempotency-Key,
    # what was billed never exceeds what was recorded (a request whose "delivered" mark the disk
    # refused is replayed under its key: counted). With room again before the death: those marks
    # are written then, and nothing is replayed at all.
    n = 20000
    then = ("resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
            "assert m.flush(10)") if room else "m.flush(3)"
    with standin_server() as gw:
        child = subprocess.run([sys.executable, "-c", _full_disk_child(gw.url, tmp_path, 300_000, f"""
for i in range({n}):
    m.log("alice", 1)
    if i % 500 == 0:
        time.sleep(0.01)
m.flush(2)
{then}
st = m.stats()
print(st.journal_errors, st.events_sent, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
""")], capture_output=True, text=True, timeout=120)
        errors, sent = map(int, child.stdout.split())
        assert errors > 0 and sent > 0  # the limit was hit; delivery went on meanwhile
        m = Meter(KEY, api_id="api", base_url=gw.url, state_dir=str(tmp_path), flush_interval=0.05)
        assert m.flush(10)
        m.shutdown(5)
        by_key: dict[str, int] = {}
        for r in gw.accepted():
            by_key[r.headers["idempotency-key"]] = r.body["units"]
        assert sum(by_key.values()) <= n  # each key's units once: nothing replayed under a new key
        replays = len(gw.accepted()) - len(by_key)
        assert m.stats().ambiguous_retries >= replays  # a replay under the same key is counted
        if room:
            assert (gw.units_by_consumer(), m.stats().ambiguous_retries) == ({"alice": n}, 0)


def test_requests_held_for_a_full_disk_go_out_once_it_has_room(tmp_path: Path) -> None:
    # While the disk is full, requests for usage on disk wait (flush() is False, the reporter does
    # not spin); once the disk has room they are journaled and sent, each event once.
    with standin_server() as gw:
        out = subprocess.run([sys.executable, "-c", _full_disk_child(gw.url, tmp_path, 100_000, """
            for i in range(5000):
                m.log(f"c{i % 3}", 1)
            held = m.flush(1)
            c0 = time.process_time()
            time.sleep(0.5)
            spent = time.process_time() - c0
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            for i in range(300):
                m.log(f"c{i % 3}", 2)
            print(held, round(spent, 3), m.flush(10), m.stats().journal_errors > 0, m.shutdown(5))
        """)], capture_output=True, text=True, timeout=120)
        held, spent, flushed, errors, shut = out.stdout.split()
        assert (held, flushed, errors, shut) == ("False", "True", "True", "True"), out.stdout + out.stderr
        assert float(spent) < 0.25  # waiting for the disk, not spinning on it
        assert gw.units_by_consumer() == {f"c{i}": 5000 // 3 + (i < 5000 % 3) + 200 for i in range(3)}
        keys = [r.headers["idempotency-key"] for r in gw.accepted()]
        assert len(keys) == len(set(keys))


def test_usage_a_full_disk_kept_in_memory_survives_a_shutdown_and_reuse_and_sums_exactly(tmp_path: Path) -> None:
    # A full disk keeps records in memory (no copy on disk). A shutdown() during an outage must
    # not drop them as if the closed journal held them (it is counted dropped until delivered on
    # reuse), and two of them summing past 2**53-1 are sent as two exact requests.
    big = 2**53 - 2
    with standin_server() as gw:
        gw.respond(*([503] * 100_000))
        proc = subprocess.Popen([sys.executable, "-c", _full_disk_child(gw.url, tmp_path, 3000, f"""
            for _ in range(300):
                m.log("alice", 1)
            m.log("big", {big}); m.log("big", {big})
            print(m.shutdown(0.5), m.stats().dropped.get("exit_timeout", 0) > 0, flush=True)
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            sys.stdin.readline()  # the API is back
            m.log("bob", 1)
            print(m.flush(10), dict(m.stats().dropped), m.stats().internal_errors, m.shutdown(5), flush=True)
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdin is not None
        try:
            assert proc.stdout.readline().split() == ["False", "True"]  # kept in memory: counted dropped
            with gw.lock:
                gw.script.clear()
            proc.stdin.write("\n")
            proc.stdin.flush()
            assert proc.stdout.readline().split() == ["True", "{}", "0", "True"]  # delivered: not dropped
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert gw.units_by_consumer() == {"alice": 300, "big": 2 * big, "bob": 1}
        keys = [r.headers["idempotency-key"] for r in gw.accepted()]
        assert len(keys) == len(set(keys))


def test_an_all_or_nothing_append_takes_back_what_a_full_disk_cut_short(tmp_path: Path) -> None:
    # Adoption copies a dead journal into ours in one append: cut short by a full disk, the whole
    # records it wrote would be billed from our journal and again from the dead one (renamed back
    # for a later pass). So that append writes all of its records or none.
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, resource.RLIM_INFINITY))
        from aerostack_meter._journal import Journal
        from aerostack_meter._journal_format import encode_event, key_blob
        rec = encode_event(key_blob("c", "api", "units"), 1, 0, 1.0)
        j = Journal({str(tmp_path)!r}, mapped=False)
        j.append(rec * 10)
        before = os.path.getsize(j.path)
        try:
            j.append(rec * 100, whole=True)
        except OSError:
            print("refused", os.path.getsize(j.path) == before)
        try:
            j.append(rec * 100)
        except OSError as exc:
            print(type(exc).__name__, os.path.getsize(j.path) > before)
    """)], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["refused", "True", "ShortWrite", "True"], out.stdout + out.stderr
