"""One process's append-only usage journal, and the adoption of journals left by dead processes.

Files, in one destination directory of the state directory (see ``_paths``)::

    <token>.lock            held with flock(LOCK_EX) for as long as the owning process lives
    <token>.<n>.journal     records (see ``_journal_format``); <n> grows when the journal rotates

Records are copied into a shared file mapping (``mmap`` with ``MAP_SHARED``) of the current segment:
no system call on the caller's path. Bytes stored into a shared file mapping are in the kernel's
page cache the moment the copy returns, exactly like the bytes of an ``os.write`` without fsync: they
survive the death of the process by any means (SIGKILL, ``os._exit``, an OOM kill). They are not
fsynced: an OS crash or a power loss may lose the last seconds. Every appender (callers' ``put``,
the reporter's marks, adopted records) goes through ``Journal.append``: one ``mmap.write``, a single
C call that reserves ``[pos, pos + n)``, copies and advances the mapping's position without
releasing the GIL, so concurrent appenders never overlap and need no lock; the reader reads up to
the position (``tell()``), below which every record is complete. Only growing the mapping, rotating,
closing and falling back take a lock (writers whose copy does not fit wait for it).

The segment is pre-allocated (``posix_fallocate``: the blocks are reserved, so a full disk is an
error when growing, never a SIGBUS on a copy) in steps (256 KiB, then doubling up to 4 MiB), so its
size is not the end of the data: the logical end is ``Journal.end``, the rest of the file is zeros.
A clean ``close`` truncates the file to its data; a file left by a dead process ends in zeros, which
``parse`` reads as the end (not as bad bytes). Where the file cannot be mapped (no
``posix_fallocate``: Windows, macOS; a filesystem without fallocate or mmap; ENOMEM; a full disk
when growing) the journal is written with one ``os.write`` per record on an ``O_APPEND``
descriptor instead, with the same durability (``on_unmapped`` is told).

A lock that can be taken belongs to a dead process (the kernel releases flocks
when a process dies); whoever takes it copies what that process left undelivered into its own
journal, then deletes the dead files.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import logging
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from ._journal_format import (
    B_INFLIGHT,
    B_PREFORMED,
    EV_CALL,
    MAGIC,
    U_ADOPTED,
    BatchRec,
    Event,
    Mark,
    Priced,
    RawUsage,
    Record,
    encode_batch,
    encode_event,
    encode_mark,
    frame,
    key_blob,
    parse,
    usage_with_flags,
)
from ._log import log_once
from ._rescue import READ_SUFFIX, settle_rescues

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no adoption by lock; own restart still replays
    fcntl = None  # type: ignore[assignment]

__all__ = ["Journal", "Recovered", "ShortWrite", "adopt_dead", "quarantine", "whole_records"]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_READ_CHUNK = 1 << 20
_MAP_FIRST = 1 << 18  # the first pre-allocated size of a segment; it doubles up to _MAP_STEP
_MAP_STEP = 1 << 22
#: map segments where the platform can pre-allocate them (``posix_fallocate``; not Windows, macOS)
MAPPED = os.name == "posix" and hasattr(os, "posix_fallocate")
# A copy into the mapping never releases the GIL (an ``os.write`` did, each time): writers in a tight
# loop would make the reporter and its senders wait for the GIL up to the switch interval (5 ms) at
# each of their system calls, and leave them an ever longer backlog. So the append whose copy
# crosses a 4 KiB boundary of the journal yields the GIL (one ``time.sleep(0)`` per ~50 records);
# and while the reporter reads and is more than _BEHIND bytes behind, every append yields (a system
# call, as each ``os.write`` was). A process metering LLM calls is never that far behind.
_BEHIND = 1 << 20
_PAGE_MASK = (1 << 12) - 1


def _lock(path: str) -> int | None:
    """An flock'ed descriptor on ``path``, or None when another live process holds it."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR | _CLOEXEC, 0o600)
    if fcntl is None:  # pragma: no cover
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # An adopter unlinks a dead owner's lock file while holding it. Whoever opened that file
        # before the unlink and locks it after holds a lock nobody else can see: a new owner would
        # then look dead to the next adopter, which would deliver its records a second time. So a
        # lock counts only while the path still names the locked file.
        held, named = os.fstat(fd), os.stat(path)
        if (held.st_ino, held.st_dev) != (named.st_ino, named.st_dev):
            raise OSError("lock file replaced")
    except OSError:
        os.close(fd)
        return None
    return fd


def quarantine(path: str, suffix: str = "") -> str | None:
    """Rename a bad state file aside (``<name>.corrupt-<time>-<pid><suffix>``); returns the new name."""
    dest = f"{path}.corrupt-{int(time.time())}-{os.getpid()}{suffix}"
    try:
        os.replace(path, dest)
    except OSError:
        return None
    log_once(f"quarantine:{path}", logging.WARNING,
             "aerostack_meter: the state file %s was damaged; what could be read was kept and the "
             "file was renamed to %s", path, dest)
    return dest


class ShortWrite(OSError):
    """Only the first ``written`` bytes of an append reached the file (a nearly full disk, a
    file-size limit). Never written on: another thread's append may follow those bytes, so the
    record they cut is torn for good (skipped by the reader as bad bytes). The caller keeps the
    records that were not written whole (:func:`whole_records`)."""

    def __init__(self, written: int) -> None:
        super().__init__(errno.ENOSPC, f"short write ({written} bytes)")
        self.written = written


def whole_records(sizes: Iterable[int], written: int) -> int:
    """How many of the records of ``sizes`` bytes, appended in one write, ``written`` bytes hold
    whole."""
    k = 0
    for size in sizes:
        if size > written:
            break
        written -= size
        k += 1
    return k


class Journal:
    """The current process's journal: a writer for callers, a reader and a marker for the reporter.

    ``mapped``: write through a shared file mapping (see the module docstring); False: one
    ``os.write`` per record. ``on_unmapped``: called (under the write lock, with the error) when a
    mapping could not be made or grown and the segment falls back to ``os.write``."""

    def __init__(self, directory: str, *, mapped: bool | None = None,
                 on_unmapped: Callable[[OSError], None] | None = None) -> None:
        self.dir = directory
        self.fd = -1
        self.mapped = MAPPED if mapped is None else mapped
        self.on_unmapped = on_unmapped  # (set before the first segment: it may be the one unmapped)
        self._wlock = threading.RLock()  # growth, rotation, close, fallback (never a plain append)
        self._mm: mmap.mmap | None = None  # the current segment's mapping; its position is the end
        self.reading = False  # the reporter is in read_new (see _BEHIND)
        self._open_owner()

    def _open_owner(self) -> None:
        """A new identity: lock, first segment. The write descriptor keeps its number (``dup2``),
        so a writer that loaded it never writes to a closed or reused descriptor."""
        self.pid = os.getpid()
        for _ in range(8):  # a new name when an adopter removed our fresh lock file under us
            self.token = os.urandom(10).hex()  # 20 random hex digits (uuid would import platform)
            lock = _lock(self._lock_path(self.token))
            if lock is not None:
                break
        else:  # pragma: no cover - eight lost races in a row
            raise OSError("journal lock taken")
        self._lock_fd = lock
        with self._wlock:
            self.seg = 0
            self.carried = 0  # the end of the records rotate() copied into this segment
            self._torn_end = -1  # see _write
            path = self._seg_path(self.token, 0)
            self._point_at(path)
            self._rfd = os.open(path, os.O_RDONLY | _CLOEXEC)
        self.read_pos = 0
        self.closed = False
        self._gone = False  # closed and deleted: the next append starts a new journal (see close)

    def _point_at(self, path: str) -> None:
        """(Under the write lock.) Make ``self.fd`` name a new, empty segment file, mapped when
        the journal maps (see :meth:`_prepare`)."""
        fd, mm = self._prepare(path, b"")
        if self.fd < 0:
            self.fd = fd
        else:
            try:
                os.dup2(fd, self.fd, inheritable=False)
            finally:
                os.close(fd)
        self._mm = mm

    def _unmapped(self, exc: BaseException) -> None:
        if self.on_unmapped is not None:
            self.on_unmapped(exc if isinstance(exc, OSError) else OSError(str(exc)))

    def _grow(self, mm: mmap.mmap, need: int) -> bool:
        """(Under the write lock; ``mm`` is the current mapping.) Pre-allocate and map at least
        ``need`` bytes of the segment. The same mapping object is resized (its position, which
        lock-free appenders advance, stays); False: it could not, the segment is unmapped."""
        cap = len(mm)
        size = max(need, cap + min(cap, _MAP_STEP))
        size = -(-size // mmap.ALLOCATIONGRANULARITY) * mmap.ALLOCATIONGRANULARITY
        try:
            os.posix_fallocate(self.fd, cap, size - cap)  # blocks reserved: no SIGBUS on a full disk
            mm.resize(size)
        except (OSError, ValueError, OverflowError, BufferError) as exc:
            self._unmap()
            self._unmapped(exc)
            return False
        return True

    def _unmap(self) -> None:
        """(Under the write lock.) Stop mapping the segment: no append lands in the mapping any
        more (its position is moved to its end: a copy fails and takes the locked path), the file
        is cut to its data, and ``os.write`` on the ``O_APPEND`` descriptor continues it."""
        mm = self._mm
        if mm is None:
            return
        self._mm = None
        end = _seal(mm)
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, end)

    def _lock_path(self, token: str) -> str:
        return os.path.join(self.dir, f"{token}.lock")

    def _seg_path(self, token: str, seg: int) -> str:
        return os.path.join(self.dir, f"{token}.{seg}.journal")

    @property
    def path(self) -> str:
        return self._seg_path(self.token, self.seg)

    # -- writers (callers and the reporter) -----------------------------------------------------
    def append(self, data: bytes, whole: bool = False) -> None:
        """Append ``data`` (whole records): in the page cache when this returns. ``OSError`` when
        it could not be written (only without a mapping: a full disk, an I/O error);
        :class:`ShortWrite` when only part of it was (``whole``: never; the part is taken back
        and ``OSError`` raised: all of ``data`` or nothing)."""
        mm = self._mm
        if mm is not None:
            try:
                mm.write(data)
            except ValueError:  # it does not fit (or the mapping was retired): the locked path
                pass
            else:
                pos = mm.tell()
                if pos & _PAGE_MASK < len(data) or (self.reading and pos - self.read_pos > _BEHIND):
                    time.sleep(0)  # let the other threads have the GIL (see _BEHIND)
                return
        elif not self.mapped:  # never mapped (Windows, macOS): one os.write, under the lock, so
            with self._wlock:  # rotate() never switches files while a write is inside the kernel
                if self._gone:
                    self._open_owner()
                self._write(data, whole)
            return
        with self._wlock:
            if self._gone:
                self._open_owner()
            mm = self._mm
            while mm is not None:
                try:
                    mm.write(data)
                    return
                except ValueError:
                    pass
                if not self._grow(mm, mm.tell() + len(data)):
                    break
            self._write(data, whole)

    def _write(self, data: bytes, whole: bool = False) -> None:
        """One ``os.write`` of ``data`` (unmapped). Cut short, it leaves a record nothing will
        complete: where the file then ended is kept, for the reader to skip it (``_read_new``).
        (Under the write lock: no other write finishes between this one and the ``fstat``.)"""
        start = os.fstat(self.fd).st_size if whole else 0
        n = os.write(self.fd, data)
        if n != len(data) and whole:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, start)
            raise OSError(errno.ENOSPC, f"wrote {n} of {len(data)} bytes; taken back")
        if n != len(data):
            with contextlib.suppress(OSError):
                self._torn_end = os.fstat(self.fd).st_size
            raise ShortWrite(n)

    # -- reporter side ----------------------------------------------------------------------
    def size(self) -> int:
        """The end of the data in the current segment (not the file's size while it is mapped)."""
        mm = self._mm
        if mm is not None:
            return mm.tell()
        return os.fstat(self.fd).st_size

    def position(self) -> tuple[int, int]:
        """(segment, end of its data), taken together: never the new segment's number with the
        old one's end, or a size read while :meth:`rotate` is between the two files."""
        with self._wlock:
            return self.seg, self.size()

    def unread(self) -> tuple[bytes, int]:
        """The bytes not read yet in the current segment, and where they start (for counting from
        another thread than the reader's: taken together, as :meth:`position`)."""
        with self._wlock:
            pos = self.read_pos
            return self.read_range(pos, self.size()), pos

    def read_range(self, pos: int, end: int) -> bytes:
        """The bytes [pos, end) of the current segment (``end`` from ``size()``)."""
        if end <= pos:
            return b""
        mm = self._mm
        if mm is not None and end <= len(mm):
            return mm[pos:end]
        # (closed: the read descriptor is gone; the write one, O_RDWR, still names the file)
        return os.pread(self._rfd if self._rfd >= 0 else self.fd, end - pos, pos)

    def read_new(self) -> tuple[list[Record], int]:
        """Records appended since the last read (complete ones only), and bytes that were bad."""
        self.reading = True
        try:
            return self._read_new()
        finally:
            self.reading = False

    def _read_new(self) -> tuple[list[Record], int]:
        out: list[Record] = []
        bad = 0
        while True:
            end = min(self.size(), self.read_pos + _READ_CHUNK)
            buf = self.read_range(self.read_pos, end)
            if not buf:
                break
            parsed = parse(buf, self.read_pos)
            torn = self._torn_end
            if parsed.consumed < len(buf) and self.read_pos + parsed.consumed < torn <= end:
                # Stalled on a record before where an append was cut short (``_write``): every
                # write before that point has finished, so the record there never completes.
                # Up to that point, read as a dead process's journal is (the cut record skipped,
                # counted as bad bytes), then on from there.
                parsed = parse(buf[:torn - self.read_pos], self.read_pos, final=True)
                out.extend(parsed.records)
                bad += parsed.bad_bytes
                self.read_pos = torn
                continue
            out.extend(parsed.records)
            bad += parsed.bad_bytes
            self.read_pos += parsed.consumed
            if parsed.consumed == 0 or len(buf) < _READ_CHUNK:
                break
        return out, bad

    def rotate(self, carry: bytes = b"") -> int:
        """Start a new segment and delete the old one. ``carry``: records that stand for what
        the old one holds unsettled and was read already (the store's compaction: requests not
        settled, open sums); reading the new segment starts after them (see
        ``JournalStore.compact``). Without it, everything read in the old one is settled.
        Returns where ``carry`` begins in the new segment.

        Callers append without a lock, so records can land in the old segment after the reporter
        found it all read: they are copied into the new segment (``carried``: where they end; a
        mark taken before the switch is reached only once they are read). The old segment is
        sealed first (an append then waits for the write lock), and the new one is made whole
        before the switch: between two marks (:func:`rotation_marks`), ``carry``, the copied
        records. A failure there (a full disk) raises with nothing changed. Writers keep using
        the same descriptor number: ``dup2`` points it at the new file atomically. The old
        segment is then deleted; a death before that leaves both files, and :func:`adopt_dead`
        reads only the new one (its closing mark says it replaces the old one; a segment without
        its closing mark was never switched to, and is skipped)."""
        old_path, old_rfd, old_pos = self.path, self._rfd, self.read_pos
        with self._wlock:
            old = self._mm
            end = _seal(old) if old is not None else -1  # (unmapped: appends take this lock)
            copied = _copy(old_rfd, old_pos, old, end)
            first, last = rotation_marks(os.path.basename(old_path)) if carry or copied else (b"", b"")
            path = self._seg_path(self.token, self.seg + 1)
            try:
                fd, mm = self._prepare(path, first + carry + copied + last)
                try:
                    rfd = os.open(path, os.O_RDONLY | _CLOEXEC)
                    try:
                        os.dup2(fd, self.fd, inheritable=False)  # the switch
                    except BaseException:
                        os.close(rfd)
                        raise
                except BaseException:
                    _discard(path, fd, mm)
                    raise
            except BaseException:
                if old is not None:
                    old.seek(end)  # unsealed: appends go on into the old segment
                raise
            os.close(fd)
            self._mm = mm
            self.seg += 1
            self._torn_end = -1
            self._rfd = rfd
            self.read_pos = len(first) + len(carry)  # (the reader has what carry stands for)
            self.carried = self.size()
            with contextlib.suppress(OSError):
                os.unlink(old_path)
            with contextlib.suppress(OSError):
                os.close(old_rfd)
            return len(first)

    def _prepare(self, path: str, data: bytes) -> tuple[int, mmap.mmap | None]:
        """(Under the write lock.) A new segment file holding ``data``, mapped with room to
        grow when the journal maps (else written with ``os.write``): its descriptor and
        mapping. ``OSError`` when it cannot be made (nothing is left behind)."""
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC | _CLOEXEC, 0o600)
        try:
            if self.mapped:
                g = mmap.ALLOCATIONGRANULARITY
                size = -(-(len(data) + _MAP_FIRST) // g) * g
                try:
                    os.posix_fallocate(fd, 0, size)
                    mm = mmap.mmap(fd, size)
                except (OSError, ValueError, OverflowError) as exc:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, 0)
                    self._unmapped(exc)
                else:
                    mm.write(data)
                    return fd, mm
            n = os.write(fd, data) if data else 0
            if n != len(data):
                raise OSError(errno.ENOSPC, f"wrote {n} of {len(data)} bytes")
            return fd, None
        except BaseException:
            _discard(path, fd, None)
            raise

    def close(self, *, delete: bool) -> None:
        """Release ownership (our files become adoptable). ``delete``: everything was settled,
        remove our files. The segment is cut to its data (a file left by a clean exit is exact);
        the write descriptor stays open: a late writer's record lands in the file (``os.write``),
        and ``reopen()`` points the descriptor at a new journal. Deleted, the file is not a place
        for a late record: the next append starts a new journal (ours, adoptable once we die)."""
        if self.closed:
            return
        with self._wlock:
            self.closed = True
            if self._mm is not None:
                self._unmap()
            # (an append after the caller found everything read keeps the file: it is unread)
            delete = delete and self.size() <= self.read_pos
            self._gone = delete
            if delete:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                with contextlib.suppress(OSError):
                    os.unlink(self._lock_path(self.token))
        for fd in (self._rfd, self._lock_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._rfd = self._lock_fd = -1  # closed: never closed again (the numbers get reused)

    def reopen(self) -> None:
        """After ``close()``: a new identity and segment in the same directory."""
        self._open_owner()

    def after_fork(self) -> None:
        """In a forked child: our own identity and files (the parent keeps its lock, journal and
        mapping: the child never writes into the parent's mapping; the inherited descriptors are
        closed in the child only, or re-pointed by ``dup2``). A closed journal (its meter shut
        down) gets nothing: its descriptors were closed already, and their numbers may name other
        files by now (the child's own); ``reopen()`` makes it a new identity if it is used again."""
        self._wlock = threading.RLock()  # a lock another thread held at the fork stays held
        self.reading = False
        self._mm = None  # the parent's mapping: unmapped in the child when its object goes
        if self.closed:
            return
        for fd in (self._rfd, self._lock_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._open_owner()


def _discard(path: str, fd: int, mm: mmap.mmap | None) -> None:
    """A new segment that was never switched to: gone."""
    if mm is not None:
        with contextlib.suppress(Exception):
            mm.close()
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)


def rotation_marks(old: str) -> tuple[bytes, bytes]:
    """The ``M`` marks that open and close a segment made by :meth:`Journal.rotate` from the
    segment file named ``old`` (older versions match their keys to no file): with its closing
    mark, a segment replaces ``old`` whole; without it (a death while it was written), it was
    never switched to."""
    return encode_mark("M", _OPENS + old), encode_mark("M", _REPLACES + old)


_OPENS, _REPLACES = "rotated-from:", "replaces:"


def _seal(mm: mmap.mmap) -> int:
    """Stop appends to the mapping ``mm`` (its position moved to its end: a copy that loaded it
    fails and takes the locked path); returns the end of the data in it."""
    end = mm.tell()
    mm.seek(0, 2)
    if end < len(mm) and mm[end] == MAGIC:  # appended between tell() and seek() (whole copies)
        parsed = parse(mm[end:], end, final=True)
        end += parsed.consumed - parsed.zero_tail
    return end


def _copy(rfd: int, pos: int, mm: mmap.mmap | None, end: int) -> bytes:
    """The usage records of a segment being rotated out, from ``pos`` on, encoded again for the
    next segment (a ``U`` record is copied unpriced: priced when read there; an ``X`` record's
    events as ``E`` records); empty if there are none. ``mm``: its mapping, sealed, its data
    ending at ``end``; ``None``: the file is read from ``rfd``."""
    if mm is not None:
        data = mm[pos:end]
    else:
        data = b""
        with contextlib.suppress(OSError):
            size = os.fstat(rfd).st_size
            data = os.pread(rfd, size - pos, pos) if size > pos else b""
    if not data:
        return b""
    out = []
    for r in parse(data, pos, final=True).records:
        if isinstance(r, (Event, RawUsage)) or (isinstance(r, BatchRec) and r.kind == "P"):
            out.append(_reencode(r, adopted=False))
        elif isinstance(r, Priced):  # a call read and priced, its events not read back yet
            out.extend(_reencode(e, adopted=False) for e in r.events)
    return b"".join(out)


def _reencode(rec: Event | BatchRec | RawUsage, adopted: bool = True) -> bytes:
    if isinstance(rec, RawUsage):
        payload = rec.payload
        if adopted and not rec.flags & U_ADOPTED:
            payload = usage_with_flags(payload, rec.flags | U_ADOPTED)
        return frame(payload)
    blob = key_blob(rec.consumer_id, rec.api_id, rec.metric)
    if isinstance(rec, Event):
        # (an adopted call was counted by the process that made it; our own late one is not yet)
        return encode_event(blob, rec.units, rec.flags & ~EV_CALL if adopted else rec.flags, rec.ts)
    return encode_batch("P", blob, rec.units, rec.n_events, rec.flags, rec.idempotency_key)


class Recovered:
    """What a dead process left undelivered: events never sent, requests to replay as they were,
    and calls' usage never priced (``U`` records without their ``X``)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.requests: list[BatchRec] = []  # kind "P"; flags has B_INFLIGHT when maybe processed
        self.usages: list[RawUsage] = []
        self.bad_bytes = 0
        self.quarantined: list[str] = []

    def encode(self) -> bytes:
        parts: list[Event | BatchRec | RawUsage] = [*self.requests, *self.events, *self.usages]
        return b"".join(_reencode(r) for r in parts)

    @property
    def n_events(self) -> int:
        """The events this holds (a request counts the events it sums; a call's usage, one)."""
        return len(self.events) + sum(r.n_events for r in self.requests) + len(self.usages)

    def add(self, other: Recovered) -> None:
        self.events.extend(other.events)
        self.requests.extend(other.requests)
        self.usages.extend(other.usages)
        self.bad_bytes += other.bad_bytes
        self.quarantined.extend(other.quarantined)


def recover(records: list[Record]) -> Recovered:
    """From one journal segment's records, what is still to deliver (pure)."""
    out = Recovered()
    done: set[str] = set()
    last: dict[str, str] = {}
    batches: list[BatchRec] = []
    pre: dict[str, BatchRec] = {}
    priced: set[int] = set()
    for r in records:
        if isinstance(r, Priced):
            priced.add(r.usage_offset)
        elif isinstance(r, RawUsage):
            continue
        elif isinstance(r, Mark):
            if r.kind == "D":
                done.add(r.idempotency_key)
            else:
                last[r.idempotency_key] = r.kind
        elif isinstance(r, BatchRec):
            if r.kind == "B":
                batches.append(r)
                last[r.idempotency_key] = "B"
            else:
                pre.setdefault(r.idempotency_key, r)
    ranges: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
    for b in batches:
        if not b.flags & B_PREFORMED:
            ranges.setdefault((b.consumer_id, b.api_id, b.metric), []).append((b.lo, b.hi))
        if b.idempotency_key in done or b.idempotency_key in pre:
            continue
        flags = b.flags & ~B_PREFORMED
        if last.get(b.idempotency_key, "B") != "F":
            flags |= B_INFLIGHT
        out.requests.append(b._replace(kind="P", flags=flags, lo=0, hi=0))
    for key, p in pre.items():
        if key in done:
            continue
        state = last.get(key)
        flags = p.flags
        if state is not None and state != "F":
            flags |= B_INFLIGHT
        out.requests.append(p._replace(flags=flags))
    for spans in ranges.values():
        spans.sort()
    for r in records:
        if isinstance(r, RawUsage):
            if r.offset not in priced:
                out.usages.append(r)
            continue
        for e in r.events if isinstance(r, Priced) else (r,) if isinstance(r, Event) else ():
            found = ranges.get((e.consumer_id, e.api_id, e.metric))
            if found and _covered(found, e.offset):
                continue
            out.events.append(e)
    return out


def _covered(spans: list[tuple[int, int]], offset: int) -> bool:
    """``spans`` (sorted, disjoint [lo, hi) ranges) covers ``offset``."""
    i = bisect.bisect_right(spans, (offset, 1 << 63)) - 1
    return i >= 0 and spans[i][0] <= offset < spans[i][1]


def _one_per_key(requests: list[BatchRec], settled: set[str]) -> list[BatchRec]:
    """One request per idempotency key, the last found (a later segment's), none for a key
    settled in any segment: a death inside a compaction leaves a request in the old segment and
    again in the new one, where its settlement is journaled later (see :meth:`Journal.rotate`)."""
    last = {r.idempotency_key: i for i, r in enumerate(requests)}
    if len(last) == len(requests) and not (settled and not settled.isdisjoint(last)):
        return requests
    return [r for i, r in enumerate(requests)
            if last[r.idempotency_key] == i and r.idempotency_key not in settled]


class _DeadFiles:
    """The files of one dead process's journal, read together: its segments, and the files it
    was moving in when it died."""

    def __init__(self) -> None:
        self.markers: set[str] = set()  # M marks of the dead journal itself (files it moved in)
        self.rotations: set[str] = set()  # rotation marks of every file read (see Journal.rotate)
        self.settled: set[str] = set()  # requests settled in any file read (see _one_per_key)
        self.files: list[tuple[str, list[Record]]] = []  # (the file's own name, its records)
        self.damaged: list[str] = []
        self.bad_bytes = 0

    def read(self, path: str, own: bool) -> bool:
        """Read one file (``own``: a segment of the dead journal itself); False if it cannot be."""
        try:
            with open(path, "rb") as f:
                parsed = parse(f.read(), 0, final=True)
        except OSError:
            return False
        for r in parsed.records:
            if isinstance(r, Mark) and r.kind in ("M", "D"):
                if r.kind == "D":
                    self.settled.add(r.idempotency_key)
                elif r.idempotency_key.startswith((_OPENS, _REPLACES)):
                    self.rotations.add(r.idempotency_key)
                elif own:
                    self.markers.add(r.idempotency_key)
        self.files.append((os.path.basename(path).rsplit(".adopting-", 1)[0], parsed.records))
        if parsed.bad_bytes and own:
            self.bad_bytes += parsed.bad_bytes
            self.damaged.append(path)
        return True

    def recover(self) -> Recovered:
        """What the files read hold undelivered. A segment a later one replaces is skipped, and
        so is one a rotation was writing when the process died (its opening mark without its
        closing one: never switched to); one request per key, none settled anywhere."""
        out = Recovered()
        replaced = {k[len(_REPLACES):] for k in self.rotations if k.startswith(_REPLACES)}
        for name, records in self.files:
            if name in replaced:
                continue
            head = records[0] if records else None
            if (isinstance(head, Mark) and head.kind == "M" and head.idempotency_key.startswith(_OPENS)
                    and _REPLACES + head.idempotency_key[len(_OPENS):] not in self.rotations):
                continue
            out.add(recover(records))
        out.requests = _one_per_key(out.requests, self.settled)
        out.bad_bytes += self.bad_bytes
        return out


def _dead_tokens(directory: str, own: str | None) -> Iterator[str]:
    try:
        names = os.listdir(directory)
    except OSError:
        return
    seen = set()
    for name in names:
        if name.endswith(".journal") or name.endswith(".lock"):
            token = name.split(".", 1)[0]
            if token != own and token not in seen:
                seen.add(token)
                yield token


def adopt_dead(directory: str, own: str | None, sink: Journal | None, into: str | None = None) -> Recovered:
    """Take over every journal in ``directory`` whose owner is dead.

    With ``sink`` (our own journal) the dead files are first renamed ``<name>.adopting-<own>``
    (atomic: no other adopter sees them any more), then what they hold undelivered is appended to
    our journal together with one ``M`` mark per file, in a single write, and only then are they
    deleted. If we die in between, whoever adopts us finds the renamed files: a file named by one
    of our ``M`` marks is already in our journal (deleted), any other is adopted again. So a crash
    at any point neither loses nor duplicates a record. A damaged file is renamed aside
    (quarantined) instead of deleted. Without a sink nothing changes on disk: the result only says
    what is pending (for reports).

    ``into``: our own directory when ``directory`` is another one (the unkeyed directory of older
    versions, see ``_paths.legacy_dir``): the dead files are renamed into ours, so that whoever
    adopts us finds them there.
    """
    into_dir = directory if into is None else into
    total = Recovered()
    for token in _dead_tokens(directory, own):
        lock_path = os.path.join(directory, f"{token}.lock")
        try:
            fd = _lock(lock_path)
        except OSError:
            continue
        if fd is None:
            continue  # its owner is alive
        try:
            names = os.listdir(directory)
            segs = sorted(
                (n for n in names if n.startswith(token + ".") and n.endswith(".journal")),
                key=lambda n: int(n.split(".")[1]) if n.split(".")[1].isdigit() else -1)
            # moves the dead process had started (it was adopting someone when it died)
            moves = sorted(n for n in names if n.endswith(f".adopting-{token}"))
            if sink is not None and own is not None:
                renamed = []
                for n in segs:
                    dest = os.path.join(into_dir, f"{n}.adopting-{own}")
                    try:
                        os.rename(os.path.join(directory, n), dest)
                    except OSError:
                        continue
                    renamed.append(dest)
                sources = renamed
            else:
                sources = [os.path.join(directory, n) for n in segs]
            dead = _DeadFiles()
            for path in sources:
                if not dead.read(path, True):
                    total.quarantined.extend(q for q in [quarantine(path)] if q)
            # moves the dead process had started: their files, unless already in its journal
            moved = [name for name in moves if name.rsplit(".adopting-", 1)[0] in dead.markers
                     or dead.read(os.path.join(directory, name), False)]
            found = dead.recover()
            damaged = dead.damaged
            if sink is None:
                total.add(found)
                continue
            origins = [os.path.basename(p).rsplit(".adopting-", 1)[0] for p in sources]
            origins += [n.rsplit(".adopting-", 1)[0] for n in moved]
            blob = found.encode() + b"".join(encode_mark("M", o) for o in origins)
            try:
                sink.append(blob, whole=True)  # ours now (one write, all or nothing), before the dead files go
            except OSError:  # (a full disk) the dead journal stays as it was, for a later pass
                for path in sources:
                    with contextlib.suppress(OSError):
                        os.rename(path, os.path.join(directory, os.path.basename(path).rsplit(".adopting-", 1)[0]))
                raise
            settle_rescues(directory, token, dead.markers)
            for path in [*sources, *(os.path.join(directory, n) for n in moved)]:
                if path in damaged:  # what it held that could be read is copied: "-read"
                    total.quarantined.extend(q for q in [quarantine(path, READ_SUFFIX)] if q)
                    continue
                with contextlib.suppress(OSError):
                    os.unlink(path)
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
            total.add(found)
        finally:
            os.close(fd)
    return total
