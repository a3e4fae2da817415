"""Billing in money: a metric policy that prices each call from the ``genai-prices`` table.

``metrics="cost"`` (or a :func:`cost_policy`) bills each call in integer micro-USD under the
metric ``"cost_micro_usd"``. Pricing runs on the delivery side (the reporter thread, an adopting
process, ``drain``: see ``_deferred``), not on the caller's thread, except for a policy with
``prices`` overrides or a callable fallback, or a meter with ``before_send``/OpenTelemetry hooks in
durable mode. The price table (``genai-prices``, the ``[cost]`` extra) is imported once, on first use.

Rounding: the exact price (a ``Decimal``) of each call is added to a remainder carried per
``(consumer_id, api_id, metric)``, and the event bills that sum rounded half-to-even; what was not
billed is carried into the consumer's next call. So the units billed to a consumer never differ
from the exact total by more than half a unit, whatever the number of calls (docs/cost.md).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError
from ._forkguard import no_fork
from ._log import log_once

if TYPE_CHECKING:
    from ._usage import MetricPolicy, Usage

__all__ = ["COST_METRIC", "CostPolicy", "cost_policy", "default_policy", "require_prices", "table_version",
           "warn_unpriced"]

COST_METRIC = "cost_micro_usd"
MICRO_USD = Decimal("0.000001")
_ONE = Decimal(1)

# server tool counters (Usage.server_tool_use) -> genai-prices usage keys
_TOOL_KEYS = {"web_search_requests": "web_searches"}


def require_prices() -> None:
    """Raise :class:`ConfigError` when the ``[cost]`` extra is not installed (a cheap check: the
    table itself is only imported on the reporter thread)."""
    if importlib.util.find_spec("genai_prices") is None:
        raise ConfigError("metrics", 'pricing in money needs the price table: '
                                     'pip install "aerostack-meter[cost]" (the genai-prices package)')


_loaded = False


def load_table() -> None:
    """Import the price table now (about 0.2 s, once per process), with ``os.fork()`` held off
    meanwhile: it runs on background threads, and a child forked mid-import would hang."""
    global _loaded
    if _loaded:
        return
    with no_fork():
        from genai_prices.data_snapshot import get_snapshot

        get_snapshot()
    _loaded = True


@lru_cache(maxsize=1)
def table_version() -> str:
    """The price table's version, e.g. ``"genai-prices 0.2.3"`` (package metadata only)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"genai-prices {version('genai-prices')}"
    except PackageNotFoundError:  # pragma: no cover - require_prices() ran first
        return "genai-prices (not installed)"


def _decimal(name: str, value: Any, *, positive: bool) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ConfigError(name, f"must be a number, got {value!r}")
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(name, f"must be a number, got {value!r}") from None
    if not d.is_finite() or d < 0 or (positive and d == 0):
        raise ConfigError(name, f"must be a finite {'positive' if positive else 'non-negative'} number, got {value!r}")
    return d


def _price_context(tier: str | None) -> dict[str, str] | None:
    """The genai-prices variant selector for the service tier a response names."""
    if not tier:
        return None
    if tier == "batch":
        return {"processing": "batch"}
    return {"service_tier": tier}


def _genai_usage(u: Usage) -> Any:
    """Our normalised record as a genai-prices ``Usage`` (its keys nest the same way ours do:
    cache reads/writes and input audio inside ``input_tokens``; reasoning and output audio inside
    ``output_tokens``; 1-hour cache writes inside cache writes)."""
    from genai_prices import Usage as PriceUsage

    inp = u.input_tokens
    cached = min(u.cached_input_tokens, inp)
    write = min(u.cache_write_tokens, inp - cached)
    one_hour = min(u.cache_write_1h_tokens, write)
    values: dict[str, int] = {
        "input_tokens": inp,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": cached,
        "cache_write_tokens": write,
        "cache_write_1h_tokens": one_hour,
        "cache_write_5m_tokens": write - one_hour,
        "output_reasoning_tokens": min(u.reasoning_tokens, u.output_tokens),
        "input_audio_tokens": min(u.audio_input_tokens, inp - cached - write),
        "output_audio_tokens": min(u.audio_output_tokens, u.output_tokens),
    }
    for name, n in u.server_tool_use.items():
        key = _TOOL_KEYS.get(name)
        if key is not None and n:
            values[key] = n
    return PriceUsage(**{k: v for k, v in values.items() if v})


class CostPolicy:
    """A metric policy billing each call's price: ``{metric: units}``, units = USD * markup / unit.

    Build one with :func:`cost_policy`; ``metrics="cost"`` is ``cost_policy()``. Called directly
    (``policy(usage)``) it prices one call alone, rounded half-to-even; the meter instead carries
    each consumer's remainder (see the module docstring). A model the table does not know is billed
    under ``fallback`` (the ``"tokens"`` policy by default), never at $0.
    """

    def __init__(self, *, markup: Decimal, unit: Decimal, metric: str,
                 prices: Mapping[str, Any], fallback: MetricPolicy) -> None:
        self.markup = markup
        self.unit = unit
        self.metric = metric
        self.fallback = fallback
        self._overrides = dict(prices)
        self._scale = markup / unit
        self._lock = threading.Lock()
        self._carry: dict[tuple[str, str, str], Decimal] = {}
        self._rates: dict[tuple[str, str], list[tuple[int, float, float]] | None] = {}
        self._context_windows: dict[tuple[str, str], int | None] = {}

    @property
    def table_version(self) -> str:
        v = table_version()
        return v + " + overrides" if self._overrides else v

    def __repr__(self) -> str:
        return (f"cost_policy(markup={self.markup}, unit={self.unit}, metric={self.metric!r}, "
                f"prices=<{len(self._overrides)} overrides>)")

    # -- pricing -------------------------------------------------------------------------------
    def price_usd(self, usage: Usage, when: datetime | None = None) -> Decimal | None:
        """The exact price of one call in USD (before markup), or ``None`` for an unknown model."""
        model = usage.model
        if not model:
            return None
        if not _loaded:
            load_table()
        override = self._overrides.get(model)
        if override is not None:
            result = override.calc_price(_genai_usage(usage))
            return result["total_price"]  # type: ignore[no-any-return]
        from genai_prices import calc_price

        try:
            calc = calc_price(_genai_usage(usage), model, provider_id=usage.provider,
                              genai_request_timestamp=when, price_context=_price_context(usage.service_tier))
        except LookupError:
            return None
        return calc.total_price

    def units_exact(self, usage: Usage, when: datetime | None = None) -> Decimal | None:
        """The price of one call in this policy's units (not rounded), or ``None`` when unknown."""
        usd = self.price_usd(usage, when)
        return None if usd is None else usd * self._scale

    def __call__(self, usage: Usage) -> Mapping[str, int]:
        exact = self.units_exact(usage)
        if exact is None:
            from ._usage import apply_policy

            return apply_policy(self.fallback, usage)
        return {self.metric: int(exact.to_integral_value(ROUND_HALF_EVEN))}

    def bill(self, usage: Usage, consumer_id: str, api_id: str, ts: float) -> Mapping[str, Any] | None:
        """``{metric: units}`` with the remainder carried per consumer; ``None`` when unpriced."""
        when = datetime.fromtimestamp(ts, tz=timezone.utc) if ts else None
        exact = self.units_exact(usage, when)
        if exact is None:
            return None
        key = (consumer_id, api_id, self.metric)
        with self._lock:
            total = self._carry.get(key, Decimal(0)) + exact
            units = int(total.to_integral_value(ROUND_HALF_EVEN))
            rest = total - units
            if rest:
                self._carry[key] = rest
            else:
                self._carry.pop(key, None)
        return {self.metric: units}

    def carried(self, consumer_id: str, api_id: str) -> Decimal:
        """The fraction of a unit not billed yet to this consumer (in ``[-0.5, 0.5]``)."""
        with self._lock:
            return self._carry.get((consumer_id, api_id, self.metric), Decimal(0))

    # -- worst-case rates for budgets (cached per model) ----------------------------------------
    def rates(self, provider: str, model: str, input_tokens: int = 0) -> tuple[float, float] | None:
        """The dearest (input, output) price per token of a model in this policy's units for a
        call of ``input_tokens`` (any cache write, service tier or variant; the long-context tier
        once the input passes it), for a budget's worst case. ``None``: the model is unknown."""
        key = (provider, model)
        try:
            levels = self._rates[key]
        except KeyError:
            levels = self._rates[key] = self._lookup_rates(provider, model)
        if levels is None:
            return None
        best = levels[0]
        for level in levels:
            if input_tokens > level[0]:
                best = level
        return best[1], best[2]

    def _lookup_rates(self, provider: str, model: str) -> list[tuple[int, float, float]] | None:
        from genai_prices.types import TieredPrices

        override = self._overrides.get(model)
        if override is not None:
            prices = [override]
        else:
            from genai_prices.data_snapshot import get_snapshot

            try:
                _, info = get_snapshot().find_provider_model(model, None, provider, None)
            except LookupError:
                return None
            self._context_windows[(provider, model)] = info.context_window
            prices = [info.prices] if not isinstance(info.prices, list) else [c.prices for c in info.prices]
            prices += [v.prices for v in info.price_variants or ()]

        names_in = ("input_mtok", "cache_write_mtok", "cache_write_1h_mtok", "input_audio_mtok")
        names_out = ("output_mtok", "output_audio_mtok")
        starts = {0}
        for p in prices:
            for name in names_in + names_out:
                v = getattr(p, name, None)
                if isinstance(v, TieredPrices):
                    starts.update(t.start for t in v.tiers)

        def top(names: tuple[str, ...], inp: int) -> Decimal:
            best = Decimal(0)
            for p in prices:
                for name in names:
                    v = getattr(p, name, None)
                    if isinstance(v, TieredPrices):
                        price = v.base
                        for t in v.tiers:
                            if inp > t.start:
                                price = t.price
                        v = price
                    if isinstance(v, Decimal) and v > best:
                        best = v
            return best

        per_token = self._scale / 1_000_000
        # level t applies to calls of more than t input tokens (0: every call)
        return [(t, float(top(names_in, t + 1 if t else 0) * per_token),
                 float(top(names_out, t + 1 if t else 0) * per_token)) for t in sorted(starts)]

    def context_window(self, provider: str, model: str) -> int | None:
        """The model's context window from the table (a bound on its output), if known."""
        if (provider, model) not in self._context_windows:
            self.rates(provider, model)
        return self._context_windows.get((provider, model))


def _model_price(model: str, spec: Any) -> Any:
    from genai_prices.types import ModelPrice

    if isinstance(spec, ModelPrice):
        return spec
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError("prices", f"the price of {model!r} must be a genai_prices ModelPrice or a "
                                    "mapping such as {'input_mtok': 2.5, 'output_mtok': 10}")
    values = {}
    for key, value in spec.items():
        if not isinstance(key, str) or not key.endswith(("_mtok", "_kcount")):
            raise ConfigError("prices", f"{model!r}: unknown price key {key!r} (use genai-prices keys "
                                        "such as 'input_mtok', 'output_mtok', 'cache_read_mtok')")
        values[key] = _decimal(f"prices[{model!r}][{key!r}]", value, positive=False)
    try:
        return ModelPrice(**values)
    except Exception as exc:  # pragma: no cover - defensive
        raise ConfigError("prices", f"{model!r}: {exc}") from None


def cost_policy(*, markup: float | Decimal | str = 1, unit: float | Decimal | str = MICRO_USD,
                metric: str = COST_METRIC, prices: Mapping[str, Any] | None = None,
                fallback: MetricPolicy = "tokens") -> CostPolicy:
    """A metric policy that bills each call's price (use as ``metrics=``).

    - ``markup``: factor applied to the provider's price (``1.2`` = +20%).
    - ``unit``: USD per billed unit; the default ``0.000001`` bills micro-USD. ``unit=0.001`` bills
      in credits worth a tenth of a cent.
    - ``metric``: the metric name sent (default ``"cost_micro_usd"``).
    - ``prices``: ``{model name: price}`` for models the table lacks or that you price yourself
      (fine-tuned, private): a mapping of genai-prices price keys in USD per million tokens
      (``{"input_mtok": 0.3, "output_mtok": 1.2, "cache_read_mtok": 0.15}``) or a
      ``genai_prices.types.ModelPrice``. Matched on the exact model name the response gives.
    - ``fallback``: the policy for calls whose model has no price (default ``"tokens"``).

    Raises :class:`ConfigError` for a bad value, or when the ``[cost]`` extra is not installed.
    """
    require_prices()
    from ._usage import check_policy

    m = _decimal("markup", markup, positive=False)
    u = _decimal("unit", unit, positive=True)
    if not isinstance(metric, str) or not metric.strip():
        raise ConfigError("metric", f"must be a non-empty string, got {metric!r}")
    if fallback == "cost" or isinstance(fallback, CostPolicy):
        raise ConfigError("fallback", "must not price in money (it is used when pricing fails)")
    check_policy(fallback)
    overrides = {}
    for model, spec in (prices or {}).items():
        if not isinstance(model, str) or not model:
            raise ConfigError("prices", f"model names must be non-empty strings, got {model!r}")
        overrides[model] = _model_price(model, spec)
    return CostPolicy(markup=m, unit=u, metric=metric, prices=overrides, fallback=fallback)


def warn_unpriced(provider: str, model: str | None, fallback: Any) -> None:
    name = fallback if isinstance(fallback, str) else getattr(fallback, "__name__", "a callable")
    log_once(f"unpriced:{provider}:{model}", logging.WARNING,
             "aerostack_meter: no price for %s model %r in the price table; its usage is billed "
             "under the %r fallback policy instead (add it with cost_policy(prices={...}))",
             provider, model, name)


@lru_cache(maxsize=1)
def default_policy() -> CostPolicy:
    """The policy ``metrics="cost"`` names (one per process, so one remainder per consumer)."""
    return cost_policy()
