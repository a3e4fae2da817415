"""The one-frame readers of complete OpenAI and Anthropic responses (the endpoints' ``usage``) give
what the general rules give for the same body read as JSON, whatever counts a lenient parser may
leave in the SDK's own models (hostile values included): exact billing does not depend on which
path read the response."""

from __future__ import annotations

from typing import Any

from anthropic.types import CacheCreation, Message
from anthropic.types import Usage as AnthropicUsage
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion
from openai.types.completion_usage import (
    CompletionTokensDetails,
    CompletionUsage,
    PromptTokensDetails,
)
from openai.types.responses import Response
from openai.types.responses.response_usage import (
    InputTokensDetails,
    OutputTokensDetails,
    ResponseUsage,
)

from aerostack_meter.providers._anthropic_usage import message_usage
from aerostack_meter.providers._openai_usage import CHAT_FIELDS, RESPONSES_FIELDS, response_usage
from aerostack_meter.providers.openai import CHAT_CREATE, RESPONSES_CREATE

_count_like = st.one_of(st.none(), st.integers(-5, 2**54), st.sampled_from([0, 2**53 - 1, 2**53]),
                        st.booleans(), st.floats(allow_nan=True), st.text(max_size=3))
_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _body(model: Any) -> Any:
    """The model as its JSON body would read: the values the SDK's construct() left in it (it
    converts some, e.g. ``True`` to ``1`` for an int field)."""
    if hasattr(model, "__pydantic_extra__"):
        return {k: _body(v) for k, v in {**model.__dict__, **(model.__pydantic_extra__ or {})}.items()}
    return model


@_SETTINGS
@given(st.fixed_dictionaries({}, optional=dict.fromkeys(("prompt_tokens", "completion_tokens", "total_tokens"),
                                                       _count_like)),
       st.one_of(st.none(), st.fixed_dictionaries({}, optional=dict.fromkeys(
           ("cached_tokens", "audio_tokens"), _count_like))),
       st.one_of(st.none(), st.fixed_dictionaries({}, optional=dict.fromkeys(
           ("reasoning_tokens", "audio_tokens"), _count_like))),
       st.sampled_from([None, "", "gpt-4o-mini"]), st.sampled_from([None, "default"]))
@example({"prompt_tokens": 2**52, "completion_tokens": 2**52 - 1, "total_tokens": 2**53 - 1}, None, None,
         "m", None)
@example({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}, {"cached_tokens": 2**53},
         {"reasoning_tokens": -1}, "m", "default")
@example({"prompt_tokens": 5, "completion_tokens": True, "total_tokens": 12}, None, None, "m", None)
@example({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}, {"cached_tokens": 2**53}, None, "m",
         None)
@example({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}, None, {"reasoning_tokens": -1}, "m",
         None)
def test_chat_reader_agrees_with_the_general_rules(counts: dict[str, Any], idet: dict[str, Any] | None,
                                                  odet: dict[str, Any] | None, model: str | None,
                                                  tier: str | None) -> None:
    usage = CompletionUsage.model_construct(
        **counts,
        prompt_tokens_details=None if idet is None else PromptTokensDetails.model_construct(**idet),
        completion_tokens_details=None if odet is None else CompletionTokensDetails.model_construct(**odet))
    r = ChatCompletion.model_construct(id="c1", model=model, usage=usage, service_tier=tier)
    assert CHAT_CREATE.usage(r) == response_usage(CHAT_FIELDS, _body(r))


@_SETTINGS
@given(st.fixed_dictionaries({}, optional=dict.fromkeys(("input_tokens", "output_tokens", "total_tokens"),
                                                       _count_like)),
       st.one_of(st.none(), st.fixed_dictionaries({}, optional={"cached_tokens": _count_like})),
       st.one_of(st.none(), st.fixed_dictionaries({}, optional={"reasoning_tokens": _count_like})))
@example({"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}, {"cached_tokens": 1},
         {"reasoning_tokens": 2})
def test_responses_reader_agrees_with_the_general_rules(counts: dict[str, Any], idet: dict[str, Any] | None,
                                                       odet: dict[str, Any] | None) -> None:
    usage = ResponseUsage.model_construct(
        **counts,
        input_tokens_details=None if idet is None else InputTokensDetails.model_construct(**idet),
        output_tokens_details=None if odet is None else OutputTokensDetails.model_construct(**odet))
    r = Response.model_construct(id="r1", model="gpt-4o-mini", usage=usage)
    assert RESPONSES_CREATE.usage(r) == response_usage(RESPONSES_FIELDS, _body(r))


_ANTHROPIC = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


@_SETTINGS
@given(st.fixed_dictionaries({}, optional=dict.fromkeys(_ANTHROPIC, _count_like)),
       st.one_of(st.none(), _count_like), st.sampled_from([None, "", "claude-3-5-haiku-latest"]),
       st.sampled_from([None, "standard"]))
@example({"input_tokens": 2**52, "output_tokens": 2**52, "cache_read_input_tokens": 0}, None, "m", None)
@example({"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 4}, 9, "m", "standard")
@example({"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 4}, -1, "m", None)
@example({"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 4}, 2**53, "m", None)
def test_message_reader_agrees_with_the_general_rules(counts: dict[str, Any], one_hour: Any,
                                                     model: str | None, tier: str | None) -> None:
    cc = None if one_hour is None else {"ephemeral_1h_input_tokens": one_hour}
    usage = AnthropicUsage.model_construct(
        **counts, service_tier=tier,
        cache_creation=None if cc is None else CacheCreation.model_construct(**cc))
    m = Message.model_construct(id="msg_1", model=model, usage=usage)
    assert message_usage(m) == message_usage(_body(m))
