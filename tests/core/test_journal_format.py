"""The journal's record format read back: events (decoded once per distinct key, by its bytes),
and a record whose CRC checks out but whose key is malformed counted bad every time it is met."""

from __future__ import annotations

import struct

from aerostack_meter._journal_format import (
    _EV,
    _KEY,
    MAGIC,
    Event,
    encode_event,
    frame,
    key_blob,
    parse,
)


def test_events_read_back_exactly_whatever_their_keys() -> None:
    keys = [("usr_1", "api", "tokens"), ("usr_ü", "api_2", "input_tokens"), ("", "a", "m"), ("usr_1", "api", "tokens")]
    buf = b"".join(encode_event(key_blob(*k), 10 + i, i, 1.5 + i) for i, k in enumerate(keys))
    buf += buf  # the same keys again: read from the cache of decoded keys
    parsed = parse(buf)
    assert parsed.bad_bytes == 0
    assert [tuple(r)[1:] for r in parsed.records] == [(*k, 10 + i, i, 1.5 + i) for i, k in enumerate(keys)] * 2
    assert all(type(r) is Event for r in parsed.records)
    half = len(buf) // 2
    assert [r.offset for r in parsed.records[4:]] == [half + r.offset for r in parsed.records[:4]]


def test_a_malformed_key_is_bad_bytes_each_time_and_the_next_record_is_read() -> None:
    # lengths that claim more than the record holds: the CRC is right, the key is not
    bad = frame(b"E" + _EV.pack(1.0, 5, 0) + _KEY.pack(3, 3, 30) + b"abcdefmet")
    good = encode_event(key_blob("usr", "api", "tokens"), 7, 0, 2.0)
    for _ in range(2):
        parsed = parse(bad + good)
        assert parsed.bad_bytes == len(bad)
        assert [(r.consumer_id, r.units) for r in parsed.records] == [("usr", 7)]
    assert bad[0] == MAGIC and struct.unpack_from("<I", bad, 1)[0] == len(bad) - 9
