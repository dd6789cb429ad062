"""With OpenTelemetry installed: the metrics and spans of a scripted run, read in memory."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.middleware.harness import KERNEL, agent_headers, make_driver

NOTE = json.dumps({"title": "t", "body": "b"}).encode()


@dataclass
class Readers:
    metrics: InMemoryMetricReader
    spans: InMemorySpanExporter


@pytest.fixture(scope="session")
def readers() -> Iterator[Readers]:
    """The SDK behind the global providers, once per session (OpenTelemetry allows one)."""
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield Readers(reader, exporter)


def _points(reader: InMemoryMetricReader, name: str) -> dict[tuple[Any, ...], Any]:
    data = reader.get_metrics_data()
    found: dict[tuple[Any, ...], Any] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            if scope.scope.name != "chio_middleware":
                continue
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        found[tuple(sorted(point.attributes.items()))] = point
    return found


def _counts(reader: InMemoryMetricReader) -> Counter[tuple[Any, ...]]:
    return Counter({k: p.value for k, p in _points(reader, "chio.decisions").items()})


def _histogram_total(reader: InMemoryMetricReader) -> tuple[int, float]:
    points = _points(reader, "chio.evaluation.duration").values()
    return sum(p.count for p in points), sum(p.sum for p in points)


def _key(verdict: str, code: str, route: str, method: str, tool: str) -> tuple[Any, ...]:
    return tuple(
        sorted(
            {
                "chio.verdict": verdict,
                "chio.code": code,
                "http.route": route,
                "http.request.method": method,
                "chio.tool": tool,
            }.items()
        )
    )


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
def test_a_scripted_run_is_counted_timed_and_traced(readers: Readers, adapter: str) -> None:
    before, (count_before, _) = _counts(readers.metrics), _histogram_total(readers.metrics)
    driver = make_driver(adapter, telemetry="otel")
    replayed = agent_headers("POST", "/notes", NOTE)
    script = [
        ("POST", "/notes", replayed, 201),
        ("POST", "/notes", agent_headers("POST", "/notes", NOTE), 201),
        ("POST", "/notes", replayed, 401),
        ("POST", "/notes", {}, 401),
        ("GET", "/health", {}, 200),
    ]
    for method, path, headers, status in script:
        assert driver.request(method, path, headers, NOTE if method == "POST" else b"").status == status
    delta = _counts(readers.metrics) - before
    write = ("POST", "srv-notes/write_note")
    assert delta == Counter(
        {
            _key("allow", "none", "/notes", *write): 2,
            _key("deny", "chio_replay_detected", "/notes", *write): 1,
            _key("deny", "chio_capability_required", "/notes", *write): 1,
            _key("allow", "none", "/health", "GET", "none"): 1,
        }
    )
    count_after, total = _histogram_total(readers.metrics)
    assert count_after - count_before == 5 and total > 0

    request_ids = {r.request_id for r in driver.sink.receipts}
    spans = [s for s in readers.spans.get_finished_spans() if s.attributes["chio.request_id"] in request_ids]
    assert sorted(s.name for s in spans) == ["chio GET /health"] + ["chio POST /notes"] * 4
    by_code = Counter(str(s.attributes["chio.code"]) for s in spans)
    assert by_code == Counter({"none": 3, "chio_replay_detected": 1, "chio_capability_required": 1})
    for span in spans:
        receipt = next(r for r in driver.sink.receipts if r.request_id == span.attributes["chio.request_id"])
        assert span.attributes["chio.receipt_id"] == receipt.id
        assert span.attributes["http.response.status_code"] == receipt.response_status
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time
        assert span.status.is_ok == (receipt.verdict.verdict == "allow")
    # never a credential: no header value, proof, signature or key in any attribute
    secrets = [*replayed.values(), KERNEL.public_key.hex, KERNEL.seed_hex()]
    secrets += [r.signature for r in driver.sink.receipts]
    for span in spans:
        for value in span.attributes.values():
            assert not any(secret in str(value) for secret in secrets)
