"""Property-based tests: usage normalisation, metric policies, the providers' usage extractors,
and the coalescing arithmetic of a real meter against a real (stand-in) HTTP server."""

from __future__ import annotations

import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from aerostack_meter import Meter
from aerostack_meter._usage import Usage, apply_policy, to_count
from aerostack_meter.providers._anthropic_usage import message_usage
from aerostack_meter.providers._openai_usage import chat_usage, responses_usage
from tests.standin import StandIn, standin_server

LIMIT = 2**53

# -- to_count ------------------------------------------------------------------------------------


@given(st.integers())
def test_to_count_keeps_exactly_the_ints_json_can_carry(n: int) -> None:
    assert to_count(n) == (n if 0 <= n < LIMIT else None)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_to_count_takes_a_float_only_when_it_is_a_whole_count(x: float) -> None:
    r = to_count(x)
    if r is None:
        assert not (x == x and abs(x) != float("inf") and x.is_integer() and 0 <= x < LIMIT)
    else:
        assert type(r) is int and r == x and 0 <= r < LIMIT


@given(st.one_of(st.booleans(), st.none(), st.text(), st.binary(), st.lists(st.integers()),
                 st.dictionaries(st.text(), st.integers()), st.complex_numbers()))
def test_to_count_refuses_everything_else(v: Any) -> None:
    assert to_count(v) is None


# -- metric policies -------------------------------------------------------------------------------

counts = st.integers(0, 2**40)


@st.composite
def consistent_usage(draw: Any) -> Usage:
    cached = draw(counts)
    write = draw(counts)
    fresh = draw(counts)
    reasoning = draw(counts)
    out = reasoning + draw(counts)
    inp = fresh + cached + write
    return Usage("p", input_tokens=inp, output_tokens=out, total_tokens=inp + out,
                 cached_input_tokens=cached, cache_write_tokens=write, reasoning_tokens=reasoning)


@given(consistent_usage())
def test_split_parts_sum_to_the_total(u: Usage) -> None:
    parts = apply_policy("split", u)
    assert sum(parts.values()) == u.total_tokens
    assert all(type(v) is int and v >= 0 for v in parts.values())
    assert {"input_tokens", "output_tokens"} <= set(parts)
    assert apply_policy("tokens", u) == {"tokens": u.total_tokens}


@given(st.builds(Usage, st.just("p"), input_tokens=counts, output_tokens=counts, total_tokens=counts,
                 cached_input_tokens=counts, cache_write_tokens=counts))
def test_split_never_yields_a_negative_part_even_from_inconsistent_usage(u: Usage) -> None:
    assert all(type(v) is int and v >= 0 for v in apply_policy("split", u).values())


# -- the providers' usage extractors on hostile wire values ----------------------------------------

wire_number = st.one_of(
    st.integers(-(2**70), 2**70), st.integers(0, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4), st.none(), st.booleans(), st.just([1]), st.just({"n": 1}))


def _maybe(keys: list[str], value: Any = wire_number) -> Any:
    return st.fixed_dictionaries({}, optional=dict.fromkeys(keys, value))


openai_chat = _maybe(["prompt_tokens", "completion_tokens", "total_tokens"]).flatmap(
    lambda d: st.fixed_dictionaries({}, optional={
        "prompt_tokens_details": _maybe(["cached_tokens", "cache_write_tokens", "audio_tokens"]),
        "completion_tokens_details": _maybe(["reasoning_tokens", "audio_tokens"]),
    }).map(lambda extra: {**d, **extra}))
openai_responses = _maybe(["input_tokens", "output_tokens", "total_tokens"]).flatmap(
    lambda d: st.fixed_dictionaries({}, optional={
        "input_tokens_details": _maybe(["cached_tokens", "cache_write_tokens"]),
        "output_tokens_details": _maybe(["reasoning_tokens"]),
    }).map(lambda extra: {**d, **extra}))
anthropic_usage = _maybe(["input_tokens", "output_tokens", "cache_creation_input_tokens",
                          "cache_read_input_tokens"]).flatmap(
    lambda d: st.fixed_dictionaries({}, optional={
        "server_tool_use": _maybe(["web_search_requests", "web_fetch_requests"]),
        "output_tokens_details": _maybe(["thinking_tokens"]),
    }).map(lambda extra: {**d, **extra}))

_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
           "reasoning_tokens", "audio_input_tokens", "audio_output_tokens")


def _sound(u: Usage) -> None:
    for name in _FIELDS:
        value = getattr(u, name)
        assert to_count(value) == value and type(value) is int, (name, value)
    assert all(to_count(v) == v for v in u.server_tool_use.values())


@given(openai_chat)
def test_openai_chat_usage_is_sound_or_none(raw: dict[str, Any]) -> None:
    u = chat_usage(raw, "gpt", "id")
    if u is not None:
        _sound(u)
        # the total is the provider's when it gave a valid one; a total past 2**53 is refused
        # downstream (the event is dropped as invalid, counted), never sent
        assume(to_count(u.total_tokens) is not None)
        if u.cached_input_tokens + u.cache_write_tokens <= u.input_tokens and \
                u.total_tokens == u.input_tokens + u.output_tokens:
            assert sum(apply_policy("split", u).values()) == u.total_tokens


@given(openai_responses)
def test_openai_responses_usage_is_sound_or_none(raw: dict[str, Any]) -> None:
    u = responses_usage(raw, "gpt", "id")
    if u is not None:
        _sound(u)


@given(anthropic_usage)
def test_anthropic_usage_is_sound_or_none_and_its_split_always_sums(raw: dict[str, Any]) -> None:
    u = message_usage({"usage": raw, "model": "claude", "id": "msg_1"})
    if u is not None:
        _sound(u)
        assert to_count(u.total_tokens) == u.total_tokens
        assert u.total_tokens == u.input_tokens + u.output_tokens
        assert sum(apply_policy("split", u).values()) == u.total_tokens


@pytest.mark.parametrize("valid", [{"input_tokens": 3, "output_tokens": 4}])
def test_anthropic_extractor_reads_a_sound_record(valid: dict[str, int]) -> None:  # the positive case
    u = message_usage({"usage": valid})
    assert u is not None and u.total_tokens == 7


# -- coalescing through a real meter and a real HTTP server ----------------------------------------

KEY = "ac_secret_property_key"


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    with standin_server() as s:
        yield s


consumers = st.sampled_from(["a", "b", "ü-用户", "🙂", "x" * 300])
metrics = st.sampled_from(["tokens", "input_tokens"])
steps = st.lists(st.one_of(
    st.tuples(consumers, metrics, st.integers(0, 10**12)),
    st.just("flush")), min_size=1, max_size=200)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps, coalesce=st.booleans(), small_queue=st.booleans(), spool=st.booleans())
def test_coalescing_is_exact_per_key(standin: StandIn, steps: list[Any], coalesce: bool,
                                     small_queue: bool, spool: bool) -> None:
    api = "api_" + uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp:
        options: dict[str, Any] = {"spool_path": f"{tmp}/spool.db"} if spool else {"durable": False}
        m = Meter(KEY, api_id=api, base_url=standin.url, flush_interval=0.01, coalesce=coalesce,
                  max_queue_size=2 if small_queue else 100_000, instrument=False, **options)
        want: Counter[tuple[str, str]] = Counter()
        n_events = 0
        for step in steps:
            if step == "flush":
                assert m.flush(10)
                continue
            c, metric, units = step
            m.log(c, units, metric=metric)
            want[(c, metric)] += units
            n_events += 1
        assert m.flush(10)
        st_ = m.stats()
        m.shutdown()
    with standin.lock:
        mine = [r for r in standin.requests if r.body["apiId"] == api]
    got: Counter[tuple[str, str]] = Counter()
    for r in mine:
        assert type(r.body["units"]) is int and 0 <= r.body["units"] < LIMIT
        got[(r.body["consumerId"], r.body["metric"])] += r.body["units"]
    assert +got == +want and set(got) <= set(want)
    assert st_.events_sent == n_events and st_.dropped == {}
    assert len(mine) <= n_events
    assert len({r.headers["idempotency-key"] for r in mine}) == len(mine)
    if not coalesce and not small_queue and not spool:
        assert len(mine) == n_events


def test_a_total_past_2_53_is_never_sent(standin: StandIn) -> None:
    """Each count below 2**53 but their sum past it: refused (None) by the extractor, or dropped
    and counted by the meter; never a request."""
    from aerostack_meter._meter import Attribution

    u = chat_usage({"prompt_tokens": LIMIT - 1, "completion_tokens": 5}, "gpt", "id")
    if u is None:
        return
    api = "api_" + uuid.uuid4().hex[:8]
    m = Meter(KEY, api_id=api, base_url=standin.url, flush_interval=0.01, instrument=False)
    m.record(u, Attribution("c", api, "tokens"))
    assert m.flush(5)
    st_ = m.stats()
    m.shutdown()
    assert not [r for r in standin.requests if r.body["apiId"] == api]
    assert sum(st_.dropped.values()) == 1


# The SDK's own models take a one-frame reader for the common shape; it must agree with the general
# reader (the JSON body's) on every input, the hostile ones included.
anthropic_model_usage = anthropic_usage.flatmap(lambda d: st.fixed_dictionaries({}, optional={
    "cache_creation": _maybe(["ephemeral_1h_input_tokens", "ephemeral_5m_input_tokens"]),
    "service_tier": st.one_of(st.sampled_from(["standard", "priority"]), wire_number),
    "iterations": st.just([{"type": "compaction", "input_tokens": 7, "output_tokens": 1}]),
    "not_in_the_sdk": wire_number,
}).map(lambda extra: {**d, **extra}))


count = st.integers(0, 10**6)
edge = st.sampled_from([-1, 2**53 - 1, 2**53, True])
anthropic_model_usage_sound = st.fixed_dictionaries(
    {"input_tokens": count, "output_tokens": count},
    optional={"cache_creation_input_tokens": st.one_of(count, st.none(), edge, wire_number),
              "cache_read_input_tokens": st.one_of(count, st.none(), edge, wire_number),
              "cache_creation": st.fixed_dictionaries({}, optional={
                  "ephemeral_1h_input_tokens": st.one_of(count, edge, wire_number),
                  "ephemeral_5m_input_tokens": count}),
              "service_tier": st.one_of(st.sampled_from(["standard", "priority"]), wire_number),
              "output_tokens_details": st.one_of(st.none(), _maybe(["thinking_tokens"])),
              "server_tool_use": st.one_of(st.none(), _maybe(["web_search_requests"]))})


@given(st.one_of(anthropic_model_usage_sound, anthropic_model_usage),
       st.one_of(st.just("claude"), wire_number), st.booleans())
@example({"input_tokens": 1, "output_tokens": 2, "cache_creation": {"ephemeral_1h_input_tokens": 2**53}},
         "claude", False)
@example({"input_tokens": 1, "output_tokens": 2, "cache_creation_input_tokens": 5,
          "cache_creation": {"ephemeral_1h_input_tokens": 9}}, "claude", False)
@example({"input_tokens": 2**53 - 3, "output_tokens": 2, "cache_read_input_tokens": 1}, "claude", False)
def test_anthropic_usage_from_the_sdk_model_equals_usage_from_its_json(raw: dict[str, Any], model: Any,
                                                                        extra: bool) -> None:
    anthropic_models = pytest.importorskip("anthropic._models")
    from anthropic.types import Message

    body = {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [],
            "usage": raw, **({"container": None, "not_declared": 1, "store": True} if extra else {})}
    parsed = anthropic_models.construct_type(type_=Message, value=body)
    assert message_usage(parsed) == message_usage(_as_json(parsed))


def _as_json(value: Any) -> Any:
    """A model's values as the JSON the general reader takes (no conversion: the SDK's own values,
    declared fields over extras)."""
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    fields = getattr(value, "__dict__", None)
    if fields is None or not hasattr(value, "__pydantic_extra__"):
        return value
    return {k: _as_json(v) for k, v in {**(value.__pydantic_extra__ or {}), **fields}.items()}


def _openai_details(names: list[str]) -> Any:
    return st.one_of(st.none(), st.fixed_dictionaries({}, optional=dict.fromkeys(
        names, st.one_of(count, st.none(), edge, wire_number))))


def _openai_sound(inp: str, out: str, idet: str, odet: str) -> Any:
    return st.fixed_dictionaries(
        {inp: st.one_of(count, edge), out: count, "total_tokens": st.one_of(count, edge)},
        optional={idet: _openai_details(["cached_tokens", "cache_write_tokens", "audio_tokens"]),
                  odet: _openai_details(["reasoning_tokens", "audio_tokens", "not_declared"]),
                  "not_declared": wire_number})


@given(st.one_of(openai_chat, _openai_sound("prompt_tokens", "completion_tokens", "prompt_tokens_details",
                                             "completion_tokens_details")),
       st.one_of(openai_responses, _openai_sound("input_tokens", "output_tokens", "input_tokens_details",
                                                  "output_tokens_details")),
       st.one_of(st.just("gpt"), wire_number), st.one_of(st.just("flex"), wire_number))
@example({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
          "prompt_tokens_details": {"cached_tokens": 2**53, "audio_tokens": True},
          "completion_tokens_details": {"reasoning_tokens": 1.0, "audio_tokens": -1}},
         {"input_tokens": 2**53 - 1, "output_tokens": 0, "total_tokens": 2**53 - 1,
          "input_tokens_details": {"cached_tokens": 3}}, "gpt", None)
@example({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
          "prompt_tokens_details": {"audio_tokens": -1, "cache_write_tokens": 2**53},
          "completion_tokens_details": {"reasoning_tokens": 2**53, "audio_tokens": 2**60}},
         {"input_tokens": 1, "output_tokens": 0, "total_tokens": 1,
          "output_tokens_details": {"reasoning_tokens": -5}}, 7, "flex")
def test_openai_usage_from_the_sdk_models_equals_usage_from_their_json(chat: dict[str, Any], resp: dict[str, Any],
                                                                      model: Any, tier: Any) -> None:
    """The SDK's own models take a one-frame reader for the common shape (see the Anthropic test)."""
    openai_models = pytest.importorskip("openai._models")
    from openai.types import CompletionUsage
    from openai.types.responses import ResponseUsage

    chat_model = openai_models.construct_type(type_=CompletionUsage, value=chat)
    assert chat_usage(chat_model, model, "id", tier) == chat_usage(_as_json(chat_model), model, "id", tier)
    resp_model = openai_models.construct_type(type_=ResponseUsage, value=resp)
    assert responses_usage(resp_model, model, "id", tier) == responses_usage(_as_json(resp_model), model, "id",
                                                                             tier)


@given(st.one_of(openai_chat, _openai_sound("prompt_tokens", "completion_tokens", "prompt_tokens_details",
                                             "completion_tokens_details")),
       st.one_of(openai_responses, _openai_sound("input_tokens", "output_tokens", "input_tokens_details",
                                                  "output_tokens_details")),
       st.one_of(st.just("gpt"), wire_number), st.one_of(st.just("flex"), st.none(), wire_number),
       st.fixed_dictionaries({}, optional={"store": st.booleans(), "not_declared": wire_number}))
@example({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}, {"input_tokens": 1,
         "output_tokens": 0, "total_tokens": 1}, "gpt", "flex", {"store": True})
def test_openai_usage_of_a_whole_response_from_the_sdk_model_equals_its_json(
        chat: dict[str, Any], resp: dict[str, Any], model: Any, tier: Any, extra: dict[str, Any]) -> None:
    """A complete response read in one frame (``response_usage``), also with fields the SDK's model
    does not declare (a real response's ``store``), agrees with its JSON body read by name."""
    openai_models = pytest.importorskip("openai._models")
    from openai.types.chat import ChatCompletion
    from openai.types.responses import Response

    from aerostack_meter.providers._openai_usage import (
        CHAT_FIELDS,
        RESPONSES_FIELDS,
        response_usage,
    )

    for cls, names, usage in ((ChatCompletion, CHAT_FIELDS, chat), (Response, RESPONSES_FIELDS, resp)):
        body = {"id": "r_1", "object": "x", "created": 1, "model": model, "usage": usage,
                **({"service_tier": tier} if tier is not None else {}), **extra}
        parsed = openai_models.construct_type(type_=cls, value=body)
        assert response_usage(names, parsed) == response_usage(names, _as_json(parsed))
