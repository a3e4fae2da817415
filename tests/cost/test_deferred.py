"""metrics="cost" with the durable journal: the caller journals the call's raw usage (a ``U``
record) and the delivery side prices it (an ``X`` record: the events and the mark in one record).
Real SDK calls against the mock LLM server, real child processes killed with SIGKILL, the gateway
emulator counting what is billed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest

import aerostack_meter as am
from aerostack_meter import Usage
from aerostack_meter._journal_format import (
    EV_CALL,
    EV_PRICED,
    Mark,
    Priced,
    RawUsage,
    encode_priced,
    parse,
)

from ..conftest import API_ID, API_KEY
from .test_docs import _rows

SONNET = "claude-sonnet-4-5"  # $3 in, $15 out per MTok: 1000 in + 200 out = 6000 µUSD
PROMPT = [{"role": "user", "content": " ".join(["w"] * 997)}]  # 1000 input tokens at the mock


def journal_records(state: Path) -> list[Any]:
    out: list[Any] = []
    for path in sorted(state.rglob("*.journal")):
        out.extend(parse(path.read_bytes(), final=True).records)
    return out


def billed(gateway: Any) -> dict[tuple[str, str, str], int]:
    return {(r["consumerId"], r["apiId"], r["metric"]): int(r["units"]) for r in gateway.client.totals()}


def adopter(gateway: Any, state: Path, **options: Any) -> am.Meter:
    """A live process on the same state directory (metrics "tokens": the records name their policy)."""
    return am.Meter(API_KEY, api_id=API_ID, base_url=gateway.url, state_dir=str(state),
                    flush_interval=0.05, instrument=False, **options)


@pytest.fixture
def fresh_gateway(gateway: Any) -> Iterator[Any]:
    gateway.client.reset()
    yield gateway


def test_the_caller_journals_raw_usage_and_the_reporter_prices_it(
        fresh_gateway: Any, mock_llm: Any, tmp_path: Path) -> None:
    meter = am.Meter(API_KEY, api_id=API_ID, base_url=fresh_gateway.url, state_dir=str(tmp_path),
                     metrics="cost", flush_interval=60)  # the reporter sleeps until flushed
    try:
        client = am.wrap(anthropic.Anthropic(base_url=mock_llm.anthropic_base_url, api_key="x"),
                         meter=meter, consumer_id="u")
        client.messages.create(model=SONNET, max_tokens=300, messages=PROMPT,  # type: ignore[arg-type]
                               extra_headers={"x-mock-output-tokens": "200"})
        recs = journal_records(tmp_path)
        # on disk when the call returned, as raw usage: nothing priced on the caller's thread
        assert [type(r) for r in recs] == [RawUsage]
        assert recs[0].strings[:6] == ("anthropic", SONNET, "standard", "u", API_ID, "cost_micro_usd")
        assert meter.flush(10)
        priced = [r for r in journal_records(tmp_path) if isinstance(r, Priced)]
        assert [(p.usage_offset, [(e.metric, e.units) for e in p.events]) for p in priced] == \
            [(recs[0].offset, [("cost_micro_usd", 6000)])]
        st = meter.stats()
        assert (st.calls_metered, st.events_estimated, st.unpriced) == (1, 0, 0)
        assert st.price_table is not None and st.price_table.startswith("genai-prices ")
    finally:
        meter.shutdown(5)
    assert billed(fresh_gateway) == {("u", API_ID, "cost_micro_usd"): 6000}
    assert list(tmp_path.rglob("*.journal")) == []  # delivered and marked: nothing left


def test_deferred_pricing_bills_the_worked_examples_exactly_like_the_callers_path(
        fresh_gateway: Any, tmp_path: Path) -> None:
    rows = _rows()
    usages = []
    for provider, model, inp, cached, write, write_1h, out, tier, _billed in rows:
        usages.append(Usage(provider, model, int(inp), int(out), int(inp) + int(out),
                            cached_input_tokens=int(cached), cache_write_tokens=int(write),
                            cache_write_1h_tokens=int(write_1h), service_tier=tier or None))
    # a second call per consumer exercises the carried remainder (row 3 carries 0.5)
    calls = [(f"c{i}", u) for i, u in enumerate(usages)] + [(f"c{i}", u) for i, u in enumerate(usages)]
    reference = am.cost_policy()  # the caller-side path: the same policy, billed in order
    expected: dict[tuple[str, str, str], int] = {}
    for who, u in calls:
        (metric, units), = reference.bill(u, who, API_ID, 0.0).items()  # type: ignore[union-attr]
        expected[(who, API_ID, metric)] = expected.get((who, API_ID, metric), 0) + units
    meter = am.Meter(API_KEY, api_id=API_ID, base_url=fresh_gateway.url, state_dir=str(tmp_path),
                     metrics="cost", flush_interval=60)
    try:
        for who, u in calls:
            meter.record(u, am._meter.Attribution(who, API_ID, "cost"))
        assert sum(isinstance(r, RawUsage) for r in journal_records(tmp_path)) == len(calls)
        assert meter.flush(10)
        assert meter.stats().calls_metered == len(calls)
    finally:
        meter.shutdown(5)
    assert billed(fresh_gateway) == expected
    assert expected[("c0", API_ID, "cost_micro_usd")] == 2 * int(rows[0][-1])


def test_variants_and_unknown_models_are_replayed_from_the_records_parameters(
        fresh_gateway: Any, tmp_path: Path) -> None:
    credits = am.cost_policy(markup="1.5", unit="0.0001", metric="credits", fallback="split")
    meter = am.Meter(API_KEY, api_id=API_ID, base_url=fresh_gateway.url, state_dir=str(tmp_path),
                     metrics=credits, flush_interval=60)
    try:
        att = am._meter.Attribution("u", API_ID, credits)
        meter.record(Usage("anthropic", SONNET, 1000, 0, 1000), att)  # $0.003 * 1.5 = 45 credits
        meter.record(Usage("openai", "ft:private", 30, 12, 42, estimated=True), att)
        assert sum(isinstance(r, RawUsage) for r in journal_records(tmp_path)) == 2
        assert meter.flush(10)
        st = meter.stats()
        assert (st.calls_metered, st.events_estimated, st.unpriced) == (2, 1, 1)
    finally:
        meter.shutdown(5)
    assert billed(fresh_gateway) == {("u", API_ID, "credits"): 45, ("u", API_ID, "input_tokens"): 30,
                                     ("u", API_ID, "output_tokens"): 12}


def test_a_policy_with_price_overrides_or_a_hook_is_priced_on_the_caller(tmp_path: Path, gateway: Any) -> None:
    overrides = am.cost_policy(prices={"m": {"input_mtok": 1}})
    for options in ({"metrics": overrides}, {"metrics": "cost", "before_send": lambda e: e}):
        state = tmp_path / str(len(list(tmp_path.iterdir())))
        meter = am.Meter(API_KEY, api_id=API_ID, base_url=gateway.url, state_dir=str(state),
                         flush_interval=60, **options)
        try:
            meter.record(Usage("openai", "m", 10, 0, 10), am._meter.Attribution("u", API_ID, options["metrics"]))
            recs = journal_records(state)
            assert recs and not any(isinstance(r, RawUsage) for r in recs)  # events, priced already
        finally:
            meter.shutdown(5)


CHILD = """
import sys, time
import anthropic, aerostack_meter as am
am.init({key!r}, api_id={api!r}, base_url={gw!r}, state_dir={state!r}, metrics="cost",
        flush_interval=600, default_consumer_id="killed")
client = anthropic.Anthropic(base_url={llm!r}, api_key="x")
client.messages.create(model={model!r}, max_tokens=300, messages={prompt!r},
                       extra_headers={{"x-mock-output-tokens": "200"}})
print("recorded", flush=True)
time.sleep(600)
"""


def record_then_kill_9(gateway: Any, mock_llm: Any, state: Path) -> RawUsage:
    """A child process makes one metered call (metrics="cost") and is killed with SIGKILL before
    its reporter ran: the journal it leaves holds the call's raw usage, unpriced."""
    code = CHILD.format(key=API_KEY, api=API_ID, gw=gateway.url, state=str(state),
                        llm=mock_llm.anthropic_base_url, model=SONNET, prompt=PROMPT)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "recorded"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    recs = journal_records(state)
    assert [type(r) for r in recs] == [RawUsage]
    return recs[0]  # type: ignore[no-any-return]


def test_kill_9_after_the_call_then_an_adopter_bills_it_exactly_once(
        fresh_gateway: Any, mock_llm: Any, tmp_path: Path) -> None:
    record_then_kill_9(fresh_gateway, mock_llm, tmp_path)
    m = adopter(fresh_gateway, tmp_path)
    try:
        assert m.flush(10)
        st = m.stats()
        assert (st.events_adopted, st.calls_metered, st.awaiting_price) == (1, 0, 0)
    finally:
        m.shutdown(5)
    assert billed(fresh_gateway) == {("killed", API_ID, "cost_micro_usd"): 6000}
    assert list(tmp_path.rglob("*.journal*")) == []
    m2 = adopter(fresh_gateway, tmp_path)  # nothing is left to bill a second time
    m2.shutdown(5)
    assert billed(fresh_gateway) == {("killed", API_ID, "cost_micro_usd"): 6000}


@pytest.mark.parametrize("mark", ["whole", "torn"])
def test_a_death_around_the_pricing_neither_loses_nor_doubles(
        fresh_gateway: Any, mock_llm: Any, tmp_path: Path, mark: str) -> None:
    """The dead process priced the call: its ``X`` record either reached the disk whole (then its
    events are delivered as they are, never priced again; 4321 tells them apart from a re-pricing)
    or was torn by the crash (then the call is priced again, once)."""
    usage = record_then_kill_9(fresh_gateway, mock_llm, tmp_path)
    (journal,) = tmp_path.rglob("*.journal")
    x = encode_priced(usage.offset, [("killed", API_ID, "cost_micro_usd", 4321, EV_PRICED)], usage.ts)
    with journal.open("ab") as f:
        f.write(x if mark == "whole" else x[:-3])
    m = adopter(fresh_gateway, tmp_path)
    try:
        assert m.flush(10)
    finally:
        m.shutdown(5)
    assert billed(fresh_gateway) == {("killed", API_ID, "cost_micro_usd"): 4321 if mark == "whole" else 6000}


HIDE_PRICES = """
import sys
class _Hidden:  # the [cost] extra is not installed in this process
    def __init__(self, finder): self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "genai_prices":
            return None
        return self.finder.find_spec(name, path, target)
sys.meta_path[:] = [_Hidden(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
import aerostack_meter as am
try:
    am.cost_policy()
except am.ConfigError:
    print("no price table")
m = am.Meter({key!r}, api_id={api!r}, base_url={gw!r}, state_dir={state!r}, flush_interval=0.05,
             instrument=False, exit_timeout=0.5{options})
m.flush(3)
{load}
s = m.stats()
print(s.awaiting_price, s.events_adopted, s.events_sent, s.pending, s.dropped.get("policy_error", 0))
"""


def test_an_adopter_without_the_price_table_keeps_the_usage_and_counts_it(
        fresh_gateway: Any, mock_llm: Any, tmp_path: Path) -> None:
    record_then_kill_9(fresh_gateway, mock_llm, tmp_path)
    code = HIDE_PRICES.format(key=API_KEY, api=API_ID, gw=fresh_gateway.url, state=str(tmp_path), options="",
                              load="")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["no price table", "1 1 0 1 0"]
    assert "cannot be priced here" in proc.stderr
    assert billed(fresh_gateway) == {}
    assert sum(isinstance(r, RawUsage) for r in journal_records(tmp_path)) == 1  # kept on disk
    m = adopter(fresh_gateway, tmp_path)  # a process with the extra prices it, once
    try:
        assert m.flush(10)
    finally:
        m.shutdown(5)
    assert billed(fresh_gateway) == {("killed", API_ID, "cost_micro_usd"): 6000}
    assert list(tmp_path.rglob("*.journal*")) == []


def test_usage_held_for_a_price_table_is_carried_through_compactions(
        fresh_gateway: Any, mock_llm: Any, tmp_path: Path) -> None:
    """The adopter that cannot price a call holds it, and its journal is still compacted under
    load (before, a held call stopped every compaction: the journal grew without bound); the
    call is carried into each new segment, for a process that can price it."""
    record_then_kill_9(fresh_gateway, mock_llm, tmp_path)
    load = textwrap.dedent("""
        for i in range(20000):
            m.log("load", 1)
        import time
        t = time.monotonic()
        while m.stats().journal_compactions < 1 and time.monotonic() - t < 20:
            time.sleep(0.01)
        m.flush(10)
        print(m.stats().journal_compactions >= 1)
    """)
    code = HIDE_PRICES.format(key=API_KEY, api=API_ID, gw=fresh_gateway.url, state=str(tmp_path),
                              options=", spool_max_bytes=65536", load=load)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["no price table", "True", "1 1 20000 1 0"]
    assert billed(fresh_gateway) == {("load", API_ID, "units"): 20000}
    assert sum(isinstance(r, RawUsage) for r in journal_records(tmp_path)) == 1  # kept on disk, once
    m = adopter(fresh_gateway, tmp_path)
    try:
        assert m.flush(10)
    finally:
        m.shutdown(5)
    assert billed(fresh_gateway) == {("load", API_ID, "units"): 20000, ("killed", API_ID, "cost_micro_usd"): 6000}
    assert list(tmp_path.rglob("*.journal*")) == []


def test_a_replay_in_this_process_carries_the_live_policys_remainder() -> None:
    """A ``U`` record is priced with the policy this process registered under its parameters, so
    the remainder carried per consumer is the live policy's own."""
    from aerostack_meter._deferred import params_of, price
    from aerostack_meter._stats import Counters

    policy = am.cost_policy(unit="0.000002", metric="two_micro_usd")  # 1 Sonnet input token: 1.5
    assert params_of(policy) is not None
    rec = RawUsage(0, 0.0, (1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0), 0,
                   ("anthropic", SONNET, "", "c", "api", "two_micro_usd", "tokens", "1", "0.000002"), b"")
    counters = Counters()
    assert price(rec, counters) == [("c", "api", "two_micro_usd", 2, EV_PRICED | EV_CALL)]
    assert policy.carried("c", "api") == Decimal("-0.5")  # the live object carries it
    assert price(rec, counters)[0][3] == 1 and policy.carried("c", "api") == 0


OLDER_ADOPTER = """
import aerostack_meter as am, aerostack_meter._journal_format as fmt
assert not hasattr(fmt, "RawUsage"), "not the older version"
m = am.Meter({key!r}, api_id={api!r}, base_url={gw!r}, state_dir={state!r}, flush_interval=0.05,
             instrument=False)
m.flush(5)
print(m.stats().state_files_quarantined)
m.shutdown(5)
"""

# the last commit whose journal reader knows no raw-usage record
OLDER_VERSION = "dd8cead430ac1e3474c679d618f73173ce77e300"


def test_a_journal_quarantined_by_an_older_version_is_rescued_once(
        fresh_gateway: Any, mock_llm: Any, tmp_path: Path) -> None:
    """A mixed-version deploy: an older aerostack-meter (its source from git history, run in a
    real process) adopts a journal holding a raw-usage record it cannot read. It delivers the
    rest and quarantines the file; this version takes the unpriced call from that file and bills
    it once, without billing the rest a second time."""
    root = Path(__file__).resolve().parents[2]
    older = tmp_path / "older"
    older.mkdir()
    archive = subprocess.run(["git", "-C", str(root), "archive", OLDER_VERSION, "src/aerostack_meter"],
                             capture_output=True, timeout=60)
    if archive.returncode != 0:
        pytest.skip("the repository history is not available (a source archive without .git)")
    subprocess.run(["tar", "-x", "-C", str(older)], input=archive.stdout, check=True, timeout=60)
    state = tmp_path / "state"
    code = CHILD.format(key=API_KEY, api=API_ID, gw=fresh_gateway.url, state=str(state),
                        llm=mock_llm.anthropic_base_url, model=SONNET, prompt=PROMPT)
    code = code.replace('print("recorded"', 'am.log("killed", 7)\nprint("recorded"')
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "recorded"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert [type(r).__name__ for r in journal_records(state)] == ["RawUsage", "Event"]
    # the older version looks where versions before key fingerprints journaled (``legacy_dir``):
    # the dead journal is put there, as a version with raw-usage records but no fingerprints left it
    from aerostack_meter._paths import legacy_dir

    old_dir = Path(legacy_dir(str(state), fresh_gateway.url))
    old_dir.mkdir()
    for f in [*state.glob("*/*.journal"), *state.glob("*/*.lock")]:
        f.rename(old_dir / f.name)
    env = {**os.environ, "PYTHONPATH": str(older / "src")}
    proc = subprocess.run([sys.executable, "-c", OLDER_ADOPTER.format(
        key=API_KEY, api=API_ID, gw=fresh_gateway.url, state=str(state))],
        capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1"]  # it could not read the file: quarantined
    assert billed(fresh_gateway) == {("killed", API_ID, "units"): 7}
    assert len(list(state.rglob("*.corrupt-*"))) == 1
    m = adopter(fresh_gateway, state)
    try:
        assert m.flush(10)
        assert m.stats().events_adopted == 1
    finally:
        m.shutdown(5)
    assert billed(fresh_gateway) == {("killed", API_ID, "units"): 7,
                                     ("killed", API_ID, "cost_micro_usd"): 6000}
    (kept,) = state.rglob("*.corrupt-*")
    assert kept.name.endswith(".rescued")  # kept for inspection, never rescued again
    m2 = adopter(fresh_gateway, state)
    m2.shutdown(5)
    assert billed(fresh_gateway) == {("killed", API_ID, "units"): 7,
                                     ("killed", API_ID, "cost_micro_usd"): 6000}


@pytest.mark.parametrize("copied", [True, False], ids=["died-after-copying", "died-before-copying"])
def test_a_rescuer_that_died_mid_rescue_neither_loses_nor_doubles(
        fresh_gateway: Any, tmp_path: Path, copied: bool) -> None:
    """Process B had claimed a quarantined file (``.rescuing-B``) when it died: if B's journal
    holds the copy (its ``M`` mark names the file) the file is settled, else it is rescued again."""
    from aerostack_meter._journal_format import (
        encode_mark,
        encode_usage_payload,
        frame,
        strings_blob,
    )
    from aerostack_meter._paths import destination_dir
    from aerostack_meter._secret import Secret

    d = Path(destination_dir(str(tmp_path), fresh_gateway.url, Secret(API_KEY).fingerprint()))
    d.mkdir(parents=True, exist_ok=True)
    u = frame(encode_usage_payload(0.0, (1000, 200, 1200, 0, 0, 0, 0, 0, 0, 0, 0), 0,
                                   strings_blob("anthropic", SONNET, "", "r", API_ID, "cost_micro_usd",
                                                "tokens", "1", "0.000001")))
    origin = "aaaa00000000.0.journal.adopting-cccc00000000.corrupt-1-2"
    (d / f"{origin}.rescuing-bbbb00000000").write_bytes(u)
    (d / "bbbb00000000.0.journal").write_bytes(u + encode_mark("M", origin) if copied else b"")
    (d / "bbbb00000000.lock").touch()
    m = adopter(fresh_gateway, tmp_path)
    try:
        assert m.flush(10)
    finally:
        m.shutdown(5)
    assert billed(fresh_gateway) == {("r", API_ID, "cost_micro_usd"): 6000}
    assert [p.name for p in d.glob("*.corrupt-*")] == [f"{origin}.rescued"]


def drain(gateway: Any, state: Path, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """``aerostack-meter drain`` in a real process (``prelude``: code run before it)."""
    code = prelude + "\nimport sys\nfrom aerostack_meter.cli import main\nsys.exit(main(['drain', '--timeout', '5']))\n"
    env = {**os.environ, "AEROSTACK_API_KEY": API_KEY, "AEROSTACK_API_ID": API_ID,
           "AEROSTACK_BASE_URL": gateway.url, "AEROSTACK_METER_STATE_DIR": str(state)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90, env=env)


def test_drain_prices_what_a_killed_process_left_and_says_when_it_cannot(
        fresh_gateway: Any, mock_llm: Any, tmp_path: Path) -> None:
    record_then_kill_9(fresh_gateway, mock_llm, tmp_path)
    hide = HIDE_PRICES.split("import aerostack_meter as am")[0]
    refused = drain(fresh_gateway, tmp_path, textwrap.dedent(hide))
    assert refused.returncode == 1, refused.stderr
    assert "1 call(s) metered with metrics=\"cost\" cannot be priced here" in refused.stdout
    assert billed(fresh_gateway) == {}
    for _ in range(2):  # a second drain finds nothing left to bill
        done = drain(fresh_gateway, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert billed(fresh_gateway) == {("killed", API_ID, "cost_micro_usd"): 6000}


@pytest.mark.parametrize("mapped", [True, False])
def test_a_raw_usage_record_written_to_a_rotated_out_segment_is_carried_over(tmp_path: Path, mapped: bool) -> None:
    """A writer that appended a ``U`` record to the old segment in the instant of a rotation
    (after the reporter's last read): the record is copied, still unpriced and with its own
    flags, into the current segment, and the old segment is gone."""
    from aerostack_meter._journal import Journal
    from aerostack_meter._journal_format import encode_usage_payload, frame, strings_blob

    journal = Journal(str(tmp_path), mapped=mapped)
    try:
        old = journal.path
        u = frame(encode_usage_payload(1.0, (5, 1, 6, 0, 0, 0, 0, 0, 0, 0, 0), 1,
                                       strings_blob("openai", "gpt-5", "", "c", "api", "cost_micro_usd",
                                                    "tokens", "1", "0.000001")))
        assert journal.read_new() == ([], 0)
        journal.append(u)  # after the reporter's read, before the switch
        journal.rotate()
        assert not Path(old).exists()
        records, bad = journal.read_new()
        assert bad == 0 and [(type(r), r.flags, r.counts[:3]) for r in records if not isinstance(r, Mark)] == \
            [(RawUsage, 1, (5, 1, 6))]  # type: ignore[union-attr]  # (the marks: see Journal.rotate)
    finally:
        journal.close(delete=True)
