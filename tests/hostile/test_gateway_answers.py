"""A billing API that answers badly: HTML, invalid JSON, an empty 200, a 2 GiB body, or nothing.

None of it reaches the user's LLM call; each is counted in ``stats()`` and logged once; the spool
stays sound and drains. A 2xx is final (a retry could double a processed request): the odd body
is counted in ``odd_responses``, never retried. Only a read timeout (a slow answer under load) is
retried, and that retry is ambiguous (docs/reliability.md): the totals are exact net of duplicates,
and duplicates never outnumber ``ambiguous_retries``.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import pytest

from ..matrix._harness import ledger
from ._support import chat, clients, expected, make_meter, records, spool_is_sound

ODD = ("html", "invalid_json", "empty", "huge")
TWO_GIB = 2 * 1024**3


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
@pytest.mark.parametrize("mode", ODD)
def test_a_processed_request_answered_oddly_counts_as_delivered_once(
        servers: tuple[Any, Any], mode: str, spool: bool, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    gw, llm = servers
    gw.client.set_faults(bad_body=mode, bad_body_commits=True, huge_bytes=TWO_GIB)
    options: dict[str, Any] = {"spool_path": str(tmp_path / "spool.db")} if spool else {"durable": False}
    m = make_meter(gw, **options)
    oc, _ = clients(llm, m)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    for i in range(6):
        r = chat(oc, f"usr_{i % 2}")
        assert r.usage.total_tokens > 0  # the user's call is untouched
        assert m.flush(15)  # one request per call: several odd answers
    elapsed = time.monotonic() - t0
    st = m.stats()
    m.shutdown()
    book = ledger(gw.client)
    assert book.net == expected(llm)  # exact, net of what an ambiguous retry may have doubled
    assert book.excess_rows <= st.ambiguous_retries
    assert st.retries == st.ambiguous_retries  # an odd 2xx is final; only a timeout is retried
    assert st.dropped == {} and st.internal_errors == 0
    assert st.requests_sent == 6 and st.odd_responses == 6
    assert len(records(caplog, "answered oddly")) == 1  # logged once, counted every time
    if mode == "huge":  # at most 64 KiB read of each 2 GiB answer
        assert elapsed < 20
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200 * 1024  # KiB
    if spool:
        assert spool_is_sound(str(tmp_path / "spool.db")) == 0


def test_an_html_200_from_something_that_did_not_process_it_is_counted_not_retried(
        servers: tuple[Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    """A proxy or a wrong base_url answering 200 with a web page: the usage is gone, and the
    only trace is ``odd_responses`` and one warning. Documented in docs/reliability.md."""
    gw, llm = servers
    gw.client.set_faults(bad_body="html", bad_body_commits=False)
    m = make_meter(gw)
    oc, _ = clients(llm, m)
    chat(oc, "usr_lost")
    assert m.flush(5)
    st = m.stats()
    m.shutdown()
    assert gw.client.totals_by_consumer() == {}
    assert st.odd_responses == 1 and st.retries == 0
    assert len(records(caplog, "answered oddly", "unparseable_response")) == 1


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
def test_a_gateway_that_never_answers_costs_the_caller_nothing_and_loses_nothing(
        servers: tuple[Any, Any], spool: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gw, llm = servers
    gw.client.set_faults(bad_body="hang")
    options: dict[str, Any] = {"spool_path": str(tmp_path / "spool.db")} if spool else {"durable": False}
    m = make_meter(gw, read_timeout=0.3, **options)
    oc, _ = clients(llm, m)
    for i in range(4):
        t0 = time.monotonic()
        chat(oc, f"usr_{i % 2}")
        assert time.monotonic() - t0 < 2  # the LLM call never waits for the billing API
    t0 = time.monotonic()
    assert m.flush(1.0) is False
    assert time.monotonic() - t0 < 1.6
    st = m.stats()
    assert st.ambiguous_retries >= 1  # a read timeout after sending: may have been processed
    assert st.pending == 4
    gw.client.clear_faults()
    assert m.flush(15)
    st = m.stats()
    m.shutdown()
    assert gw.client.totals_by_consumer() == expected(llm)
    assert gw.client.duplicates() == {}  # the hang never processed anything
    assert st.dropped == {} and st.internal_errors == 0
    assert len(records(caplog, "delivery failed", "ReadTimeout")) == 1
    if spool:
        assert spool_is_sound(str(tmp_path / "spool.db")) == 0
