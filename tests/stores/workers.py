"""Process entry points of the multi-process races (importable by spawned children)."""

from __future__ import annotations

from typing import Any

from chio_middleware.core.errors import ReplayDetected, Unavailable
from chio_middleware.core.replay import BudgetExceeded
from chio_middleware.stores import open_store

# Generous: these races test atomicity, and a loaded CI machine must not turn a lock wait
# into a 503 that would be counted as neither a win nor a loss.
RACE_TIMEOUT = 10.0


def race_reserve(url: str, prefix: str, barrier: Any, results: Any) -> None:
    """Open the store, wait for every racer, try to reserve the one key, report."""
    store = open_store(url, key_prefix=prefix, timeout=RACE_TIMEOUT)
    try:
        barrier.wait(timeout=60)
        try:
            store.reserve("the-nonce", expires_at=1_000, now=1)
        except ReplayDetected:
            results.put("lost")
        except Unavailable as exc:
            results.put(f"unavailable: {exc}")
        else:
            results.put("won")
    finally:
        store.close()


def race_consume(url: str, prefix: str, limit: int, tries: int, barrier: Any, results: Any) -> None:
    """Open the store, wait for every racer, spend ``tries`` uses of one budget, report."""
    store = open_store(url, key_prefix=prefix, timeout=RACE_TIMEOUT)
    outcomes: list[int | str] = []
    try:
        barrier.wait(timeout=60)
        for _ in range(tries):
            try:
                outcomes.append(store.consume("the-budget", limit=limit, expires_at=1_000, now=1))
            except BudgetExceeded:
                outcomes.append("spent")
            except Unavailable as exc:
                outcomes.append(f"unavailable: {exc}")
    finally:
        store.close()
        results.put(outcomes)


def use_inherited_store(store: Any, results: Any) -> None:
    """In a forked child: use the store object opened by the parent, report what happened."""
    outcomes: list[str] = [f"inherited connections: {len(store._inherited)}"]
    try:
        store.reserve("parent-key", expires_at=1_000, now=1)
        outcomes.append("parent-key reserved again")
    except ReplayDetected:
        outcomes.append("parent-key refused")
    except Unavailable as exc:
        outcomes.append(f"unavailable: {exc}")
    try:
        store.reserve("child-key", expires_at=1_000, now=1)
        outcomes.append("child-key reserved")
    except (ReplayDetected, Unavailable) as exc:
        outcomes.append(f"child-key failed: {exc}")
    results.put(outcomes)
