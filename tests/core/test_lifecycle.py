"""Lifecycle without loss: `aerostack-meter drain`, init() again during traffic, shutdown() then
use, a stream finalized after the exit flush, hooks that raise anything, the SIGTERM handler, and
retries paced to fit the exit budget. Real processes against a loopback stand-in gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import aerostack_meter as am
from tests.standin import standin_server

KEY = "ac_secret_lifecycle_key"


def env_for(url: str, state: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "AEROSTACK_API_KEY": KEY, "AEROSTACK_API_ID": "api",
            "AEROSTACK_BASE_URL": url, "AEROSTACK_METER_STATE_DIR": str(state), **extra}


def child(code: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env)


DRAIN = """
    import sys
    from aerostack_meter.cli import main
    rc = main(["drain", *sys.argv[1:]])
    heavy = sorted(m for m in sys.modules if m.startswith(("aerostack_meter.servers", "starlette", "uvicorn")))
    assert not heavy, heavy   # the core command never imports the dev servers
    sys.exit(rc)
"""


def drain(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(DRAIN), *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_drain_delivers_what_a_process_that_skipped_its_exit_left(tmp_path: Path) -> None:
    with standin_server() as gw:
        env = env_for(gw.url, tmp_path)
        proc = child("""
            import os, aerostack_meter as am
            am.init(instrument=False, flush_interval=60)
            for i in range(50):
                am.log("usr_%d" % (i % 2), 3)
            os._exit(0)          # no atexit, no flush: what a killed process leaves
        """, env)
        assert proc.returncode == 0, proc.stderr
        assert gw.requests == []
        r = drain(env, "--timeout", "20")
        assert r.returncode == 0, r.stdout + r.stderr
        assert gw.units_by_consumer() == {"usr_0": 75, "usr_1": 75}
        assert "delivered 50 event(s)" in r.stdout
        again = drain(env)
        assert again.returncode == 0 and len(gw.requests) == 2  # nothing left, nothing resent


def test_drain_with_a_refused_key_says_why_and_keeps_the_usage(tmp_path: Path) -> None:
    with standin_server() as gw:
        env = env_for(gw.url, tmp_path)
        proc = child("""
            import os, aerostack_meter as am
            am.init(instrument=False)
            am.log("usr", 4)
            os._exit(0)
        """, env)
        assert proc.returncode == 0, proc.stderr
        gw.respond(*[401] * 20)
        r = drain(env, "--timeout", "2")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "fix AEROSTACK_API_KEY" in r.stdout
        assert "1 event(s) not delivered yet (delivery is paused until the key is fixed)" in r.stdout
        assert "in time" not in r.stdout and KEY not in r.stdout + r.stderr
        assert gw.accepted() == [] and gw.requests
        with gw.lock:
            gw.script.clear()  # the key is accepted again: the same usage goes out, once
        r = drain(env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert gw.units_by_consumer() == {"usr": 4}


def test_drain_exits_1_and_keeps_the_usage_while_the_api_is_down(tmp_path: Path) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = env_for(f"http://127.0.0.1:{port}/v1", tmp_path)
    proc = child("""
        import os, aerostack_meter as am
        am.init(instrument=False)
        am.log("usr", 4)
        os._exit(0)
    """, env)
    assert proc.returncode == 0, proc.stderr
    t0 = time.monotonic()
    r = drain(env, "--timeout", "1")
    assert r.returncode == 1 and "not delivered yet" in r.stdout, r.stdout + r.stderr
    assert time.monotonic() - t0 < 20
    assert list(tmp_path.rglob("*.journal"))  # still on disk for the next try


def test_drain_retry_dead_resends_the_dead_letters(tmp_path: Path) -> None:
    with standin_server() as gw:
        gw.respond((400, {}, b'{"code":"VALIDATION_ERROR","message":"unknown api"}'))
        env = env_for(gw.url, tmp_path)
        proc = child("""
            import aerostack_meter as am
            am.init(instrument=False, flush_interval=0.05)
            am.log("usr", 9)
            assert am.flush(10)
            assert am.stats().dead_lettered == 1
        """, env)
        assert proc.returncode == 0, proc.stderr
        r = drain(env)
        assert r.returncode == 1 and "dead-letter" in r.stdout
        listed = subprocess.run([sys.executable, "-m", "aerostack_meter.cli", "report", "--dead-letters"],
                                capture_output=True, text=True, env=env, timeout=60)
        assert "usr\tapi\tunits\t9\trejected_400\tunknown api" in listed.stdout, listed.stdout + listed.stderr
        r = drain(env, "--retry-dead")
        assert r.returncode == 0, r.stdout + r.stderr
        assert gw.units_by_consumer() == {"usr": 9}
        assert "No dead letters" in subprocess.run(
            [sys.executable, "-m", "aerostack_meter.cli", "report", "--dead-letters"],
            capture_output=True, text=True, env=env, timeout=60).stdout


def test_usage_refused_for_lack_of_funds_is_kept_in_the_state_directory_and_resent(tmp_path: Path) -> None:
    # It used to go to ./aerostack-usage.db in the app's working directory (lost, yet counted as
    # kept, where that is not writable) and nothing could resend it after a top-up.
    with standin_server() as gw:
        gw.respond((402, {}, b'{"code":"INSUFFICIENT_FUNDS","message":"insufficient wallet balance"}'))
        env = env_for(gw.url, tmp_path / "state")
        work = tmp_path / "app"
        work.mkdir()
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent("""
            import aerostack_meter as am
            told = []
            am.init(instrument=False, flush_interval=0.05, on_rejected=lambda ev, why: told.append(ev.units))
            am.log("usr", 9)
            assert am.flush(10)
            s = am.stats()
            assert (s.rejected, dict(s.dropped), s.dead_lettered, told) == (1, {}, 0, [9]), s
        """)], capture_output=True, text=True, timeout=60, env=env, cwd=work)
        assert proc.returncode == 0, proc.stderr
        assert list(work.iterdir()) == []  # nothing written where the app runs
        listed = subprocess.run([sys.executable, "-m", "aerostack_meter.cli", "report", "--dead-letters"],
                                capture_output=True, text=True, env=env, timeout=60)
        assert "usr\tapi\tunits\t9\tinsufficient_funds" in listed.stdout, listed.stdout + listed.stderr
        r = drain(env, "--retry-dead")  # the wallet was topped up: the gateway now accepts it
        assert r.returncode == 0, r.stdout + r.stderr
        assert gw.units_by_consumer() == {"usr": 9}


@pytest.mark.parametrize("durable", ["1", "0"])
def test_four_transient_503s_do_not_cost_a_short_script_its_usage(tmp_path: Path, durable: str) -> None:
    with standin_server() as gw:
        gw.respond(503, 503, 503, 503)
        proc = child("""
            import aerostack_meter as am
            am.init(instrument=False)            # defaults: exit_timeout 2 s, backoff up to 10 s
            am.log("usr", 21)                    # and exit, without flush()
        """, env_for(gw.url, tmp_path, AEROSTACK_METER_DURABLE=durable))
        assert proc.returncode == 0, proc.stderr
        assert gw.units_by_consumer() == {"usr": 21}
        assert len(gw.requests) == 5


def test_init_again_during_traffic_bills_exactly_once(tmp_path: Path) -> None:
    with standin_server() as gw:
        am.init(KEY, api_id="api", base_url=gw.url, instrument=False, flush_interval=0.02)
        stop = threading.Event()
        logged = [0] * 4

        def work(i: int) -> None:
            while not stop.is_set():
                am.log(f"t{i}", 1)
                logged[i] += 1

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        meters = []
        for k in range(5):  # new options each time: a new meter replaces the old one
            time.sleep(0.05)
            meters.append(am.init(KEY, api_id="api", base_url=gw.url, instrument=False,
                                  flush_interval=0.02 + k / 1000))
        stop.set()
        for t in threads:
            t.join()
        for m in meters:
            assert m.flush(10)
        am.shutdown()
        assert gw.units_by_consumer() == {f"t{i}": logged[i] for i in range(4)}


def test_shutdown_then_use_keeps_the_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    with standin_server() as gw:
        m = am.init(KEY, api_id="api", base_url=gw.url, instrument=False, flush_interval=0.02)
        am.log("before", 1)
        assert am.shutdown()
        am.log("after", 2)  # documented: the same meter starts again, same destination
        assert am.get_meter() is m
        assert am.flush(10)
        am.shutdown()
        assert gw.units_by_consumer() == {"before": 1, "after": 2}
    assert not (tmp_path / "aerostack-usage.db").exists()  # never a silent switch to a ledger
    assert "used after shutdown()" in caplog.text


def test_a_stream_finalized_after_the_exit_flush_still_bills(tmp_path: Path, mock_llm: Any) -> None:
    with standin_server() as gw:
        env = env_for(gw.url, tmp_path)
        proc = child(f"""
            import openai, aerostack_meter as am
            am.init(default_consumer_id="streamer")
            client = openai.OpenAI(base_url={mock_llm.url!r}, api_key="sk-mock")
            STREAM = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{{"role": "user", "content": "hello there"}}], stream=True)
            next(iter(STREAM))   # left unfinished: its finalizer runs after the exit flush
        """, env)
        assert proc.returncode == 0, proc.stderr
        r = drain(env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert gw.units_by_consumer().get("streamer", 0) > 0  # estimated, billed, not lost


class Boom(BaseException):
    """Not an Exception: a hook that raises it must still cost only its own record."""


@pytest.mark.parametrize("durable", [True, False])
def test_a_hook_raising_a_base_exception_costs_one_record(tmp_path: Path, durable: bool) -> None:
    def hook(ev: am.UsageEvent) -> am.UsageEvent:
        if ev.consumer_id == "bad":
            raise Boom()
        return ev

    def policy(u: am.Usage) -> dict[str, int]:
        if u.model == "explode":
            raise Boom()
        return {"tokens": u.total_tokens}

    from aerostack_meter._context import Attribution

    with standin_server() as gw:
        m = am.Meter(KEY, api_id="api", base_url=gw.url, before_send=hook, durable=durable,
                     flush_interval=0.02, state_dir=str(tmp_path))
        m.log("good", 1)
        m.log("bad", 1)
        m.record(am.Usage("openai", "explode", 1, 1, 2), Attribution("good", "api", policy))
        m.record(am.Usage("openai", "fine", 1, 1, 2), Attribution("good", "api", policy))
        m.log("good", 1)
        assert m.flush(10)
        st = m.stats()
        m.shutdown()
    assert gw.units_by_consumer() == {"good": 4}
    assert dict(st.dropped) == {"before_send_error": 1, "policy_error": 1}


def test_the_sigterm_handler_takes_no_lock_and_keeps_the_meter_open(tmp_path: Path) -> None:
    with standin_server() as gw:
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
            import signal, sys, time, aerostack_meter as am
            got = []
            signal.signal(signal.SIGTERM, lambda s, f: got.append(s))  # the app's graceful handler
            am.init(instrument=False, handle_sigterm=True, flush_interval=30)
            print("ready", flush=True)
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                am.stats(); am.log("usr", 1); am.stats()   # the signal lands inside these
            am.log("usr", 1000)                  # recorded during the graceful shutdown: kept
            print("alive", len(got), flush=True)
        """)], stdout=subprocess.PIPE, text=True, env=env_for(gw.url, tmp_path))
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "alive 1" in out  # no deadlock; the app's handler ran
        total = gw.units_by_consumer()["usr"]
        assert total > 1000  # everything, including what came after the signal


@pytest.mark.parametrize("durable", [True, False])
def test_flush_and_stats_cover_a_stream_in_flight_across_init(meter_factory: Any, gateway: Any, mock_llm: Any,
                                                              caplog_meter: pytest.LogCaptureFixture,
                                                              durable: bool) -> None:
    """A stream begun under one meter and ended after init() replaced it is billed by the meter
    it began with; the process-wide flush() must deliver it and stats() must count it pending
    (not only that meter's own background thread, or the exit hook: a killed worker loses it)."""
    import openai

    mock_llm.reset()
    meter_factory(default_consumer_id="early", durable=durable, flush_interval=60)
    client = openai.OpenAI(base_url=mock_llm.url, api_key="sk-mock", max_retries=0)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                            stream=True, extra_headers={"x-mock-consumer": "early"})
    chunks = iter(stream)
    next(chunks)
    new = meter_factory(default_consumer_id="late", durable=durable, flush_interval=60)
    for _ in chunks:
        pass
    client.close()
    assert am.stats().pending >= 1  # held by the replaced meter (its interval: a minute)
    assert new.stats().pending == 0
    assert am.flush(10)
    assert am.stats().pending == 0
    served = mock_llm.usage()["by_consumer"]["early"]["total_tokens"]
    assert served > 0
    assert gateway.client.totals_by_consumer() == {"early": served}  # delivered by flush(), once
    assert "the meter it began with bills it" in caplog_meter.text
    assert "used after shutdown()" not in caplog_meter.text  # the user never called shutdown()
