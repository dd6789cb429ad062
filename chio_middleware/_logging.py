"""Logging an unexpected exception without credentials (no locals, no messages).

A traceback handed to a log renderer as ``exc_info`` can show far more than the stack:
structlog's development ``ConsoleRenderer`` formats it with ``rich`` when rich is installed,
with ``show_locals=True``, which prints every frame's local variables (the request headers,
the capability, the proof). And an exception's message may quote the data it choked on.

So the library never passes ``exc_info`` for a failure it handles. It logs, at ERROR, the
exception's type and where it was raised (file, line, function) with a fixed message; and
at DEBUG the stack as plain text: file, line, function and source line of each frame and
the type of each chained exception, never a local variable or an exception message.
"""

from __future__ import annotations

import traceback
from typing import Any

from .logs import get_logger

__all__ = ["log_failure", "safe_traceback"]

logger = get_logger()

#: How many chained exceptions (``__cause__``/``__context__``) the DEBUG traceback follows.
_MAX_CHAIN = 8


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _where(exc: BaseException) -> str | None:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return None
    last = frames[-1]
    return f"{last.filename}:{last.lineno} in {last.name}"


def safe_traceback(exc: BaseException) -> str:
    """The stack of ``exc`` and its chained exceptions: frames and types, nothing else.

    Source lines come from the code on disk (``linecache``), not from the running frame.
    """
    chain: list[tuple[BaseException, str]] = []
    current: BaseException | None = exc
    seen: set[int] = set()
    link = ""
    while current is not None and id(current) not in seen and len(chain) < _MAX_CHAIN:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, "The above exception was the direct cause of:"
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, "During handling of the above exception:"
        else:
            current = None
    parts: list[str] = []
    for index, (item, _) in enumerate(reversed(chain)):
        if index:
            parts.append(f"\n{chain[len(chain) - index][1]}\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.StackSummary.extract(traceback.walk_tb(item.__traceback__)).format())
        parts.append(f"{_type_name(item)} (message not logged)\n")
    return "".join(parts)


def log_failure(event: str, exc: BaseException, **fields: Any) -> None:
    """Log an unexpected exception: type and place at ERROR, the bare stack at DEBUG."""
    kind = _type_name(exc)
    logger.error(
        event,
        error=kind,
        where=_where(exc),
        detail="unexpected exception; its traceback (no locals, no message) is at DEBUG",
        **fields,
    )
    logger.debug(f"{event}_traceback", error=kind, traceback=safe_traceback(exc), **fields)
