"""The fork mark: 1 in the process that made it, 0 in every child however it forked, asked without a
system call on Linux (a page the kernel wipes on fork)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from aerostack_meter import Meter
from aerostack_meter._forkmark import _PidMark, mark

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_WIPEONFORK is Linux's")
forks = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _in_child(read: object) -> int:
    """What ``read()`` returns in a child made by os.fork (its exit status)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            code = int(read())  # type: ignore[operator]
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@forks
@pytest.mark.parametrize("make", [mark, _PidMark], ids=["page", "pid"])
def test_a_mark_reads_one_here_zero_in_a_child_and_rearms(make: object) -> None:
    m = make()  # type: ignore[operator]
    assert m[0] == 1
    assert _in_child(lambda: m[0]) == 0

    def rearmed() -> int:
        m[0] = 1
        return 10 + m[0]

    assert _in_child(rearmed) == 11
    assert m[0] == 1  # the child's re-arming is its own


@linux
def test_on_linux_the_mark_is_a_page_not_the_pid() -> None:
    assert not isinstance(mark(), _PidMark)


@linux
def test_a_recorded_call_makes_no_getpid_call(tmp_path: Path) -> None:
    m = Meter("ac_secret_forkmark", api_id="api", base_url="http://127.0.0.1:9", state_dir=str(tmp_path),
              flush_interval=60)
    try:
        m.log("warm", 1)  # goes live: starts the reporter
        seen: list[str] = []

        def profile(frame: object, event: str, arg: object) -> None:
            if event == "c_call":
                seen.append(getattr(arg, "__name__", ""))

        sys.setprofile(profile)
        try:
            m.log("usr", 3)
        finally:
            sys.setprofile(None)
        assert "getpid" not in seen, seen
        assert seen  # the profile hook did see the record's C calls
    finally:
        m.shutdown(0.1)
