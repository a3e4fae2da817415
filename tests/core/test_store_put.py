"""The durable store's put: the bytes of an E record are the journal format's own, for any mix of
keys (its packer is chosen by the key strings' identity, so equal strings that are other objects,
and keys that alternate call by call, must each land under their own key)."""

from __future__ import annotations

from pathlib import Path

from aerostack_meter._journal_format import encode_event, key_blob
from aerostack_meter._stats import Counters
from aerostack_meter._store import JournalStore


def test_put_writes_the_format_s_own_bytes_for_alternating_and_equal_keys(tmp_path: Path) -> None:
    store = JournalStore(str(tmp_path), 1 << 30, Counters())
    # equal to earlier keys but other objects, and keys alternating call by call
    keys = [("alice", "api", "tokens"), ("bob", "api", "tokens"), ("".join(["al", "ice"]), "api", "tokens"),
            ("alice", "api", "input_tokens"), ("alice", "api2", "tokens"), ("bob", "api", "tokens")]
    expected = b""
    for i, (c, a, m) in enumerate(keys * 3):
        units, flags, ts = 10 * i + 1, i % 4, 1_700_000_000.25 + i
        store.put(c, a, m, units, flags, ts)
        expected += encode_event(key_blob(c, a, m), units, flags, ts)
    j = store.journal
    assert j.read_range(0, j.size()) == expected
    events = [r for r in store.read() if type(r).__name__ == "Event"]
    assert [(e.consumer_id, e.api_id, e.metric, e.units, e.flags) for e in events] == [
        (c, a, m, 10 * i + 1, i % 4) for i, (c, a, m) in enumerate(keys * 3)]
