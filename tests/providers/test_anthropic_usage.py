"""Anthropic usage normalisation (pure): cache, thinking, server tools, compaction iterations,
cumulative deltas, hostile numbers."""

from __future__ import annotations

from typing import Any

import pytest

from aerostack_meter._usage import apply_policy
from aerostack_meter.providers._anthropic_usage import message_usage, read_counts
from aerostack_meter.providers.anthropic import MessageReducer


def _msg(**usage: Any) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "model": "claude-x", "usage": usage}


def test_input_includes_cache_reads_and_writes() -> None:
    u = message_usage(_msg(input_tokens=10, cache_creation_input_tokens=4, cache_read_input_tokens=6,
                           output_tokens=7, output_tokens_details={"thinking_tokens": 3},
                           server_tool_use={"web_search_requests": 2, "web_fetch_requests": 0}))
    assert u is not None
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens) == (20, 6, 4)
    assert (u.output_tokens, u.reasoning_tokens, u.total_tokens) == (7, 3, 27)
    assert u.server_tool_use == {"web_search_requests": 2}
    assert (u.provider, u.model, u.response_id, u.estimated) == ("anthropic", "claude-x", "msg_1", False)
    assert apply_policy("tokens", u) == {"tokens": 27}
    assert apply_policy("split", u) == {"input_tokens": 10, "output_tokens": 7,
                                        "cached_input_tokens": 6, "cache_write_tokens": 4}


def test_absent_optional_fields_are_zero() -> None:
    u = message_usage(_msg(input_tokens=5, output_tokens=2, cache_creation_input_tokens=None))
    assert u is not None and (u.input_tokens, u.total_tokens, u.server_tool_use) == (5, 7, {})


def test_compaction_iterations_are_added_to_the_top_level() -> None:
    iterations = [
        {"type": "compaction", "input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 5},
        {"type": "message", "input_tokens": 10, "output_tokens": 3},
    ]
    u = message_usage(_msg(input_tokens=10, output_tokens=3, iterations=iterations))
    assert u is not None
    assert (u.input_tokens, u.cached_input_tokens, u.output_tokens, u.total_tokens) == (115, 5, 23, 138)


@pytest.mark.parametrize("bad", [None, -1, "12", 2**70, 1.5, True, float("nan"), [], {}])
@pytest.mark.parametrize("field", ["input_tokens", "output_tokens"])
def test_hostile_required_numbers_make_usage_missing(field: str, bad: Any) -> None:
    usage = {"input_tokens": 5, "output_tokens": 2, field: bad}
    assert message_usage(_msg(**usage)) is None


@pytest.mark.parametrize("usage", [
    {"cache_read_input_tokens": -3},
    {"cache_creation_input_tokens": "4"},
    {"server_tool_use": {"web_search_requests": -1}},
    {"output_tokens_details": {"thinking_tokens": 2**60}},
    {"iterations": "lots"},
    {"iterations": [{"type": "compaction", "input_tokens": -5}]},
])
def test_hostile_optional_numbers_make_usage_missing(usage: dict[str, Any]) -> None:
    assert message_usage(_msg(input_tokens=5, output_tokens=2, **usage)) is None


def test_total_beyond_the_safe_range_is_missing() -> None:
    assert message_usage(_msg(input_tokens=2**52, output_tokens=2**52)) is None


def test_no_usage_at_all() -> None:
    assert message_usage({"type": "message"}) is None
    assert read_counts(None) is None


class _E:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def _start(**usage: Any) -> _E:
    return _E(type="message_start", message=_E(id="msg_9", model="claude-y", usage=_E(**usage)))


def _delta(**usage: Any) -> _E:
    return _E(type="message_delta", usage=_E(**usage))


def _text(text: str) -> _E:
    return _E(type="content_block_delta", delta=_E(type="text_delta", text=text))


def test_reducer_takes_the_last_cumulative_delta() -> None:
    r = MessageReducer("anthropic", {"model": "claude-y", "messages": []})
    for e in (_start(input_tokens=10, output_tokens=1, cache_read_input_tokens=2), _text("hello"),
              _delta(output_tokens=4), _delta(output_tokens=9, input_tokens=10),
              _delta(output_tokens=9), _E(type="message_stop")):
        assert r.observe(e) is False
    u = r.final(True)
    assert u is not None and not u.estimated
    assert (u.input_tokens, u.cached_input_tokens, u.output_tokens, u.total_tokens) == (12, 2, 9, 21)
    assert (u.model, u.response_id) == ("claude-y", "msg_9")


def test_reducer_early_end_estimates_output_from_text() -> None:
    r = MessageReducer("anthropic", {"model": "claude-y", "messages": []})
    for e in (_start(input_tokens=10, output_tokens=1), _text("a" * 9)):
        r.observe(e)
    u = r.final(False)
    assert u is not None and u.estimated
    assert (u.input_tokens, u.output_tokens) == (10, 3)  # exact input; ceil(9 / 4) output


def test_reducer_early_end_after_a_delta_keeps_its_output() -> None:
    r = MessageReducer("anthropic", {"model": "claude-y", "messages": []})
    for e in (_start(input_tokens=10, output_tokens=1), _text("abcd"), _delta(output_tokens=6)):
        r.observe(e)
    u = r.final(False)
    assert u is not None and u.estimated and (u.input_tokens, u.output_tokens) == (10, 6)


def test_reducer_before_any_event_estimates_the_input() -> None:
    r = MessageReducer("anthropic", {"model": "claude-y",
                                     "messages": [{"role": "user", "content": "x" * 40}]})
    u = r.final(False)
    assert u is not None and u.estimated and u.input_tokens > 0 and u.output_tokens == 0


def test_reducer_hostile_usage_is_missing_even_early() -> None:
    r = MessageReducer("anthropic", {"model": "claude-y", "messages": []})
    r.observe(_start(input_tokens=-1, output_tokens=1))
    assert r.final(False) is None
    r.observe(_delta(output_tokens=3))
    r.observe(_E(type="message_stop"))
    assert r.final(True) is None
