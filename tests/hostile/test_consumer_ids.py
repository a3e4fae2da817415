"""Consumer ids that are empty, very long, or full of Unicode, given by a scope or a resolver.

What can be billed arrives byte-exact under its id; what cannot (empty, not encodable as UTF-8)
is counted and logged once, never raised into the LLM call, never written into the spool, and
never holds up the other consumers' usage.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import aerostack_meter as am

from ._support import chat, clients, expected, make_meter, records, spool_is_sound

BILLABLE = {
    "long": "c" * 65_536,
    "unicode": "用户-🙂-\u202eRTL-e\u0301-\u200d-\U0001f468\u200d\U0001f469",
    "nul": "a\x00b",
    "controls": "line\nbreak\ttab\r",
    "quotes": '"},{"consumerId":"evil"',
}


def _call(oc: Any, tag: str) -> None:
    # HTTP headers cannot carry every id (NUL, newlines, non-ASCII, 64 KiB): the mock LLM tallies
    # under a short tag per id instead.
    oc.chat.completions.create(model="gpt-4o-mini",
                               messages=[{"role": "user", "content": "hello hostile world"}],
                               extra_headers={"x-mock-consumer": tag})


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
@pytest.mark.parametrize("via", ["scope", "resolver"])
def test_billable_ids_arrive_exactly(servers: tuple[Any, Any], via: str, spool: bool, tmp_path: Path) -> None:
    gw, llm = servers
    current: dict[str, str] = {}
    options: dict[str, Any] = {"spool_path": str(tmp_path / "spool.db")} if spool else {"durable": False}
    if via == "resolver":
        options["consumer_resolver"] = lambda: current["id"]
    m = make_meter(gw, **options)
    oc, _ = clients(llm, m)
    for tag, cid in BILLABLE.items():
        current["id"] = cid
        for _ in range(2):
            if via == "scope":
                with am.consumer(cid):
                    _call(oc, tag)
            else:
                _call(oc, tag)
    assert m.flush(10)
    st = m.stats()
    m.shutdown()
    tally = expected(llm)
    assert gw.client.totals_by_consumer() == {cid: tally[tag] for tag, cid in BILLABLE.items()}
    assert st.dropped == {} and st.internal_errors == 0 and st.missing_consumer == 0
    if spool:
        assert spool_is_sound(str(tmp_path / "spool.db")) == 0


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
def test_empty_ids_are_not_billed_counted_and_logged_once(
        servers: tuple[Any, Any], spool: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gw, llm = servers
    options: dict[str, Any] = {"spool_path": str(tmp_path / "spool.db")} if spool else {"durable": False}
    answers = iter(["", "   ", None, 42] * 2)
    m = make_meter(gw, consumer_resolver=lambda: next(answers), **options)
    oc, _ = clients(llm, m)
    for _ in range(8):  # the call itself never fails
        r = oc.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert r.usage.total_tokens > 0
    with pytest.raises(am.ConfigError):  # an empty scope is a programming error, raised at once
        am.consumer("")
    assert m.flush(5)
    st = m.stats()
    m.shutdown()
    assert gw.client.totals_by_consumer() == {}
    assert st.missing_consumer == 8
    assert len(records(caplog, "has no consumer")) == 1
    if spool:
        assert spool_is_sound(str(tmp_path / "spool.db")) == 0


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
def test_an_id_that_is_not_valid_unicode_is_dropped_without_holding_up_the_others(
        servers: tuple[Any, Any], spool: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gw, llm = servers
    options: dict[str, Any] = {"spool_path": str(tmp_path / "spool.db")} if spool else {"durable": False}
    m = make_meter(gw, max_backoff=5.0, **options)  # a retried poison batch would show as a stall
    oc, _ = clients(llm, m)
    bad = "usr_\udc80"  # a lone surrogate, as surrogateescape makes of undecodable bytes
    for i in range(6):
        with am.consumer(bad):
            r = oc.chat.completions.create(model="gpt-4o-mini",
                                           messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"x-mock-consumer": "bad"})
        assert r.usage.total_tokens > 0
        chat(oc, f"usr_ok{i % 2}")
    t0 = time.monotonic()
    assert m.flush(10)
    assert time.monotonic() - t0 < 3
    st = m.stats()
    m.shutdown()
    good = {c: u for c, u in expected(llm).items() if c != "bad"}
    assert gw.client.totals_by_consumer() == good
    assert sum(st.dropped.values()) == 6 and set(st.dropped) == {"unencodable"}
    assert st.internal_errors == 0
    assert len(records(caplog, "unencodable")) == 1
    if spool:
        assert spool_is_sound(str(tmp_path / "spool.db")) == 0
