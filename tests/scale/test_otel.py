"""OpenTelemetry export: exact histogram values from the SDK's in-memory reader, and once end to
end through the OTLP/HTTP exporter to a loopback receiver (in a child process: the global
MeterProvider can be set once per process)."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import anthropic
import openai
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

import aerostack_meter as am
from aerostack_meter.otel import METRIC_NAME, TOKEN_BUCKETS

from ..conftest import API_ID, API_KEY

ROOT = str(Path(__file__).resolve().parents[2])


def _points(reader: InMemoryMetricReader) -> dict[tuple[tuple[str, Any], ...], HistogramDataPoint]:
    data = reader.get_metrics_data()
    out = {}
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == METRIC_NAME:
                    assert m.unit == "{token}"
                    for p in m.data.data_points:
                        out[tuple(sorted(p.attributes.items()))] = p
    return out


def _attrs(provider: str, model: str, kind: str, consumer: str) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted({"gen_ai.provider.name": provider, "gen_ai.system": provider,
                         "gen_ai.request.model": model, "gen_ai.token.type": kind,
                         "aerostack.consumer_id": consumer, "aerostack.api_id": API_ID}.items()))


def test_each_call_is_one_measurement_per_token_type(meter_factory: Any, mock_llm: Any, gateway: Any) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter_factory(otel=provider)
    oa = openai.OpenAI(base_url=mock_llm.url, api_key="x")
    an = anthropic.Anthropic(base_url=mock_llm.anthropic_base_url, api_key="x")
    seen: dict[tuple[str, str], list[int]] = {}
    for i in range(5):
        with am.consumer("usr_otel"):
            r = oa.chat.completions.create(model="gpt-4o-mini",
                                           messages=[{"role": "user", "content": "w " * (i + 1)}])
        assert r.usage is not None
        seen.setdefault(("openai", "input"), []).append(r.usage.prompt_tokens)
        seen.setdefault(("openai", "output"), []).append(r.usage.completion_tokens)
    with am.consumer("usr_otel"):
        m = an.messages.create(model="claude-3-5-haiku-latest", max_tokens=32,
                               messages=[{"role": "user", "content": "hello"}])
    seen[("anthropic", "input")] = [m.usage.input_tokens]
    seen[("anthropic", "output")] = [m.usage.output_tokens]
    assert am.flush(10)
    points = _points(reader)
    assert len(points) == 4
    for (prov, kind), values in seen.items():
        model = "gpt-4o-mini" if prov == "openai" else m.model
        p = points[_attrs(prov, r.model if prov == "openai" else model, kind, "usr_otel")]
        assert (p.count, p.sum, p.min, p.max) == (len(values), sum(values), min(values), max(values))
        assert tuple(p.explicit_bounds) == TOKEN_BUCKETS
    # fan-out: billing got the same calls
    billed = dict(gateway.client.totals_by_consumer())
    assert billed == {"usr_otel": sum(sum(v) for v in seen.values())}


def test_log_units_are_not_tokens(meter_factory: Any) -> None:
    reader = InMemoryMetricReader()
    meter_factory(otel=MeterProvider(metric_readers=[reader]))
    am.log("usr_x", 7)
    assert am.flush(10)
    assert _points(reader) == {}


def test_a_broken_provider_costs_nothing_but_a_count(meter_factory: Any, mock_llm: Any, gateway: Any) -> None:
    class Broken:
        def get_meter(self, *a: Any, **k: Any) -> Any:
            return self

        def create_histogram(self, *a: Any, **k: Any) -> Any:
            return self

        def record(self, *a: Any, **k: Any) -> None:
            raise RuntimeError("exporter exploded")

    meter = meter_factory(otel=Broken())
    oa = openai.OpenAI(base_url=mock_llm.url, api_key="x")
    with am.consumer("usr_b"):
        r = oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert am.flush(10)
    assert dict(gateway.client.totals_by_consumer()) == {"usr_b": r.usage.total_tokens}
    assert meter.stats().internal_errors == 1


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/metrics":
            _Receiver.bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


APP = """
import json, sys
import openai
from opentelemetry import metrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
import aerostack_meter as am

cfg = json.loads(sys.argv[1])
reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=cfg["otlp"] + "/v1/metrics"),
                                       export_interval_millis=60_000)
provider = MeterProvider(metric_readers=[reader])
metrics.set_meter_provider(provider)          # the application's own provider
am.init(cfg["key"], api_id=cfg["api_id"], base_url=cfg["gateway"], otel=True, flush_interval=0.05)
client = openai.OpenAI(base_url=cfg["llm"], api_key="x")
total = 0
for i in range(3):
    with am.consumer("usr_e2e"):
        r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi " * (i + 1)}])
    total += r.usage.prompt_tokens
assert am.flush(10)
provider.force_flush()
print(json.dumps({"input": total}))
"""


def test_end_to_end_through_otlp_http(receiver: str, mock_llm: Any, gateway: Any) -> None:
    gateway.client.reset()
    cfg = {"otlp": receiver, "key": API_KEY, "api_id": API_ID, "gateway": gateway.url, "llm": mock_llm.url}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AEROSTACK_"))}
    out = subprocess.run([sys.executable, "-c", APP, json.dumps(cfg)], capture_output=True, text=True,
                         env={**env, "PYTHONPATH": ROOT}, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    want = json.loads(out.stdout.splitlines()[-1])["input"]
    found = []
    for body in _Receiver.bodies:
        req = ExportMetricsServiceRequest.FromString(body)
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name != METRIC_NAME:
                        continue
                    for p in m.histogram.data_points:
                        attrs = {a.key: a.value.string_value for a in p.attributes}
                        if attrs["gen_ai.token.type"] == "input":
                            found.append((attrs["aerostack.consumer_id"], attrs["gen_ai.provider.name"],
                                          p.count, int(p.sum)))
    # cumulative temporality: every export (the flush, then the one at exit) carries the same totals
    assert found and set(found) == {("usr_e2e", "openai", 3, want)}
    assert dict(gateway.client.totals_by_consumer())["usr_e2e"] > want  # billing got it too


def test_gemini_is_named_as_the_genai_conventions_name_it(meter_factory: Any, mock_llm: Any, gateway: Any) -> None:
    """``gen_ai.provider.name`` takes the conventions' well-known values (``gcp.gemini``, not ours)."""
    from google import genai
    from google.genai import types

    reader = InMemoryMetricReader()
    meter_factory(otel=MeterProvider(metric_readers=[reader]))
    client = genai.Client(api_key="x", http_options=types.HttpOptions(base_url=mock_llm.base_url))
    with am.consumer("usr_otel"):
        r = client.models.generate_content(model="gemini-2.5-flash", contents="hello there")
    assert am.flush(10)
    names = {dict(k)["gen_ai.provider.name"] for k in _points(reader)}
    systems = {dict(k)["gen_ai.system"] for k in _points(reader)}
    assert names == systems == {"gcp.gemini"}
    assert r.usage_metadata is not None and r.usage_metadata.prompt_token_count
