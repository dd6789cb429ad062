"""OpenTelemetry metrics and spans of the decisions (the optional ``otel`` extra).

The ``telemetry`` setting decides: ``"auto"`` (default) instruments when the
``opentelemetry-api`` package is installed (``pip install 'chio-middleware[otel]'``) and
does nothing otherwise; ``"otel"`` requires it (a clear error if it is missing); ``"off"``
never instruments. The check uses :func:`importlib.util.find_spec`, which imports nothing:
without the extra no OpenTelemetry module is ever imported, and a request pays one
``is None`` test. Importing ``chio_middleware`` never imports OpenTelemetry either: only a
middleware built with telemetry on does, through :mod:`chio_middleware._otel`.

What is recorded, through the global providers the application configured (the
instrumentation-library convention: the API is a no-op until an SDK is installed):

- counter ``chio.decisions`` (``{decision}``): one per decision, by ``chio.verdict``,
  ``chio.code`` (the PROTOCOL.md 8 error code, ``"none"`` for an allow), ``http.route``
  (the route pattern), ``http.request.method`` and ``chio.tool`` (``server/tool`` or
  ``"none"``);
- histogram ``chio.evaluation.duration`` (``s``): the middleware's own evaluation time
  (verification, replay store, guards), same attributes;
- counter ``chio.receipt_sink.failures``: receipts that could not be recorded (503);
- a span ``chio <METHOD> <route>`` per request, from its start to its receipt, with those
  attributes plus ``http.response.status_code``, ``chio.guard``, ``chio.receipt_id``,
  ``chio.request_id`` and ``chio.capability_id``. Never a credential: no token, proof,
  nonce, signature, key or header value is an attribute.
"""

from __future__ import annotations

import importlib.util
from typing import Protocol

from .core.engine import Evaluation
from .core.models import HttpReceipt

__all__ = ["TELEMETRY_MODES", "Telemetry", "open_telemetry"]

TELEMETRY_MODES = ("auto", "otel", "off")


class Telemetry(Protocol):
    """What the runtime reports to (implemented by :class:`chio_middleware._otel.OtelTelemetry`)."""

    def decision(self, evaluation: Evaluation, receipt: HttpReceipt) -> None:
        """Count one decision, time its evaluation, and emit its span."""

    def sink_failure(self, evaluation: Evaluation) -> None:
        """Count a receipt that could not be recorded."""


def otel_installed() -> bool:
    """Whether the OpenTelemetry API is importable (imports nothing when it is absent)."""
    try:
        if importlib.util.find_spec("opentelemetry") is None:
            return False
        return importlib.util.find_spec("opentelemetry.metrics") is not None
    except (ImportError, ValueError):
        return False


def open_telemetry(mode: str) -> Telemetry | None:
    """The telemetry for the ``telemetry`` setting, or ``None`` when there is none."""
    if mode not in TELEMETRY_MODES:
        raise ValueError(f"telemetry: expected one of {', '.join(TELEMETRY_MODES)}, not {mode!r}")
    if mode == "off":
        return None
    if not otel_installed():
        if mode == "otel":
            raise ValueError(
                "telemetry='otel' needs OpenTelemetry: pip install 'chio-middleware[otel]'"
            )
        return None
    from ._otel import OtelTelemetry

    return OtelTelemetry()
