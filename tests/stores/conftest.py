"""Fixtures of the store suite: every backend, driven through its sync and its async API.

Redis tests use the real server at ``CHIO_TEST_REDIS_URL`` (default database 15 of
127.0.0.1:6379), a fresh key prefix per test, and delete their keys afterwards. An
unreachable Redis fails those tests: it never skips them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from chio_middleware.core.replay import ReplayStore, TokenBucket, as_async
from chio_middleware.stores import open_store

REDIS_URL = os.environ.get("CHIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
BACKENDS = ["memory", "sqlite", "redis"]
SHARED_BACKENDS = ["sqlite", "redis"]


class AsyncDriven:
    """A store's async view, driven from sync test code on one private event loop."""

    def __init__(self, store: ReplayStore) -> None:
        self.loop = asyncio.new_event_loop()
        self.view = as_async(store)

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def reserve(self, key: str, *, expires_at: float, now: float, owner: str | None = None) -> None:
        self.run(self.view.reserve(key, expires_at=expires_at, now=now, owner=owner))

    def consume(self, key: str, *, limit: int, expires_at: float, now: float) -> int:
        return int(self.run(self.view.consume(key, limit=limit, expires_at=expires_at, now=now)))

    def take(self, key: str, *, bucket: TokenBucket, now: float) -> None:
        self.run(self.view.take(key, bucket=bucket, now=now))

    def close(self) -> None:
        aclose = getattr(self.view, "aclose", None)
        if aclose is not None:
            self.run(aclose())
        self.loop.close()


def delete_keys(url: str, prefix: str) -> None:
    """Delete every Redis key under ``prefix``."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis, checked once; unreachable means failure, not a skip."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        pytest.fail(f"the Redis tests need Redis at {REDIS_URL} (CI runs one): {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    prefix = f"chio-test:{uuid.uuid4().hex}:"
    yield prefix
    delete_keys(redis_url, prefix)


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], tuple[str, str]]:
    """Returns ``(url, key_prefix)`` of a fresh store of the named backend."""

    def make(backend: str) -> tuple[str, str]:
        if backend == "memory":
            return "memory://", "chio:"
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / 'chio-state.db'}", "chio:"
        url: str = request.getfixturevalue("redis_url")
        prefix: str = request.getfixturevalue("redis_prefix")
        return url, prefix

    return make


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn."""
    return str(request.param)


@pytest.fixture(params=SHARED_BACKENDS)
def shared_backend(request: pytest.FixtureRequest) -> str:
    """Each backend shared between processes in turn."""
    return str(request.param)


@pytest.fixture
def opened(
    store_url: Callable[[str], tuple[str, str]],
) -> Iterator[Callable[..., ReplayStore]]:
    """Opens stores of a backend (all on the same URL and prefix) and closes them afterwards."""
    stores: list[ReplayStore] = []

    def open_(backend: str, **options: Any) -> ReplayStore:
        url, prefix = store_url(backend)
        # These tests pin semantics, not deadlines: a generous timeout keeps a slow first
        # connection on a busy CI machine from turning into a 503 (timeouts have their own
        # tests in test_redis.py and test_sqlite.py).
        options.setdefault("timeout", 5.0)
        store = open_store(url, key_prefix=prefix, **options)
        stores.append(store)
        return store

    yield open_
    for store in stores:
        store.close()


@pytest.fixture(params=["sync", "async"])
def store(
    request: pytest.FixtureRequest, backend: str, opened: Callable[..., ReplayStore]
) -> Iterator[Any]:
    """A store of each backend, used through its sync API and through its async view."""
    sync_store = opened(backend)
    if request.param == "sync":
        yield sync_store
        return
    driven = AsyncDriven(sync_store)
    yield driven
    driven.close()
