"""What the shared backends agree on: the semantics of MemoryReplayStore, restated once.

SQLite and Redis must answer exactly as :class:`~chio_middleware.core.replay.MemoryReplayStore`
does (the conformance suite in ``tests/stores`` compares them operation by operation), so the
arithmetic that runs in Python (the token refill, the ``retry_after`` of a refusal) lives here
once. The Redis Lua scripts repeat the refill in Lua, with the operations in the same order so
that IEEE doubles round identically.

The caller's clock is authoritative: every decision compares stored times with the ``now``
passed in. A backend's own expiry (Redis ``PEXPIRE``, SQLite pruning) only reclaims space,
and it waits :data:`EXPIRY_GRACE` seconds past the caller's expiry so that a host whose clock
lags, or a Redis whose clock runs ahead, never loses an entry a caller still considers live.
"""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from ..core.errors import RateLimited
from ..core.replay import BudgetExceeded, TokenBucket

__all__ = ["EXPIRY_GRACE", "budget_exceeded", "rate_limited", "redact_url", "refill"]

#: Seconds an expired entry is kept before a backend reclaims it (clock-skew allowance).
EXPIRY_GRACE = 60.0


def refill(tokens: float, stamp: float, bucket: TokenBucket, now: float) -> float:
    """The tokens in a bucket that held ``tokens`` at ``stamp``, refilled up to ``now``."""
    return min(float(bucket.burst), tokens + max(0.0, now - stamp) * bucket.rate)


def rate_limited(tokens: float, bucket: TokenBucket) -> RateLimited:
    """The refusal of a bucket holding ``tokens`` (< 1): wait until one whole token is back."""
    return RateLimited("rate limit reached", retry_after=math.ceil((1.0 - tokens) / bucket.rate))


def budget_exceeded(limit: int, expiry: float, now: float) -> BudgetExceeded:
    """The refusal of a spent budget: wait until its window ends at ``expiry``."""
    return BudgetExceeded(
        f"invocation budget of {limit} is spent", retry_after=max(1, math.ceil(expiry - now))
    )


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
