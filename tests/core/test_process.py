"""Exit, fork and subprocess behaviour of the reporter, against a real loopback stand-in."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from aerostack_meter import Meter
from tests.standin import standin_server

KEY = "ac_secret_process_key"


def run_child(code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_exit_without_flush_delivers_everything() -> None:
    with standin_server() as gw:
        proc = run_child(f"""
            import aerostack_meter as am
            am.init({KEY!r}, api_id="api", base_url={gw.url!r}, flush_interval=5.0, instrument=False)
            for i in range(1000):
                am.log("usr_%d" % (i % 4), 1)
        """)
        assert proc.returncode == 0, proc.stderr
        assert gw.units_by_consumer() == {f"usr_{i}": 250 for i in range(4)}


def test_exit_with_the_gateway_down_stays_within_the_budget() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import atexit, time, aerostack_meter as am
        # registered first, so it runs after the meter's exit hook: the hook's time alone, without
        # the interpreter's own teardown (slow on a loaded machine)
        atexit.register(lambda: print("exit hook done", time.monotonic(), flush=True))
        am.init({KEY!r}, api_id="api", base_url="http://127.0.0.1:{port}/v1", exit_timeout=1.0,
                instrument=False)
        am.log("usr", 5)
        print("exiting", time.monotonic(), flush=True)
    """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    (_, started), (*_, done) = (line.split() for line in out.splitlines())
    elapsed = float(done) - float(started)
    assert elapsed < 1.0 + 0.5, elapsed


def test_exit_with_nothing_recorded_starts_no_sender_thread() -> None:
    # durable (default): one reporter thread, which adopts what dead processes leave; no senders
    # until there is something to send. durable=False: no thread at all.
    proc = run_child("""
        import threading, aerostack_meter as am
        am.init("k", api_id="a", base_url="http://127.0.0.1:9/v1", instrument=False)
        am.flush(1)
        print(sorted(t.name for t in threading.enumerate() if t.name.startswith("aerostack")))
        m = am.Meter("k", api_id="a", base_url="http://127.0.0.1:9/v1", durable=False)
        m.flush(1)
        print(threading.active_count())
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["['aerostack-meter-reporter']", "2"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_and_parent_events_each_arrive_once() -> None:
    with standin_server() as gw:
        m = Meter(KEY, api_id="api", base_url=gw.url, flush_interval=0.3)
        m.log("parent", 5)  # pending in the parent at fork time
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                m.log("child", 7)
                code = 0 if m.flush(5) else 3
            except BaseException:
                code = 4
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert m.flush(5)
        m.shutdown()
        assert gw.units_by_consumer() == {"parent": 5, "child": 7}
        assert len(gw.accepted()) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_other_threads_hold_locks_does_not_deadlock() -> None:
    with standin_server() as gw:
        m = Meter(KEY, api_id="api", base_url=gw.url, flush_interval=0.01)
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                m.log("busy", 1)
                m.stats()

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for _ in range(10):
                pid = os.fork()
                if pid == 0:
                    m.log("forked", 1)
                    os._exit(0 if m.flush(5) else 3)
                deadline = time.monotonic() + 10
                while True:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        assert os.waitstatus_to_exitcode(status) == 0
                        break
                    assert time.monotonic() < deadline, "forked child deadlocked"
                    time.sleep(0.01)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert m.flush(10)
        m.shutdown()
        assert gw.units_by_consumer()["forked"] == 10


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("url", ["gateway", "refused"])
def test_fork_while_a_delivery_thread_imports_does_not_hang_the_child(url: str) -> None:
    # A first import holds that module's lock; a child forked meanwhile inherits the lock with no
    # owner, and hangs on its own first use of the module. Our delivery threads import lazily on
    # their first send (httpx imports httpcore; a connection loads the idna codec). Here the first
    # import made by one of our threads is slowed (a real meta-path finder that sleeps while the
    # module's import lock is held), and the fork lands inside it, every time.
    with standin_server() as gw:
        base = gw.url if url == "gateway" else "http://127.0.0.1:9/v1"
        proc = run_child(f"""
            import importlib.abc, os, sys, threading, time
            importing = threading.Event()

            class Slow(importlib.abc.MetaPathFinder):
                def find_spec(self, name, path, target=None):
                    if (threading.current_thread().name.startswith("aerostack")
                            and not importing.is_set()):
                        importing.set()
                        time.sleep(0.5)  # with this module's import lock held
                    return None  # the usual finders go on

            import aerostack_meter as am
            sys.meta_path.insert(0, Slow())
            m = am.Meter({KEY!r}, api_id="api", base_url={base!r}, flush_interval=0.01)
            m.log("parent", 2)
            assert importing.wait(20), "no delivery thread imported anything"
            pid = os.fork()
            if pid == 0:
                sys.meta_path.pop(0)
                m.log("child", 3)
                m.flush(2 if {url!r} == "refused" else 15)
                # the child's own delivery ran: it sent, or it tried and failed
                s = m.stats()
                os._exit(0 if s.events_sent + s.retries else 3)
            deadline = time.monotonic() + 25
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    sys.exit("the child hung")
                time.sleep(0.02)
            assert os.waitstatus_to_exitcode(status) == 0, status
            if {url!r} == "gateway":
                assert m.flush(15)
            m.shutdown(0.1)
        """, timeout=60)
        assert proc.returncode == 0, proc.stderr
        if url == "gateway":
            assert gw.units_by_consumer() == {"parent": 2, "child": 3}


def test_sigterm_handler_flushes_then_chains() -> None:
    with standin_server() as gw:
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import signal, sys, time, aerostack_meter as am
            def previous(signum, frame):
                print("previous handler ran", flush=True)
                sys.exit(0)
            signal.signal(signal.SIGTERM, previous)
            am.init({KEY!r}, api_id="api", base_url={gw.url!r}, flush_interval=30, handle_sigterm=True,
                    instrument=False)
            am.log("usr", 9)
            print("ready", flush=True)
            time.sleep(30)
        """)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
        assert "previous handler ran" in out
        assert proc.returncode == 0
        assert gw.units_by_consumer() == {"usr": 9}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libc fork via ctypes")
def test_fork_that_skips_python_fork_hooks_is_caught_by_the_pid_check() -> None:
    # uWSGI-style servers fork from C without running Python's at-fork hooks: the child still
    # holds the parent's reporter state. The pid check on enqueue must reset it.
    with standin_server() as gw:
        proc = run_child(f"""
            import ctypes, os, aerostack_meter as am
            m = am.Meter({KEY!r}, api_id="api", base_url={gw.url!r}, flush_interval=0.3)
            m.log("parent", 5)                     # pending in the parent at fork time
            libc = ctypes.PyDLL(None)              # PyDLL: keep the GIL across the call
            pid = libc.fork()                      # no PyOS_AfterFork_Child, no hooks
            if pid == 0:
                m.log("child", 7)
                os._exit(0 if m.flush(5) else 3)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status
            assert m.flush(5)
            m.shutdown()
            print("ok")
        """)
        assert proc.returncode == 0, proc.stderr
        assert gw.units_by_consumer() == {"parent": 5, "child": 7}
        assert len(gw.accepted()) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_after_shutdown_closes_none_of_the_childs_files(tmp_path: Path) -> None:
    """A meter shut down before the fork (still alive: its at-fork hook runs in the child) closed its
    journal's descriptors; their numbers are free, and the next files opened take them. The child's
    hook must leave them alone, and make no files for the closed journal: closing a number twice
    closes whatever file has it now (here the pipe the child reports through)."""
    with standin_server() as gw:
        m = Meter(KEY, api_id="api", base_url=gw.url, state_dir=str(tmp_path), flush_interval=0.05)
        m.log("before", 3)
        assert m.flush(5)
        m.shutdown()
        before = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
        r, w = os.pipe()  # the lowest free numbers: the journal's closed ones
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.close(r)
                os.write(w, b"child ok")
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            said = f.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert said == b"child ok"
        assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == before
        m.log("after", 4)  # a shut-down meter starts again when used (a new journal)
        assert m.flush(5)
        m.shutdown()
        assert gw.units_by_consumer() == {"before": 3, "after": 4}


_STREAM_ACROSS_FORK = """
    import ctypes, os, sys, aerostack_meter as am
    from openai import OpenAI
    am.init(flush_interval=0.2)
    client = OpenAI(api_key="x", base_url=os.environ["LLM_URL"])
    with am.consumer("across"):
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hello big wide world"}], stream=True,
            extra_headers={"x-mock-consumer": "across"})
        it = iter(stream)
        next(it)                                # open, one chunk read, when the process forks
    how = sys.argv[1]
    pid = ctypes.PyDLL(None).fork() if how == "c" else os.fork()
    if pid == 0:                                # the child ends its copy of the parent's stream
        if how == "c":                          # a C fork (no at-fork hooks): closed by hand
            stream.close()
            os._exit(0)
        sys.exit(0)                             # os.fork: the exit hook ends open streams
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    for _ in it:                                # the parent reads it to the end: exact
        pass
    assert am.flush(10)
    st = am.stats()
    print("estimated", st.events_estimated, "metered", st.calls_metered)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("how", ["os", pytest.param("c", marks=pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="libc fork via ctypes"))])
def test_a_stream_open_across_a_fork_is_billed_once_by_the_parent(tmp_path: Path, how: str) -> None:
    """A child forked while a metered stream is open holds a copy of it: ending that copy (the
    child's exit hook for open streams, or the child closing it) must not bill it a second time,
    as an estimate: the stream is the parent's, which bills it exactly when it ends."""
    from aerostack_meter.servers import start_gateway, start_mock_llm

    gw, llm = start_gateway(keys=[KEY]), start_mock_llm()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_STREAM_ACROSS_FORK), how], capture_output=True, text=True,
            timeout=60, env={**os.environ, "AEROSTACK_API_KEY": KEY, "AEROSTACK_API_ID": "api",
                             "AEROSTACK_BASE_URL": gw.url, "AEROSTACK_METER_STATE_DIR": str(tmp_path),
                             "LLM_URL": llm.url})
        assert proc.returncode == 0, proc.stderr
        assert "estimated 0 metered 1" in proc.stdout, proc.stdout
        served = llm.usage()["by_consumer"]["across"]["total_tokens"]
        deadline = time.monotonic() + 10
        while gw.client.totals_by_consumer() != {"across": served} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.client.totals_by_consumer() == {"across": served}
        assert len(gw.client.log()) == 1
    finally:
        gw.stop()
        llm.stop()


@pytest.mark.timeout(90)
def test_an_apps_signal_handler_may_shut_the_meter_down_inside_stats() -> None:
    """An application's own SIGTERM handler that calls ``am.shutdown()``: Python runs it in the main
    thread between two bytecodes, here inside ``stats()``, whose ``pending`` holds the reporter's
    lock while it sums the requests waiting to retry (the gateway is down). The shutdown takes that
    lock again on the same thread: it must not deadlock (a reentrant lock). The handler ignores a
    signal that lands elsewhere; the test signals until one lands there."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import linecache, signal, sys, time, aerostack_meter as am
        am.init({KEY!r}, api_id="api", base_url="http://127.0.0.1:{port}/v1", flush_interval=0.05,
                exit_timeout=1.0, instrument=False)
        for i in range(5000):  # a key each: 5,000 requests wait to retry, summed by each stats()
            am.log("usr_%d" % i, 1)
        t0 = time.monotonic()
        while am.stats().retries < 1000 and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        def handler(signum, frame):
            # (where pending sums the requests: under the reporter's lock)
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
            if not (frame.f_code.co_filename.endswith("_reporter.py") and "self._unsettled" in line):
                return  # not inside the lock: wait for the next signal
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # (the test signals until the process ends)
            ok = am.shutdown(0.2)
            print("shut down", ok, am.stats().pending, flush=True)
            sys.exit(3)
        signal.signal(signal.SIGTERM, handler)
        print("ready", am.stats().retries, flush=True)
        while True:
            am.stats()
    """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        assert ready[:1] == ["ready"] and int(ready[1]) >= 1000, ready
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < 20:
            proc.terminate()
            time.sleep(0.1)
        try:
            out, err = proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("the handler's shutdown() deadlocked inside stats()")
    assert proc.returncode == 3, err
    assert out.split()[:3] == ["shut", "down", "False"], out
    assert int(out.split()[3]) == 5000  # all of it left in the journal for the next start
