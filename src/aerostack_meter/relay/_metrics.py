"""``/metrics`` in the Prometheus text format: one relay's counters and the stream's lag."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._stats import gather

if TYPE_CHECKING:
    from ._relay import Relay

__all__ = ["serve_metrics"]

_COUNTERS = {
    "records_delivered": "records the billing API accepted",
    "units_delivered": "units in the records the billing API accepted",
    "events_delivered": "usage events summed into the delivered records",
    "requests": "requests sent to the billing API",
    "retries": "failed requests that will be retried",
    "entries_claimed": "entries claimed from relays idle past claim_idle",
    "duplicates_skipped": "entries whose record id another entry carries (acknowledged, not sent)",
    "already_delivered": "entries delivered before whose acknowledgement was missing",
    "records_dead_lettered": "records moved to the dead-letter stream",
    "ambiguous_units": "units that may have been billed twice (lost answers, relays dead mid-request)",
    "lost_claims": "delivered entries another relay had claimed meanwhile",
    "redis_errors": "loop passes that failed on Redis",
}


class _Collector:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.client = relay.stream.connect(decode_responses=True)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        r = self.relay
        with r._counters_lock:
            counts = dict(r.counters)
        for name, doc in _COUNTERS.items():
            fam = CounterMetricFamily(f"aerostack_relay_{name}", doc, labels=["relay"])
            fam.add_metric([r.name], counts.get(name, 0))
            yield fam
        gauges = {"held_entries": ("entries this relay holds", r.held),
                  "records_per_second": ("records delivered per second (last period)", r.rate)}
        try:
            s = gather(self.client, r.stream)
            gauges.update({
                "stream_length": ("entries in the stream", s["length"]),
                "lag_entries": ("entries not read by the consumer group yet", s["lag"]),
                "pending_entries": ("entries read and not acknowledged", s["pending"]),
                "undelivered_entries": ("entries not delivered yet", s["undelivered"]),
                "oldest_undelivered_seconds": ("age of the oldest undelivered entry",
                                               s["oldest_undelivered_s"]),
                "dead_letters": ("entries in the dead-letter stream", s["dead_letters"]),
            })
            up = 1
        except Exception:
            up = 0
        gauges["redis_up"] = ("1 when Redis answered this scrape", up)
        for name, (doc, value) in gauges.items():
            gauge = GaugeMetricFamily(f"aerostack_relay_{name}", doc, labels=["relay"])
            gauge.add_metric([r.name], float(value))
            yield gauge


def serve_metrics(relay: Relay, host: str, port: int) -> Any:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the server (``.server_port``)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(relay))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
