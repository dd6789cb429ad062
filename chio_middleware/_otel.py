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

#: The global providers that record nothing: the API's stand-ins before an SDK is set, and
#: its explicit no-ops. While both are idle a decision costs two calls, not a span and two
#: attribute dicts (~200 bytecodes a request in the defaults). Read on every decision: an
#: SDK set after the middleware was built is used from its first request on.
_IDLE_TRACER_PROVIDERS: tuple[type, ...] = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
try:  # the metrics stand-in's class is not public; without it, metrics are always recorded
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    _IDLE_METER_PROVIDERS: tuple[type, ...] = (_ProxyMeterProvider, metrics.NoOpMeterProvider)
except ImportError:  # pragma: no cover - another opentelemetry-api layout
    _IDLE_METER_PROVIDERS = (metrics.NoOpMeterProvider,)
_meter_provider = metrics.get_meter_provider
_tracer_provider = trace.get_tracer_provider


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
        """Count, time and trace one decision (nothing while no SDK would record it)."""
        metering = not isinstance(_meter_provider(), _IDLE_METER_PROVIDERS)
        tracing = not isinstance(_tracer_provider(), _IDLE_TRACER_PROVIDERS)
        if not (metering or tracing):
            return
        attributes = _attributes(evaluation)
        if metering:
            self.decisions.add(1, attributes)
            evaluated = evaluation.evaluated or time.perf_counter()
            self.duration.record(max(0.0, evaluated - evaluation.started), attributes)
        if not tracing:
            return
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
        if not isinstance(_meter_provider(), _IDLE_METER_PROVIDERS):
            self.sink_failures.add(1, _attributes(evaluation))
