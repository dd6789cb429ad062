"""The library's logger: structlog when the application configured it, else stdlib logging.

Events are snake_case names with key-value context (never a key, token or signature).
When the application has configured structlog (``structlog.is_configured()``), they go
through ``structlog.get_logger("chio_middleware")`` as before. Otherwise they go through
the standard ``logging`` logger ``chio_middleware``, so the application's levels and
handlers apply (``--log-level warning`` silences the info events) instead of structlog's
default printer. The library configures neither, ever.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["ChioLogger", "get_logger"]


class ChioLogger:
    """``.debug/.info/.warning/.error(event, **context)`` routed as the module docstring says."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._std = logging.getLogger(name)

    def _emit(self, method: str, level: int, event: str, context: dict[str, Any]) -> None:
        if structlog.is_configured():
            getattr(structlog.get_logger(self.name), method)(event, **context)
            return
        if not self._std.isEnabledFor(level):
            return
        exc_info = context.pop("exc_info", None)
        rendered = " ".join(f"{key}={value!r}" for key, value in context.items())
        self._std.log(
            level,
            "%s %s" if rendered else "%s%s",
            event,
            rendered,
            exc_info=exc_info,
            extra={"chio_event": event, "chio_context": context},
        )

    def debug(self, event: str, **context: Any) -> None:
        """Log ``event`` at DEBUG."""
        self._emit("debug", logging.DEBUG, event, context)

    def info(self, event: str, **context: Any) -> None:
        """Log ``event`` at INFO."""
        self._emit("info", logging.INFO, event, context)

    def warning(self, event: str, **context: Any) -> None:
        """Log ``event`` at WARNING."""
        self._emit("warning", logging.WARNING, event, context)

    def error(self, event: str, **context: Any) -> None:
        """Log ``event`` at ERROR."""
        self._emit("error", logging.ERROR, event, context)


def get_logger(name: str = "chio_middleware") -> ChioLogger:
    """The library's logger ``name`` (module level: ``logger = get_logger()``)."""
    return ChioLogger(name)
