"""What the shared backends agree on: the semantics of MemoryReplayStore, restated once.

SQLite and Redis must answer exactly as :class:`~chio_middleware.core.replay.MemoryReplayStore`
does (the conformance suite in ``tests/stores`` compares them operation by operation), so the
arithmetic that runs in Python (the token refill, the ``retry_after`` of a refusal) is the
memory store's own, imported from :mod:`chio_middleware.core.replay`. The Redis Lua
scripts repeat the refill in Lua, with the operations in the same order so
that IEEE doubles round identically.

The caller's clock is authoritative: every decision compares stored times with the ``now``
passed in. A backend's own expiry (Redis ``PEXPIRE``, SQLite pruning) only reclaims space,
and it waits :data:`EXPIRY_GRACE` seconds past the caller's expiry so that a host whose clock
lags, or a Redis whose clock runs ahead, never loses an entry a caller still considers live.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..core.replay import budget_exceeded, rate_limited, refill

__all__ = ["EXPIRY_GRACE", "budget_exceeded", "rate_limited", "redact_url", "refill"]

#: Seconds an expired entry is kept before a backend reclaims it (clock-skew allowance).
EXPIRY_GRACE = 60.0


def redact_url(url: str) -> str:
    """``url`` fit for a message: user info and query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(f"{item.partition('=')[0]}=***" for item in parts.query.split("&") if item)
    redacted = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else netloc + parts.path
    return redacted + (f"?{query}" if query else "")
