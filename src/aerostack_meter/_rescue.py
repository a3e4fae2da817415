"""Usage an older aerostack-meter could not read, rescued from the journal files it quarantined.

A version that predates the raw-usage records (``U`` and ``X``: ``metrics="cost"`` priced on the
delivery side, see ``_deferred``) and adopts a journal holding them cannot parse them: it delivers
the rest and renames the file aside (``<name>.corrupt-<time>-<pid>``, a warning, counted). What only
a newer version can read is still in that file: calls never priced (a ``U`` without its ``X``) and
priced events never delivered (an ``X`` no request covers). This module copies exactly those into
the live journal, once; everything else in the file was the older adopter's to deliver.

Claim, copy, settle: the file is renamed ``<name>.rescuing-<token>`` (atomic: one rescuer), the
records are appended to our journal with an ``M`` mark naming the file, in one write, then the file
is renamed ``<name>.rescued`` (kept for inspection). A rescuer that dies in between is adopted like
any dead process (``settle_rescues``): its journal's ``M`` mark says whether the copy happened (the
file is settled) or not (renamed back, rescued again). Files this version quarantines end in
``-read`` (everything readable in them was copied when adopting): they are never rescued.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable

from ._journal_format import Event, Priced, RawUsage, encode_mark, parse
from ._log import log_once

__all__ = ["READ_SUFFIX", "rescue_quarantined", "settle_rescues"]

READ_SUFFIX = "-read"
_DONE = ".rescued"
_CLAIM = ".rescuing-"


def _unread_by_older(path: str) -> list[Event | RawUsage] | None:
    """What an older reader could not deliver from the file at ``path`` (None: unreadable)."""
    from ._journal import recover

    try:
        with open(path, "rb") as f:
            records = parse(f.read(), 0, final=True).records
    except OSError:
        return None
    rec = recover(records)
    priced_at = {r.offset for r in records if isinstance(r, Priced)}
    return [*rec.usages, *(e for e in rec.events if e.offset in priced_at)]


def rescue_quarantined(directory: str, own: str, append: Callable[[bytes], None],
                       seen: set[tuple[str, int]], into: str | None = None) -> int:
    """Copy what older readers left in quarantined journal files into our journal (``append``:
    one write of bytes). ``seen``: files already found to hold nothing of the kind (by name and
    size, so each is read once). ``into``: our directory when ``directory`` is another one (the
    claimed file moves there, where whoever adopts us settles it). Returns the records copied."""
    from ._journal import _reencode

    copied = 0
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return 0
    for name in names:
        if (".journal" not in name or ".corrupt-" not in name or name.endswith((READ_SUFFIX, _DONE))
                or _CLAIM in name):
            continue
        path = os.path.join(directory, name)
        try:
            size = os.stat(path).st_size
        except OSError:
            continue
        if (name, size) in seen:
            continue
        if not _unread_by_older(path):
            seen.add((name, size))
            continue
        claimed = os.path.join(directory if into is None else into, f"{name}{_CLAIM}{own}")
        try:
            os.rename(path, claimed)
        except OSError:
            continue  # another process claimed it first
        items = _unread_by_older(claimed) or []
        try:
            append(b"".join(_reencode(r) for r in items) + encode_mark("M", name))
        except OSError:
            with contextlib.suppress(OSError):
                os.rename(claimed, path)  # not copied: left for the next attempt
            raise
        with contextlib.suppress(OSError):
            os.rename(claimed, claimed[:-len(_CLAIM + own)] + _DONE)
        copied += len(items)
        log_once(f"rescued:{name}", logging.WARNING,
                 "aerostack_meter: %d record(s) an older aerostack-meter could not read were taken "
                 "from the file it quarantined (%s) and are delivered now", len(items), path)
    return copied


def settle_rescues(directory: str, token: str, markers: set[str]) -> None:
    """A dead process's rescues: done (its journal names the file: ``.rescued``) or not (the file
    gets its name back, to be rescued again)."""
    suffix = _CLAIM + token
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.endswith(suffix):
            origin = name[:-len(suffix)]
            dest = origin + _DONE if origin in markers else origin
            with contextlib.suppress(OSError):
                os.rename(os.path.join(directory, name), os.path.join(directory, dest))
