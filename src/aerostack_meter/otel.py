"""OpenTelemetry export: each metered call's tokens as the GenAI metric ``gen_ai.client.token.usage``.

    aerostack_meter.init(api_id="api_chat", otel=True)   # billing + the app's own MeterProvider
    aerostack_meter.init(api_id="api_chat", otel=provider)   # billing + this MeterProvider

Per metered call (on the calling thread with the default durable store, as the call's events are
journaled; on the reporter thread with ``durable=False``), one histogram measurement of the input
tokens and one of the output tokens (unit ``{token}``), with the attributes of the OpenTelemetry
GenAI semantic conventions:

* ``gen_ai.provider.name`` and its older name ``gen_ai.system``, the conventions' well-known values:
  ``"openai"``, ``"anthropic"``, ``"gcp.gemini"``, ``"aws.bedrock"``, ``"mistral_ai"`` (another
  provider's name as :class:`aerostack_meter.Usage` has it);
* ``gen_ai.request.model``: the model the provider reported (omitted when none);
* ``gen_ai.token.type``: ``"input"`` or ``"output"``;

plus ``aerostack.consumer_id`` and ``aerostack.api_id``, who the call is billed to. The token
counts are the normalised ones of :class:`aerostack_meter.Usage` (input includes cached and
cache-write tokens, output includes reasoning tokens). ``log()`` units are not tokens and are
not recorded. This is an export beside billing, not instead of it: the billing sink still gets
every event. Needs the ``otel`` extra (``pip install 'aerostack-meter[otel]'``).

Cardinality: ``aerostack.consumer_id`` has one value per end user. With many users, drop it in the
collector or with an SDK ``View`` if your backend charges per series.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._log import log_limited
from ._usage import Usage
from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

    from ._stats import Counters

__all__ = ["METRIC_NAME", "PROVIDER_NAMES", "TOKEN_BUCKETS", "OTelRecorder"]

#: our provider names -> the GenAI conventions' ``gen_ai.provider.name`` values (google-genai is
#: metered against the Gemini API by default: ``gcp.gemini``)
PROVIDER_NAMES = {"gemini": "gcp.gemini", "bedrock": "aws.bedrock", "mistral": "mistral_ai"}

METRIC_NAME = "gen_ai.client.token.usage"
#: the bucket boundaries the GenAI conventions recommend for token counts
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)


class OTelRecorder:
    """Records usage into ``gen_ai.client.token.usage`` through ``meter_provider`` (default: the
    application's global one, looked up when the recorder is made)."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        from opentelemetry import metrics

        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter("aerostack_meter", __version__)
        self.histogram = meter.create_histogram(
            METRIC_NAME, unit="{token}", description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS))

    def record(self, usage: Usage, consumer_id: str, api_id: str, counters: Counters | None = None) -> None:
        """Record one call's input and output tokens. Never raises (counted as ``internal_errors``)."""
        try:
            name = PROVIDER_NAMES.get(usage.provider, usage.provider)
            base: dict[str, Any] = {"gen_ai.provider.name": name, "gen_ai.system": name,
                                    "aerostack.consumer_id": consumer_id, "aerostack.api_id": api_id}
            if usage.model:
                base["gen_ai.request.model"] = usage.model
            self.histogram.record(usage.input_tokens, {**base, "gen_ai.token.type": "input"})
            self.histogram.record(usage.output_tokens, {**base, "gen_ai.token.type": "output"})
        except Exception as exc:
            if counters is not None:
                counters.add("internal_errors")
            log_limited("otel_error", logging.ERROR, "aerostack_meter: recording to OpenTelemetry "
                        "failed (%s)", type(exc).__name__)
