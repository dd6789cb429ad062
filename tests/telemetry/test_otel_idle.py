"""OpenTelemetry installed but no SDK set (yet): a decision builds no span and no attributes,
and an SDK set after the middleware was built is used from its next request on.

Runs in a fresh interpreter: OpenTelemetry lets a process set its global providers once,
and ``test_otel.py`` sets them for the rest of the session.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.middleware.harness import agent_headers, make_driver

NOTE = json.dumps({"title": "t", "body": "b"}).encode()
driver = make_driver(sys.argv[1], telemetry="otel")
telemetry = driver.middleware.runtime.telemetry
calls = []

class Spy:
    # Stands in for an instrument or the tracer: records each call, then forwards it.
    def __init__(self, name, real):
        self.name, self.real = name, real
    def __getattr__(self, method):
        def call(*args, **kwargs):
            calls.append(self.name + "." + method)
            return getattr(self.real, method)(*args, **kwargs)
        return call

for name in ("decisions", "duration", "sink_failures", "tracer"):
    setattr(telemetry, name, Spy(name, getattr(telemetry, name)))

def run():
    statuses = [
        driver.request("POST", "/notes", agent_headers("POST", "/notes", NOTE), NOTE).status,
        driver.request("GET", "/health", {}, b"").status,
    ]
    made, calls[:] = list(calls), []
    return statuses, made

idle = run()
# What an application's start-up does after building its app: metrics first, then traces.
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
metered = run()
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
traced = run()
counted = 0
data = reader.get_metrics_data()
for resource in data.resource_metrics if data else ():
    for scope in resource.scope_metrics:
        for metric in scope.metrics:
            if metric.name == "chio.decisions":
                counted += sum(point.value for point in metric.data.data_points)
spans = sorted(span.name for span in exporter.get_finished_spans())
print(json.dumps({"idle": idle, "metered": metered, "traced": traced, "counted": counted, "spans": spans}))
"""


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
def test_no_sdk_costs_no_span_and_a_later_sdk_is_used(adapter: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, adapter],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # No SDK: the requests are answered as always, and telemetry makes no call at all.
    assert result["idle"] == [[201, 200], []]
    # A meter provider set later: counted and timed from the next request, still no span.
    statuses, made = result["metered"]
    assert statuses == [201, 200]
    assert made == ["decisions.add", "duration.record"] * 2
    # Then a tracer provider: spans too, with the metrics.
    statuses, made = result["traced"]
    assert statuses == [201, 200]
    assert made == ["decisions.add", "duration.record", "tracer.start_span"] * 2
    assert result["counted"] == 4
    assert result["spans"] == ["chio GET /health", "chio POST /notes"]
