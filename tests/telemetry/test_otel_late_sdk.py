"""OpenTelemetry installed but no SDK set when the middleware is built (an application that
configures telemetry after building its app): requests are answered as always, and an SDK
set later gets every signal from the next request on.

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
def test_an_sdk_set_after_the_middleware_is_used(adapter: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, adapter],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    every = ["decisions.add", "duration.record", "tracer.start_span"] * 2
    # No SDK: answered as always; the calls go to the API's no-op stand-ins.
    assert result["idle"] == [[201, 200], every]
    assert result["metered"] == [[201, 200], every]
    assert result["traced"] == [[201, 200], every]
    # Only what was sent after each provider was set is recorded by it: the two requests
    # after the meter provider and the two after the tracer provider are counted, the
    # spans are the last two requests'.
    assert result["counted"] == 4
    assert result["spans"] == ["chio GET /health", "chio POST /notes"]
