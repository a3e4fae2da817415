"""The journal's record format: length-prefixed binary records, each with its own CRC-32.

    record  = magic (0xA5) | payload length (u32 LE) | crc32(payload) (u32 LE) | payload
    payload = one type byte, then the fields of that type

``E`` usage event (written on the caller's thread): timestamp, units, flags, consumer, api, metric.
``P`` a request formed elsewhere whose ``Idempotency-Key`` must be kept (adopted from a dead process).
``B`` a request formed here: its key, its sum, and the offsets [lo, hi) of the ``E`` records it covers
(for its consumer, API and metric). ``T`` an attempt is starting, ``F`` an attempt failed before the
server could have processed it, ``D`` the request is settled (delivered, or moved to dead letters),
``M`` the undelivered records of a dead process's journal file were copied in (see ``_journal``).
``U`` one call's raw usage, to be priced by a cost policy on the delivery side (written on the caller's
thread, see ``_deferred``): timestamp, token counts, flags, then provider, model, service tier,
consumer, api and the policy's parameters (metric, fallback, markup, unit) as length-prefixed strings.
``X`` the ``U`` record at a given offset of the same segment, priced: that offset and the call's events
(units, flags, consumer, api, metric). Pricing result and mark are one record, so no crash (not even
a torn write) can separate them: a ``U`` without its ``X`` is priced again, never twice.

A torn tail (the process died inside a write, or the power went) fails its length or CRC check and is
ignored; a bad record in the middle is skipped by scanning for the next record that checks out. A
journal is written into a pre-allocated file (see ``_journal``): the file of a process that died ends
in zeros after its last record, which is the end of the data, not bad bytes (no record starts with a
zero byte). Older versions, which wrote journals with ``os.write``, count such a tail as bad bytes.
Pure functions only: no I/O here.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

__all__ = [
    "EV_CALL", "EV_ESTIMATED", "EV_PRICED", "MAGIC", "U_ADOPTED", "U_ESTIMATED", "BatchRec", "Event",
    "Mark", "Parsed", "Priced", "RawUsage", "Record", "encode_batch", "encode_event", "encode_mark",
    "encode_priced", "encode_usage_payload", "frame", "key_blob", "parse", "strings_blob",
    "usage_with_flags",
]

MAGIC = 0xA5
_HDR = struct.Struct("<BII")
_EV = struct.Struct("<dQB")
_KEY = struct.Struct("<III")
_BATCH = struct.Struct("<QQQIBH")
_PRE = struct.Struct("<QIBH")
_USAGE = struct.Struct("<d11QB")  # ts, 11 token counts (see RawUsage), flags
_XHEAD = struct.Struct("<QH")  # offset of the U record, number of events
_XEV = struct.Struct("<dQB")  # ts, units, flags (then a key blob)
_LEN = struct.Struct("<I")
_MAX_RECORD = 1 << 26  # a longer length field is corruption, not a record
_crc32 = zlib.crc32

EV_ESTIMATED = 1
EV_CALL = 2  # the first event of a metered call (for the calls_metered counter)
EV_PRICED = 4  # priced by a cost policy (the request carries the price table in use)
U_ESTIMATED = 1  # U: the usage is an estimate
U_ADOPTED = 2  # U: copied from a dead process's journal (its call is not counted as metered here)
B_ESTIMATED = 1
B_INFLIGHT = 2  # P: the request may already have been processed (its replay is ambiguous)
B_PREFORMED = 4  # B: the request of a P record (same key), not a sum of E records


class Event(NamedTuple):
    offset: int
    consumer_id: str
    api_id: str
    metric: str
    units: int
    flags: int
    ts: float


class BatchRec(NamedTuple):
    offset: int
    kind: str  # "B" or "P"
    consumer_id: str
    api_id: str
    metric: str
    units: int
    n_events: int
    flags: int
    idempotency_key: str
    lo: int = 0
    hi: int = 0


class Mark(NamedTuple):
    offset: int
    kind: str  # "T", "F", "D", or "M" (a dead journal moved in: key is its file name)
    idempotency_key: str
    outcome: int = 0


class RawUsage(NamedTuple):
    """A ``U`` record: one call's usage waiting to be priced (see ``_deferred``)."""

    offset: int
    ts: float
    #: input, output, total, cached input, cache write, of which 1h, reasoning, audio input, audio
    #: output, web search requests, (reserved)
    counts: tuple[int, ...]
    flags: int
    #: provider, model, service tier, consumer, api, metric, fallback, markup, unit
    strings: tuple[str, ...]
    payload: bytes  # the record as written (copied as it is by adoption)


class Priced(NamedTuple):
    """An ``X`` record: the ``U`` record at ``usage_offset`` priced into ``events`` (each carries
    the offset of the ``X`` record itself)."""

    offset: int
    usage_offset: int
    events: tuple[Event, ...]


Record = Event | BatchRec | Mark | RawUsage | Priced


class Parsed(NamedTuple):
    records: list[Record]
    consumed: int  # bytes fully parsed (an incomplete tail is left for later)
    bad_bytes: int  # bytes skipped because they failed their checks
    zero_tail: int = 0  # zeros after the last record (the unused, pre-allocated end of a file)


def key_blob(consumer_id: str, api_id: str, metric: str) -> bytes:
    """The encoded (consumer, api, metric) part. Raises ``UnicodeEncodeError`` for a lone surrogate."""
    c = consumer_id.encode()
    a = api_id.encode()
    m = metric.encode()
    return _KEY.pack(len(c), len(a), len(m)) + c + a + m


def _frame(payload: bytes) -> bytes:
    return _HDR.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def encode_event(blob: bytes, units: int, flags: int, ts: float) -> bytes:
    payload = b"E" + _EV.pack(ts, units, flags) + blob
    return _HDR.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def encode_batch(kind: str, blob: bytes, units: int, n_events: int, flags: int, key: str,
                 lo: int = 0, hi: int = 0) -> bytes:
    k = key.encode()
    if kind == "B":
        return _frame(b"B" + _BATCH.pack(lo, hi, units, n_events, flags, len(k)) + k + blob)
    return _frame(b"P" + _PRE.pack(units, n_events, flags, len(k)) + k + blob)


def encode_mark(kind: str, key: str, outcome: int = 0) -> bytes:
    return _frame(kind.encode() + bytes((outcome,)) + key.encode())


def strings_blob(*values: str) -> bytes:
    """Length-prefixed UTF-8 strings (``UnicodeEncodeError`` for a lone surrogate)."""
    out = []
    for v in values:
        b = v.encode()
        out.append(_LEN.pack(len(b)) + b)
    return b"".join(out)


def encode_usage_payload(ts: float, counts: tuple[int, ...], flags: int, strings: bytes) -> bytes:
    """A ``U`` record's payload (the caller's path inlines this; see ``_store.JournalStore``)."""
    return b"U" + _USAGE.pack(ts, *counts, flags) + strings


def usage_with_flags(payload: bytes, flags: int) -> bytes:
    """A ``U`` payload with its flags byte replaced."""
    at = _USAGE.size  # the flags byte is the last of the fixed part (after the type byte)
    return payload[:at] + bytes((flags,)) + payload[at + 1:]


def frame(payload: bytes) -> bytes:
    return _frame(payload)


def encode_priced(usage_offset: int, events: list[tuple[str, str, str, int, int]], ts: float) -> bytes:
    """An ``X`` record: the ``U`` record at ``usage_offset`` priced into ``events``."""
    parts = [b"X", _XHEAD.pack(usage_offset, len(events))]
    for c, a, m, units, flags in events:
        parts.append(_XEV.pack(ts, units, flags))
        parts.append(key_blob(c, a, m))
    return _frame(b"".join(parts))


def _key_at(payload: bytes, at: int) -> tuple[str, str, str, int]:
    lc, la, lm = _KEY.unpack_from(payload, at)
    at += _KEY.size
    end = at + lc + la + lm
    if end > len(payload):
        raise ValueError("key past the end")
    c = payload[at:at + lc].decode()
    a = payload[at + lc:at + lc + la].decode()
    m = payload[at + lc + la:end].decode()
    return c, a, m, end


def _raw_usage(offset: int, payload: bytes) -> RawUsage:
    ts, *counts, flags = _USAGE.unpack_from(payload, 1)
    at = 1 + _USAGE.size
    strings = []
    n = len(payload)
    while at < n:
        (ln,) = _LEN.unpack_from(payload, at)
        at += _LEN.size
        if at + ln > n:
            raise ValueError("string past the end")
        strings.append(payload[at:at + ln].decode())
        at += ln
    if len(strings) < 9:
        raise ValueError("a usage record needs nine strings")
    return RawUsage(offset, ts, tuple(counts), flags, tuple(strings), payload)


def _priced(offset: int, payload: bytes) -> Priced:
    usage_offset, n = _XHEAD.unpack_from(payload, 1)
    at = 1 + _XHEAD.size
    events = []
    for _ in range(n):
        ts, units, flags = _XEV.unpack_from(payload, at)
        c, a, m, at = _key_at(payload, at + _XEV.size)
        events.append(Event(offset, c, a, m, units, flags, ts))
    if at != len(payload):
        raise ValueError("priced record length mismatch")
    return Priced(offset, usage_offset, tuple(events))


def _key(payload: bytes, at: int) -> tuple[str, str, str]:
    lc, la, lm = _KEY.unpack_from(payload, at)
    at += _KEY.size
    c = payload[at:at + lc].decode()
    a = payload[at + lc:at + lc + la].decode()
    m = payload[at + lc + la:at + lc + la + lm].decode()
    if at + lc + la + lm != len(payload):
        raise ValueError("key length mismatch")
    return c, a, m


# The keys of E records, by their bytes: a journal repeats a few (consumer, api, metric) keys, and
# decoding one (an unpack, three slices, three UTF-8 decodes, a length check) cost the delivery
# thread more than the rest of the record. Bounded: emptied when it reaches _KEYS_MAX entries.
_keys: dict[bytes, tuple[str, str, str]] = {}
_KEYS_MAX = 4096
_E = 0x45  # b"E"[0]
_E_KEY_AT = 1 + _EV.size
_ev_unpack = _EV.unpack_from
_new_event = tuple.__new__  # Event(...) without its Python-level __new__ (the fields in order)


def _event(offset: int, payload: bytes) -> Event:
    """An ``E`` record (the journal's common record: each metered call writes one)."""
    ts, units, flags = _ev_unpack(payload, 1)
    blob = payload[_E_KEY_AT:]
    key = _keys.get(blob)
    if key is None:
        key = _key(payload, _E_KEY_AT)  # raises ValueError on a bad key: never cached
        if len(_keys) >= _KEYS_MAX:
            _keys.clear()
        _keys[blob] = key
    return _new_event(Event, (offset, *key, units, flags, ts))


def _decode(offset: int, payload: bytes) -> Record:
    kind = payload[:1]
    if kind == b"E":
        ts, units, flags = _EV.unpack_from(payload, 1)
        return Event(offset, *_key(payload, 1 + _EV.size), units, flags, ts)
    if kind == b"B":
        lo, hi, units, n, flags, lk = _BATCH.unpack_from(payload, 1)
        at = 1 + _BATCH.size
        key = payload[at:at + lk].decode()
        return BatchRec(offset, "B", *_key(payload, at + lk), units, n, flags, key, lo, hi)
    if kind == b"P":
        units, n, flags, lk = _PRE.unpack_from(payload, 1)
        at = 1 + _PRE.size
        key = payload[at:at + lk].decode()
        return BatchRec(offset, "P", *_key(payload, at + lk), units, n, flags, key)
    if kind in (b"T", b"F", b"D", b"M"):
        return Mark(offset, kind.decode(), payload[2:].decode(), payload[1])
    if kind == b"U":
        return _raw_usage(offset, payload)
    if kind == b"X":
        return _priced(offset, payload)
    raise ValueError(f"unknown record type {kind!r}")


def parse(buf: bytes, base: int = 0, *, final: bool = False) -> Parsed:
    """Records in ``buf`` (which starts at file offset ``base``).

    ``final``: nothing more will be written (a dead process's journal): an incomplete record is
    skipped like a bad one instead of being left for a later read.
    """
    out: list[Record] = []
    pos = 0
    bad = 0
    n = len(buf)
    hdr = _HDR.size
    while pos < n:
        if buf[pos] == 0 and buf.count(0, pos) == n - pos:  # zeros to the end: no more records
            if not final:
                return Parsed(out, pos, bad)
            return Parsed(out, n, bad, n - pos)
        if pos + hdr > n:
            break
        magic, length, crc = _HDR.unpack_from(buf, pos)
        if magic == MAGIC and length <= _MAX_RECORD:
            end = pos + hdr + length
            if end > n and not final:
                break  # incomplete: still being written (or a torn tail)
            payload = buf[pos + hdr:end]
            if end <= n and _crc32(payload) == crc:
                try:
                    out.append(_event(base + pos, payload) if payload[0] == _E else _decode(base + pos, payload))
                except (ValueError, struct.error, UnicodeDecodeError, IndexError):
                    bad += end - pos
                pos = end
                continue
        # Not a record here: skip to the next magic byte that starts one that checks out.
        nxt = buf.find(bytes((MAGIC,)), pos + 1)
        if nxt < 0:  # the rest is bad, but for the zeros it ends in (a torn last record)
            kept = len(buf[pos:].rstrip(b"\0"))
            bad += kept
            if final or kept < n - pos:
                return Parsed(out, n, bad, n - pos - kept)
            return Parsed(out, n, bad)
        bad += nxt - pos
        pos = nxt
    return Parsed(out, pos, bad)
