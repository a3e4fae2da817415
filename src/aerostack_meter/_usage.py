"""The normalised usage record shared by every provider, and the metric policies applied to it.

Normalisation (see docs/metrics.md): ``input_tokens`` counts every input token, cached reads and
cache writes included; ``output_tokens`` counts every output token, reasoning included;
``cached_input_tokens`` and ``cache_write_tokens`` are parts of ``input_tokens``,
``reasoning_tokens`` a part of ``output_tokens``, the audio counts parts of either,
``cache_write_1h_tokens`` a part of ``cache_write_tokens``.
``total_tokens`` is the provider's total (``input_tokens + output_tokens`` where it gives none).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from ._errors import ConfigError

__all__ = ["MetricPolicy", "Usage", "apply_policy", "check_policy", "to_count"]

MetricPolicy = Literal["tokens", "split", "cost"] | Callable[["Usage"], Mapping[str, int]]

_EMPTY: Mapping[str, int] = MappingProxyType({})
_MAX_UNITS = 2**53  # the largest integer every JSON parser reads exactly


class Usage(NamedTuple):
    """Token usage of one LLM call, the same shape for every provider (immutable)."""

    provider: str
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    server_tool_use: Mapping[str, int] = _EMPTY
    response_id: str | None = None
    estimated: bool = False
    #: part of ``cache_write_tokens`` written with a 1-hour TTL (Anthropic); the rest is 5-minute
    cache_write_1h_tokens: int = 0
    #: the service tier the response says served the call (``"default"``, ``"flex"``,
    #: ``"priority"``, ``"batch"``...), ``None`` when it does not say
    service_tier: str | None = None


#: ``usage_of((provider, model, ... service_tier))``: a :class:`Usage` from all its fields, in
#: order, without the named tuple's ``__new__`` (a Python frame taking 15 arguments: half the
#: cost). For the one-frame readers of the SDKs' models, which always pass every field.
usage_of: Callable[[tuple[Any, ...]], Usage] = functools.partial(tuple.__new__, Usage)
#: ``new_usage(Usage, fields)``: the same without the partial's layer (a one-frame reader's last step)
new_usage: Callable[[type[Usage], tuple[Any, ...]], Usage] = tuple.__new__
#: for ints: ``not (a | b | ...) >> COUNT_BITS`` when every one is a valid count (0 <= n < 2**53)
COUNT_BITS = 53


def to_count(value: Any) -> int | None:
    """A token count from an untrusted value: a non-negative int below 2**53, else ``None``."""
    if type(value) is int:  # fast path; bool is excluded by the exact type check
        return value if 0 <= value < _MAX_UNITS else None
    if isinstance(value, float) and value.is_integer() and 0 <= value < _MAX_UNITS:
        return int(value)
    return None


def _split(u: Usage) -> dict[str, int]:
    # Clamped, so parts reported inconsistently (cached > input) still never double count.
    cached = min(u.cached_input_tokens, u.input_tokens)
    write = min(u.cache_write_tokens, u.input_tokens - cached)
    parts = {
        "input_tokens": u.input_tokens - cached - write,
        "output_tokens": u.output_tokens,
        "cached_input_tokens": cached,
        "cache_write_tokens": write,
    }
    return {k: v for k, v in parts.items() if v or k in ("input_tokens", "output_tokens")}


def apply_policy(policy: MetricPolicy, usage: Usage) -> Mapping[str, Any]:
    """``{metric: units}`` for one call. The caller validates the units (policies are user code)."""
    if policy == "tokens":
        return {"tokens": usage.total_tokens}
    if policy == "split":
        return _split(usage)
    if policy == "cost":
        from ._cost import default_policy

        return default_policy()(usage)
    return policy(usage)


def check_policy(policy: Any, *, call: str | None = None) -> None:
    """Raise :class:`ConfigError` unless ``policy`` is a :data:`MetricPolicy`."""
    if isinstance(policy, str) and policy == "cost":
        from ._cost import require_prices

        require_prices()
        return
    if (isinstance(policy, str) and policy in ("tokens", "split")) or callable(policy):
        return
    raise ConfigError("metrics", 'must be "tokens", "split", "cost" or a callable usage -> '
                                 f'{{metric: units}}, got {policy!r}', call=call)
