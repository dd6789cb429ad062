"""The OpenTelemetry side of :mod:`chio_middleware.telemetry` (imported only when it is on)."""

from __future__ import annotations

import time

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from .core.engine import Evaluation
from .core.models import HttpReceipt

__all__ = ["INSTRUMENTATION_NAME", "OtelTelemetry"]

INSTRUMENTATION_NAME = "chio_middleware"


def _attributes(evaluation: Evaluation) -> dict[str, AttributeValue]:
    """The low-cardinality attributes of a decision (metrics and spans)."""
    error = evaluation.error
    route = evaluation.route
    return {
        "chio.verdict": "allow" if error is None else "deny",
        "chio.code": "none" if error is None else error.code,
        "http.route": evaluation.route_pattern,
        "http.request.method": evaluation.request.method,
        "chio.tool": "none"
        if route is None or route.unbound or route.public
        else f"{route.tool_server}/{route.tool_name}",
    }


class OtelTelemetry:
    """Counters, a histogram and a span per request, on the global providers."""

    def __init__(self) -> None:
        meter = metrics.get_meter(INSTRUMENTATION_NAME)
        self.decisions = meter.create_counter(
            "chio.decisions", unit="{decision}", description="Chio decisions by verdict and code"
        )
        self.duration = meter.create_histogram(
            "chio.evaluation.duration",
            unit="s",
            description="Time the middleware spent evaluating a request (not the app)",
        )
        self.sink_failures = meter.create_counter(
            "chio.receipt_sink.failures",
            unit="{receipt}",
            description="Receipts that could not be recorded (answered 503)",
        )
        self.tracer = trace.get_tracer(INSTRUMENTATION_NAME)

    def decision(self, evaluation: Evaluation, receipt: HttpReceipt) -> None:
        """Count, time and trace one decision."""
        attributes = _attributes(evaluation)
        self.decisions.add(1, attributes)
        evaluated = evaluation.evaluated or time.perf_counter()
        self.duration.record(max(0.0, evaluated - evaluation.started), attributes)
        span_attributes: dict[str, AttributeValue] = {
            **attributes,
            "http.response.status_code": receipt.response_status,
            "chio.receipt_id": receipt.id,
            "chio.request_id": evaluation.request_id,
        }
        if evaluation.error is not None:
            span_attributes["chio.guard"] = evaluation.error.guard
        if receipt.capability_id:
            span_attributes["chio.capability_id"] = receipt.capability_id
        span = self.tracer.start_span(
            f"chio {evaluation.request.method} {evaluation.route_pattern}",
            kind=SpanKind.INTERNAL,
            attributes=span_attributes,
            start_time=evaluation.started_ns,
        )
        if evaluation.error is not None:
            span.set_status(Status(StatusCode.ERROR, evaluation.error.code))
        span.end()

    def sink_failure(self, evaluation: Evaluation) -> None:
        """Count a receipt the sink could not record."""
        self.sink_failures.add(1, _attributes(evaluation))
