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

import threading
import time
import uuid
from urllib.parse import urlsplit

from ..core.replay import budget_exceeded, rate_limited, refill
from ..logs import get_logger

__all__ = [
    "EXPIRY_GRACE",
    "SAME_CLOCK_S",
    "EpochWatch",
    "budget_exceeded",
    "new_epoch",
    "rate_limited",
    "redact_url",
    "redis_missing",
    "refill",
    "stamp_floor",
]

_log = get_logger()

#: Seconds an expired entry is kept before a backend reclaims it (clock-skew allowance).
EXPIRY_GRACE = 60.0
#: A caller's ``now`` this close to the host's wall clock was read from it (the system clock
#: the middleware uses); farther off, it is a made-up clock (a test's), and it alone is used
#: for a loss's stamp. No request waits 30 days between its start and a store call.
SAME_CLOCK_S = 30 * 86400.0


def stamp_floor(now: float) -> tuple[float, bool]:
    """The earliest moment a loss noticed by a store call made now may be stamped with, and
    whether ``now`` was read from the wall clock.

    Not the caller's ``now`` alone: that was taken when its request began, and the body (as
    slowly as its client sends it), the guards and a wait for the store all come before the
    call, while other workers accept proofs that a loss then erases. Their ``issued_at`` lies
    after the caller's ``now``: stamped with it, they would be accepted again (found by two
    outside reviews). So the wall clock read as the call is made, when ``now`` came from it.
    """
    wall = time.time()
    if abs(wall - now) <= SAME_CLOCK_S:
        return max(now, wall), True
    return now, False


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


def redis_missing(exc: ModuleNotFoundError, url: str, what: str) -> ValueError:
    """The error for a Redis store URL when redis-py is not installed; ``exc`` itself is
    re-raised when the missing module is another one (a real bug, not a missing extra)."""
    if exc.name is None or exc.name.partition(".")[0] != "redis":
        raise exc
    return ValueError(
        f"the {what} {redact_url(url)!r} needs redis-py: pip install 'chio-middleware[redis]'"
    )


def new_epoch() -> str:
    """A fresh epoch id for a store's marker."""
    return uuid.uuid4().hex


class EpochWatch:
    """What one process knows of a shared store's epoch marker (amnesia detection).

    Every operation of a shared store reads the marker in the same atomic step as its own
    work and hands it to :meth:`observe` (``epoch``, ``forgot_at``). The marker is created
    with the store; when it is missing, the step recreates it, and when this process knew
    another epoch, it stamps ``forgot_at`` with the moment the step ran (the later of the
    wall clock as the call was made, :func:`stamp_floor`, and the store's own clock), the
    moment the loss was noticed, which every process then reads from the marker.
    A process that starts after the loss learns it from the marker too. :attr:`forgotten_at`
    is the latest such moment seen.

    :attr:`blind` is set when the process could not read the marker as it opened the store
    (the store was unreachable). It was running while other processes may have created a
    marker that was then lost, so until it knows an epoch it cannot tell a missing marker
    from a lost one, and treats it as lost: it stamps ``forgot_at`` too (fail closed). Its
    price: started before a new Redis, such a process refuses the proofs, nonces and
    budgeted capabilities issued before its first operation, as after a loss.
    """

    def __init__(self, store: str, *, blind: bool = False) -> None:
        self.store = store
        self.known: str | None = None
        self.blind = blind
        self.forgotten_at: float | None = None
        self._lock = threading.Lock()

    def observe(self, epoch: str, forgot_at: float | None) -> None:
        """Take in the marker as an operation found (or made) it."""
        if epoch == self.known and forgot_at == self.forgotten_at:
            return
        with self._lock:
            self.known = epoch
            if forgot_at is None or (
                self.forgotten_at is not None and forgot_at <= self.forgotten_at
            ):
                return
            self.forgotten_at = forgot_at
        _log.error(
            "chio_replay_store_forgot_its_state",
            store=self.store,
            forgotten_at=forgot_at,
            # Far above 0: the store's clock (or the noticing host's) runs ahead of this
            # host's, or the noticing call reached the store late; fresh proofs are refused
            # until this host's clock passes forgotten_at.
            ahead_of_this_host_s=round(forgot_at - time.time(), 3),
            message=(
                "the replay store lost its state (its epoch marker disappeared or changed: a "
                "restart without persistence, a flush, a failover that lost writes, a deleted "
                "file; or a process that could not reach the store when it started found no "
                "marker, and cannot tell a new store from an emptied one). DPoP proofs and "
                "execution nonces issued before forgotten_at, and max_invocations grants of "
                "capabilities issued before it, are refused (chio_state_forgotten); fresh "
                "ones are accepted."
            ),
        )
