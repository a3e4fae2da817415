"""The harness itself: what a cell compares must be everything the workload printed."""

from __future__ import annotations

import sys

import pytest

from ._harness import finish, read_until, spawn

# 100 JSON lines (about 2.5 KiB, under PIPE_BUF) in ONE write: they all sit in the pipe when the
# parent reads the first one, as on a loaded machine where the reader falls behind the workload.
BURST = (
    "import json, os\n"
    "os.write(1, ''.join(json.dumps({'done': 'usr_a', 'units': i}) + '\\n' for i in range(100)).encode())\n"
)


@pytest.mark.timeout(60)
def test_lines_read_ahead_by_read_until_still_reach_finish() -> None:
    # P3 and P3b read the first lines of a workload, kill it, then take the rest with finish():
    # a line read ahead into a buffer and dropped made "printed" short of what the process did.
    proc = spawn([sys.executable, "-c", BURST])
    assert proc.stdout is not None
    first = read_until(proc.stdout, lambda ls: len(ls) >= 3, 30)
    assert [x["units"] for x in first] == [0, 1, 2]
    r = finish(proc, 30, first)
    assert r.returncode == 0, r.stderr
    assert [x["units"] for x in r.lines] == list(range(100))
