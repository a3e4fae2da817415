"""The durable journal (the default): nothing lost across outages, exits and kill -9; nothing sent
twice; bad state files never stop the app."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aerostack_meter import Meter
from aerostack_meter._journal_format import encode_batch, encode_event, key_blob
from aerostack_meter._paths import default_state_dir, destination_dir
from aerostack_meter._secret import Secret
from aerostack_meter._usage import Usage
from aerostack_meter.testing import MemorySink
from tests.standin import standin_server

KEY = "ac_secret_spool_key"


def make(url: str, state: Path, **options: object) -> Meter:
    options.setdefault("flush_interval", 0.05)
    options.setdefault("backoff_base", 0.01)
    options.setdefault("max_backoff", 0.05)
    return Meter(KEY, api_id="api", base_url=url, state_dir=str(state), **options)  # type: ignore[arg-type]


def test_a_state_directory_the_meter_creates_is_private(tmp_path: Path) -> None:
    """The state directory itself, not only the per-destination one in it, is made 0700."""
    state = tmp_path / "made" / "state"
    with standin_server() as gw:
        m = make(gw.url, state, flush_interval=30)
        m.log("c", 2)
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        [journal] = files(state)
        assert stat.S_IMODE(journal.parent.stat().st_mode) == 0o700
        assert m.flush(5)
        m.shutdown()


def files(state: Path, suffix: str = ".journal") -> list[Path]:
    return sorted(p for p in state.rglob(f"*{suffix}"))


def test_records_are_on_disk_when_log_returns_and_gone_once_delivered(tmp_path: Path) -> None:
    with standin_server() as gw:
        m = make(gw.url, tmp_path, flush_interval=30)
        m.log("c", 2)
        [journal] = files(tmp_path)
        assert journal.stat().st_size > 0  # on disk before log() returned
        assert stat.S_IMODE(journal.stat().st_mode) == 0o600
        assert stat.S_IMODE(journal.parent.stat().st_mode) == 0o700
        for i in range(99):
            m.log(f"c{i % 5}", 2)
        assert m.flush(5)
        assert m.stats().spooled == 0 and m.stats().durable
        m.shutdown()
        assert sum(gw.units_by_consumer().values()) == 200
        assert files(tmp_path) == [] and files(tmp_path, ".lock") == []


def test_what_the_exit_budget_cannot_send_stays_and_is_replayed_with_the_same_keys(tmp_path: Path) -> None:
    with standin_server() as gw:
        gw.respond(*([503] * 1000))
        m = make(gw.url, tmp_path)
        m.log("a", 5)
        m.log("b", 6)
        time.sleep(0.5)  # requests formed and attempted
        assert m.shutdown(0.2) is False
        failed_keys = {r.headers["idempotency-key"] for r in gw.requests}
        assert len(failed_keys) == 2
        assert files(tmp_path)
        gw.script.clear()
        m2 = make(gw.url, tmp_path)  # the next start adopts and replays
        assert m2.flush(5)
        m2.shutdown()
        assert gw.units_by_consumer() == {"a": 5, "b": 6}
        assert {r.headers["idempotency-key"] for r in gw.accepted()} == failed_keys
        assert files(tmp_path) == []


def test_kill_9_then_drain_by_a_live_process_loses_nothing(tmp_path: Path) -> None:
    with standin_server() as gw:
        gw.respond(*([503] * 50))  # keep a backlog while the process dies
        child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import aerostack_meter as am
            am.init({KEY!r}, api_id="api", base_url={gw.url!r}, state_dir={str(tmp_path)!r},
                    flush_interval=0.05, backoff_base=0.01, max_backoff=0.05, instrument=False)
            for i in range(400):
                am.log("killed", 1)
            print("logged", flush=True)
            import time; time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "logged"
        m = make(gw.url, tmp_path)  # alive while the other one dies: adopts within seconds
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        deadline = time.monotonic() + 10
        while gw.units_by_consumer().get("killed", 0) < 400 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert m.flush(10)
        m.shutdown()
        assert gw.units_by_consumer() == {"killed": 400}
        assert m.stats().events_adopted >= 1
        assert files(tmp_path) == []


def test_concurrent_processes_on_one_state_dir_never_send_twice(tmp_path: Path) -> None:
    with standin_server() as gw:
        code = textwrap.dedent(f"""
            import sys, aerostack_meter as am
            am.init({KEY!r}, api_id="api", base_url={gw.url!r}, state_dir={str(tmp_path)!r},
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


def _dead_journal(state: Path, url: str, data: bytes, token: str = "deadbeef00") -> Path:
    d = Path(destination_dir(str(state), url, Secret(KEY).fingerprint()))  # a process with our key
    path = d / f"{token}.0.journal"
    path.write_bytes(data)
    (d / f"{token}.lock").touch()
    return path


def test_a_request_in_flight_at_death_is_replayed_with_its_key_as_an_ambiguous_retry(tmp_path: Path) -> None:
    with standin_server() as gw:
        blob = key_blob("a", "api", "units")
        ev = encode_event(blob, 5, 0, time.time())
        # the dead process formed a request over its event, attempted it, and got no answer
        data = ev + encode_batch("B", blob, 5, 1, 0, "am-dead-1", 0, len(ev))
        data += encode_event(key_blob("b", "api", "units"), 6, 0, time.time())  # never batched
        _dead_journal(tmp_path, gw.url, data)
        m = make(gw.url, tmp_path)
        assert m.flush(5)
        st = m.stats()
        m.shutdown()
    assert gw.units_by_consumer() == {"a": 5, "b": 6}
    assert st.ambiguous_retries == 1 and st.retries == 1  # only the request that was in flight
    keys = {r.body["consumerId"]: r.headers["idempotency-key"] for r in gw.accepted()}
    assert keys["a"] == "am-dead-1"


def test_a_damaged_journal_is_quarantined_and_what_can_be_read_is_delivered(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aerostack_meter")
    with standin_server() as gw:
        good = encode_event(key_blob("ok", "api", "units"), 7, 0, time.time())
        torn = encode_event(key_blob("torn", "api", "units"), 9, 0, time.time())
        data = b"\x00garbage\xa5\xff\xff" + good + os.urandom(64).replace(b"\xa5", b"") + good + torn[:-3]
        path = _dead_journal(tmp_path, gw.url, data)
        m = make(gw.url, tmp_path)  # never fails
        assert m.flush(5)
        st = m.stats()
        m.shutdown()
    assert gw.units_by_consumer() == {"ok": 14}
    assert st.state_files_quarantined == 1
    assert not path.exists() and list(path.parent.glob("*.corrupt-*"))
    assert sum("damaged" in r.getMessage() for r in caplog.records) == 1


def test_an_unwritable_state_dir_falls_back_to_memory_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    if os.geteuid() == 0:
        blocked = tmp_path / "file-not-dir"
        blocked.write_text("x")  # root ignores permissions: a file where the directory should be
        state = blocked / "state"
    else:
        state = tmp_path / "ro"
        state.mkdir(mode=0o500)
    caplog.set_level(logging.WARNING, logger="aerostack_meter")
    with standin_server() as gw:
        m = make(gw.url, state)
        m2 = make(gw.url, state)
        m.log("c", 1)
        assert m.flush(5)
        assert not m.stats().durable and m.stats().journal_errors == 1
        m.shutdown()
        m2.shutdown()
        assert gw.units_by_consumer() == {"c": 1}
    assert sum("state directory" in r.getMessage() for r in caplog.records) == 1


def test_sums_past_2_53_are_split_into_exact_requests(tmp_path: Path) -> None:
    with standin_server() as gw:
        m = make(gw.url, tmp_path, flush_interval=5)
        big = 2**53 - 1
        for _ in range(3):
            m.log("whale", big)
        assert m.flush(10)
        m.shutdown()
        units = [r.body["units"] for r in gw.accepted()]
        assert sum(units) == 3 * big and all(u <= big for u in units) and len(units) == 3


def test_idempotency_keys_are_unique_per_record_even_with_the_same_response_id(tmp_path: Path) -> None:
    from aerostack_meter._context import Attribution

    with standin_server() as gw:
        m = make(gw.url, tmp_path, coalesce=False)
        u = Usage("openai", "gpt-4o-mini", 3, 4, 7, response_id="chatcmpl-same")
        for _ in range(3):
            m.record(u, Attribution("c", "api", "tokens"))
        assert m.flush(5)
        m.shutdown()
        keys = [r.headers["idempotency-key"] for r in gw.accepted()]
        assert len(keys) == len(set(keys)) == 3


def test_spool_path_is_the_former_name_of_state_dir(tmp_path: Path) -> None:
    with standin_server() as gw:
        m = Meter(KEY, api_id="api", base_url=gw.url, spool_path=str(tmp_path / "spool"),
                  flush_interval=30)
        m.log("c", 1)
        assert files(tmp_path / "spool")
        assert m.flush(5)
        m.shutdown()


def test_a_sink_without_a_destination_is_fed_from_memory() -> None:
    m = Meter(sink=MemorySink(), api_id="api")
    assert not m.durable and m.state_dir is None
    m.shutdown()


def test_the_default_state_dir_follows_the_platform() -> None:
    assert default_state_dir({"HOME": "/h"}, "linux") == "/h/.local/state/aerostack-meter"
    assert default_state_dir({"HOME": "/h", "XDG_STATE_HOME": "/x"}, "linux") == "/x/aerostack-meter"
    assert default_state_dir({"HOME": "/h", "XDG_STATE_HOME": "rel"}, "linux") == \
        "/h/.local/state/aerostack-meter"
    assert default_state_dir({"HOME": "/h"}, "darwin") == "/h/Library/Application Support/aerostack-meter"
    assert default_state_dir({"HOME": "/h", "LOCALAPPDATA": "C:/L"}, "win32").endswith("aerostack-meter")


@pytest.mark.parametrize("copied", [True, False], ids=["died-after-copying", "died-before-copying"])
def test_an_adopter_that_died_mid_adoption_neither_loses_nor_doubles(tmp_path: Path, copied: bool) -> None:
    """B was adopting A's journal (renamed `A.0.journal.adopting-B`) when it died: if B's journal
    holds the copy (its `M` mark names the file), the renamed file is dropped; if not, it is
    adopted again. Either way each unit arrives once."""
    from aerostack_meter._journal_format import encode_mark

    with standin_server() as gw:
        d = Path(destination_dir(str(tmp_path), gw.url, Secret(KEY).fingerprint()))
        ev = encode_event(key_blob("a", "api", "units"), 5, 0, time.time())
        (d / "aaaa00000000.0.journal.adopting-bbbb00000000").write_bytes(ev)
        (d / "aaaa00000000.lock").touch()
        b_journal = encode_event(key_blob("b", "api", "units"), 6, 0, time.time())
        if copied:
            b_journal += ev + encode_mark("M", "aaaa00000000.0.journal")
        (d / "bbbb00000000.0.journal").write_bytes(b_journal)
        (d / "bbbb00000000.lock").touch()
        m = make(gw.url, tmp_path)
        assert m.flush(5)
        m.shutdown()
        assert gw.units_by_consumer() == {"a": 5, "b": 6}
        assert list(d.glob("*.journal*")) == []


def test_a_lock_file_removed_between_open_and_flock_is_not_taken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race behind a live journal adopted as dead: an adopter unlinks a dead owner's lock file
    while a new owner has opened it but not locked it yet. The owner's flock then succeeds on a
    file no one else can see, so the next adopter (who opens a new file at that path) would take
    over the live journal and deliver its records twice. The OS interleaving is forced here by
    running the adopter's step inside ``flock``."""
    import fcntl

    from aerostack_meter import _journal

    real_flock = fcntl.flock
    raced: list[str] = []

    def flock_after_an_adopter(fd: int, op: int) -> None:
        if not raced:
            name = next(n for n in os.listdir(tmp_path) if n.endswith(".lock"))
            raced.append(name)
            os.unlink(tmp_path / name)  # the adopter: took the file, found no journal, removed it
        real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_an_adopter)
    assert _journal._lock(str(tmp_path / "a.lock")) is None  # the path no longer names our file
    raced.clear()
    journal = _journal.Journal(str(tmp_path))  # the owner takes a new name and a real lock
    try:
        assert raced and not raced[0].startswith(journal.token)
        held = os.stat(tmp_path / f"{journal.token}.lock")
        assert _journal._lock(str(tmp_path / f"{journal.token}.lock")) is None  # visibly held
        assert held.st_ino == os.fstat(journal._lock_fd).st_ino
    finally:
        journal.close(delete=True)
