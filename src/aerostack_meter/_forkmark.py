"""Whether this is still the process an object was made in, asked without a system call.

A meter asks on every metered call whether the process forked since it last looked (a forked child
holds the parent's reporter state, and a server may fork from C without running Python's at-fork
hooks: uWSGI's workers). ``os.getpid()`` answers it with a system call per call (~0.3 µs, and a
kernel entry between the SDK's parts); on Linux a page that the kernel wipes in every child
(``madvise(MADV_WIPEONFORK)``, Linux 4.14+) answers it with a read of one byte: ``mark[0]`` is 1 in
the process that made the mark and 0 in any child forked from it, however it forked (``os.fork``,
``multiprocessing``, a C ``fork()``). Elsewhere the mark asks ``os.getpid()``.
"""

from __future__ import annotations

import mmap
import os
import sys
from typing import Protocol

__all__ = ["Mark", "mark"]

# The constant is Linux's (include/uapi/asm-generic/mman-common.h); Python names it from 3.12 on.
_WIPEONFORK: int | None = getattr(mmap, "MADV_WIPEONFORK", 18 if sys.platform.startswith("linux") else None)


class Mark(Protocol):
    """``mark[0]``: 1 in the process that made (or last re-armed) the mark, 0 in a child forked
    from it; ``mark[0] = 1`` re-arms it in the child."""

    def __getitem__(self, index: int, /) -> int: ...

    def __setitem__(self, index: int, value: int, /) -> None: ...


class _PidMark:
    """The mark where no page can be wiped on fork: the process id, asked on every read."""

    __slots__ = ("_pid",)

    def __init__(self) -> None:
        self._pid = os.getpid()

    def __getitem__(self, index: int, /) -> int:
        return 1 if os.getpid() == self._pid else 0

    def __setitem__(self, index: int, value: int, /) -> None:
        self._pid = os.getpid()


def mark() -> Mark:
    """A new mark, armed (``mark[0] == 1``): one private anonymous page wiped on fork (4 KiB,
    unmapped with the object), or, where the kernel or platform has no such page, the pid."""
    if _WIPEONFORK is not None:
        try:
            page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            page.madvise(_WIPEONFORK)  # EINVAL before Linux 4.14
            page[0] = 1
            return page
        except (OSError, ValueError, AttributeError):
            pass
    return _PidMark()
