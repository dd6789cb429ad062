"""Receipt sinks: where every signed HttpReceipt goes besides the response headers.

A sink takes part in signing: :meth:`ReceiptSink.record` is handed a ``sign`` callback and
calls it with the metadata the sink adds (a chained log adds its sequence number and the
previous line's hash, PROTOCOL.md 7), so the receipt in the header and the one in the sink
are the same signed object. A sink that cannot record raises; the middleware then answers
503 ``chio_unavailable`` (fail closed) and never forwards an unrecorded allow. ``ready()``
is asked before the application runs, so a sink known to be broken (closed, disk full)
refuses the request before any side effect; a write that fails only when the response
starts still turns the response into a 503, but the application has then run.

A sink whose ``record`` may wait (a lock held by another process) honours
:func:`without_waiting`: called under it, ``record`` raises :class:`SinkBusy` instead of
waiting, before calling ``sign``. The ASGI adapter records that way on the event loop and,
on ``SinkBusy``, records again in a worker thread, where waiting is allowed. A sink whose
``blocking`` attribute is true is always called in a thread.

Backends: :class:`MemorySink` (tests), :class:`CallbackSink`, :class:`StructlogSink`, and
the JSON Lines file sink in :mod:`chio_middleware.sinks.jsonl`. :func:`open_sink` builds
one from the ``receipt_sink`` setting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar, runtime_checkable

import structlog

from ..core.models import HttpReceipt

__all__ = [
    "CallbackSink",
    "MemorySink",
    "ReceiptSink",
    "SignReceipt",
    "SinkBusy",
    "SinkError",
    "StructlogSink",
    "must_not_wait",
    "open_sink",
    "without_waiting",
]

#: Signs the pending receipt with ``extra_metadata`` merged into its ``metadata``.
SignReceipt = Callable[[Mapping[str, Any]], HttpReceipt]


class SinkError(RuntimeError):
    """A sink could not record a receipt."""


class SinkBusy(SinkError):
    """The sink would have had to wait (a lock held elsewhere) under :func:`without_waiting`:
    nothing was recorded and ``sign`` was not called; record again where waiting is allowed."""


_NO_WAIT: ContextVar[bool] = ContextVar("chio_sink_no_wait", default=False)
_T = TypeVar("_T")


def without_waiting(fn: Callable[..., _T], *args: Any) -> _T:
    """Call ``fn(*args)`` asking sinks not to wait (``SinkBusy`` instead); for event loops."""
    token = _NO_WAIT.set(True)
    try:
        return fn(*args)
    finally:
        _NO_WAIT.reset(token)


def must_not_wait() -> bool:
    """True inside :func:`without_waiting`: a sink that would wait raises ``SinkBusy``."""
    return _NO_WAIT.get()


@runtime_checkable
class ReceiptSink(Protocol):
    """Where receipts are recorded."""

    def record(self, sign: SignReceipt) -> HttpReceipt:
        """Sign the receipt through ``sign`` and record it; raise on failure."""

    def flush(self) -> None:
        """Make everything recorded so far durable (per the sink's policy)."""

    def ready(self) -> None:
        """Raise ``SinkError`` if a record would fail now; called before the app runs."""

    def close(self) -> None:
        """Flush and release resources; later ``record`` calls raise."""


class MemorySink:
    """Keeps the latest receipts in a list (tests, benchmarks, apps that inspect receipts).

    Bounded, so a long run neither grows memory nor lengthens GC pauses: past
    ``max_receipts`` the oldest half is dropped (``dropped`` counts them). The list is
    never longer than ``max_receipts`` and always ends with the latest receipt.
    """

    def __init__(self, max_receipts: int = 10_000) -> None:
        if max_receipts < 1:
            raise ValueError("max_receipts must be at least 1")
        self.receipts: list[HttpReceipt] = []
        self.max_receipts = max_receipts
        self.dropped = 0
        self._lock = threading.Lock()
        self.closed = False

    def ready(self) -> None:
        """Refuse once closed."""
        if self.closed:
            raise SinkError("sink is closed")

    def record(self, sign: SignReceipt) -> HttpReceipt:
        """Sign and append."""
        if self.closed:
            raise SinkError("sink is closed")
        receipt = sign({})
        with self._lock:
            receipts = self.receipts
            if len(receipts) >= self.max_receipts:
                drop = max(1, self.max_receipts // 2)
                del receipts[:drop]
                self.dropped += drop
            receipts.append(receipt)
        return receipt

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Refuse further receipts."""
        self.closed = True


class CallbackSink:
    """Hands each receipt to an application callback; an exception is a sink failure."""

    def __init__(self, callback: Callable[[HttpReceipt], object]) -> None:
        self.callback = callback

    def ready(self) -> None:
        """Always ready (the callback decides at record time)."""

    def record(self, sign: SignReceipt) -> HttpReceipt:
        """Sign and pass to the callback."""
        receipt = sign({})
        try:
            self.callback(receipt)
        except Exception as exc:
            raise SinkError(f"receipt callback failed: {type(exc).__name__}") from exc
        return receipt

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to close."""


class StructlogSink:
    """Emits one ``chio_receipt`` event per receipt (for apps that ship their logs)."""

    def __init__(self, logger_name: str = "chio_middleware.receipts") -> None:
        self.logger = structlog.get_logger(logger_name)

    def ready(self) -> None:
        """Always ready."""

    def record(self, sign: SignReceipt) -> HttpReceipt:
        """Sign and log the whole signed receipt as the event's ``receipt`` field."""
        receipt = sign({})
        try:
            self.logger.info("chio_receipt", receipt=receipt.to_wire())
        except Exception as exc:
            raise SinkError(f"structlog sink failed: {type(exc).__name__}") from exc
        return receipt

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to close."""


def open_sink(spec: str, **options: Any) -> ReceiptSink:
    """Build a sink from a ``receipt_sink`` setting: ``jsonl:<path>``, ``structlog``, ``memory``."""
    if spec == "memory":
        return MemorySink()
    if spec == "structlog":
        return StructlogSink()
    if spec.startswith("jsonl:") and len(spec) > len("jsonl:"):
        from .jsonl import JsonlSink

        return JsonlSink(spec[len("jsonl:") :], **options)
    raise ValueError(f"unknown receipt sink {spec!r}: use jsonl:<path>, structlog or memory")
