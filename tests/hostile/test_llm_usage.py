"""An LLM server that reports usage as null, missing, negative, strings or huge integers.

Each call returns to the user untouched, and is accounted for exactly one way: billed with the
numbers the server meant (an SDK may itself coerce "12" to 12), or counted as usage missing, or
billed as an estimate (counted as such). Nothing invalid ever reaches the billing API, and the
"no usage" warning is logged once per provider and model, not per call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import aerostack_meter as am
from aerostack_meter.servers._mock_usage import USAGE_MODES

from ._support import clients, make_meter, records

HOSTILE = [m for m in USAGE_MODES if m != "normal"]
CALLS = 3


def _surfaces(oc: Any, ac: Any) -> dict[str, Callable[[dict[str, str]], Any]]:
    msgs = [{"role": "user", "content": "count these five words"}]
    return {
        "openai.chat": lambda h: oc.chat.completions.create(
            model="gpt-4o-mini", messages=msgs, extra_headers=h),
        "openai.chat.stream": lambda h: list(oc.chat.completions.create(
            model="gpt-4o-mini", messages=msgs, stream=True, stream_options={"include_usage": True},
            extra_headers=h)),
        "openai.responses": lambda h: oc.responses.create(
            model="gpt-4o-mini", input="count these five words", extra_headers=h),
        "anthropic.messages": lambda h: ac.messages.create(
            model="claude-3-5-haiku-latest", max_tokens=32, messages=msgs, extra_headers=h),
        "anthropic.messages.stream": lambda h: list(ac.messages.create(
            model="claude-3-5-haiku-latest", max_tokens=32, messages=msgs, stream=True,
            extra_headers=h)),
    }


@pytest.mark.parametrize("mode", HOSTILE)
def test_hostile_usage_is_accounted_for_once_and_never_billed_wrong(
        servers: tuple[Any, Any], mode: str, caplog: pytest.LogCaptureFixture) -> None:
    gw, llm = servers
    m = make_meter(gw)
    oc, ac = clients(llm, m)
    surfaces = _surfaces(oc, ac)
    for name, call in surfaces.items():  # what each surface bills when the usage is sound
        with am.consumer(f"nominal:{name}"):
            call({})
    for name, call in surfaces.items():
        for _ in range(CALLS):
            with am.consumer(f"{mode}:{name}"):
                call({"x-mock-usage": mode})  # returns normally: nothing raised into the call
    assert m.flush(10)
    st = m.stats()
    m.shutdown()
    billed = gw.client.totals_by_consumer()
    n = len(surfaces)
    assert st.calls_metered + st.usage_missing == n + n * CALLS
    assert st.dropped == {} and st.internal_errors == 0  # the gateway accepted every request
    exact = 0
    for name in surfaces:
        nominal = billed[f"nominal:{name}"]
        got = billed.get(f"{mode}:{name}", 0)
        assert got in (0, CALLS * nominal) or st.events_estimated, (name, got, nominal)
        exact += got == CALLS * nominal
    # every hostile call is either billed exactly, or missing, or estimated
    assert exact * CALLS + st.usage_missing + st.events_estimated == n * CALLS
    if mode in ("null", "missing", "negative", "huge"):
        assert exact == 0  # nothing to bill from these
    warned = records(caplog, "carried no usage")
    assert len(warned) == len({(r.args[0], r.args[1]) for r in warned})  # once per provider+model
    assert len(warned) <= 2
