"""With OpenTelemetry's API but no SDK, the middleware skips the no-op API calls, and it
records from the moment an application sets an SDK's providers (in a fresh process: the
global providers can be set once)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
from wsgiref.util import setup_testing_defaults

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import chio_middleware._otel as otel
from chio_middleware import ChioSettings
from chio_middleware.wsgi import ChioWSGIMiddleware

calls = []
attributes = otel._attributes
otel._attributes = lambda evaluation: calls.append(1) or attributes(evaluation)

def app(environ, start_response):
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"ok"]

middleware = ChioWSGIMiddleware(
    app, settings=ChioSettings(receipt_sink="memory", signing_key="11" * 32, telemetry="otel")
)

def get():
    environ = {}
    setup_testing_defaults(environ)
    statuses = []
    b"".join(middleware(environ, lambda status, headers, exc=None: statuses.append(status)))
    return statuses[0]

assert middleware.runtime.telemetry is not None
assert get() == "200 OK" and calls == [], calls  # no SDK: nothing was built for the API

reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

assert get() == "200 OK" and calls, calls  # set after start-up: used from now on
spans = exporter.get_finished_spans()
assert [span.name for span in spans] == ["chio GET /"], spans
names = [
    metric.name
    for resource in reader.get_metrics_data().resource_metrics
    for scope in resource.scope_metrics
    for metric in scope.metrics
]
assert "chio.decisions" in names, names
print("ok")
"""


def test_no_sdk_no_work_then_an_sdk_set_later_records() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
