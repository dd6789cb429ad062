"""The Redis backend beyond the conformance suite: keys, expiry safety net, failure, recovery."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from chio_middleware.core.errors import ReplayDetected, Unavailable
from chio_middleware.core.replay import TokenBucket, as_async
from chio_middleware.stores import open_store
from chio_middleware.stores._common import EXPIRY_GRACE
from chio_middleware.stores.redis import AsyncRedisReplayStore, RedisReplayStore

from .gate import TcpGate

GRACE_MS = EXPIRY_GRACE * 1000


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the test database, to look at what the store wrote."""
    plain = redis.Redis.from_url(redis_url, decode_responses=True)
    yield plain
    plain.close()


@pytest.fixture
def store(redis_url: str, redis_prefix: str) -> Iterator[RedisReplayStore]:
    opened = RedisReplayStore(redis_url, key_prefix=redis_prefix)
    yield opened
    opened.close()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A local port that refuses connections (bound, not listening, so nobody takes it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that accepts connections (in the kernel's backlog) and never answers."""
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def gate(redis_url: str) -> Iterator[TcpGate]:
    target = urlsplit(redis_url)
    relay = TcpGate((target.hostname or "127.0.0.1", target.port or 6379))
    yield relay
    relay.close()


def _run_view(view: AsyncRedisReplayStore, coroutine: Any) -> Any:
    async def run() -> Any:
        try:
            return await coroutine
        finally:
            await view.aclose()

    return asyncio.run(run())


def test_open_store_builds_a_redis_store(redis_url: str, redis_prefix: str) -> None:
    store = open_store(redis_url, key_prefix=redis_prefix)
    try:
        assert isinstance(store, RedisReplayStore)
        assert isinstance(as_async(store), AsyncRedisReplayStore)
        assert store.async_view() is store.async_view()
    finally:
        store.close()


def test_keys_carry_the_prefix_and_a_safety_net_expiry(
    store: RedisReplayStore, client: redis.Redis, redis_prefix: str
) -> None:
    store.reserve("nonce", expires_at=1_003_600, now=1_000_000)
    store.consume("cap", limit=5, expires_at=1_003_600, now=1_000_000)
    store.take("agent", bucket=TokenBucket(rate=0.001, burst=2), now=1_000_000)
    keys = sorted(client.scan_iter(match=redis_prefix + "*"))
    names = ("bucket:agent", "budget:cap", "epoch", "replay:nonce")
    assert keys == [redis_prefix + name for name in names]
    assert client.pttl(redis_prefix + "epoch") == -1  # the marker never expires
    # expiry, first use, presentations (the replay observation)
    assert client.get(redis_prefix + "replay:nonce") == "1003600.0 1000000.0 1"
    assert client.hgetall(redis_prefix + "budget:cap") == {"count": "1", "expires_at": "1003600.0"}
    # Relative to the caller's clock (fake times here), plus the grace: live long enough.
    for key, lifetime_ms in (("replay:nonce", 3_600_000), ("budget:cap", 3_600_000)):
        pttl = client.pttl(redis_prefix + key)
        assert lifetime_ms < pttl <= lifetime_ms + GRACE_MS
    bucket_pttl = client.pttl(redis_prefix + "bucket:agent")  # 1 token missing at 0.001/s
    assert 1_000_000 < bucket_pttl <= 1_000_000 + GRACE_MS


def test_the_callers_clock_decides_not_redis(store: RedisReplayStore, client: redis.Redis) -> None:
    """Expiry times far in the past of Redis' clock are still honoured by the caller's now."""
    store.reserve("old", expires_at=110, now=100)
    with pytest.raises(ReplayDetected):
        store.reserve("old", expires_at=120, now=105)
    store.reserve("old", expires_at=130, now=110)


def test_prefixes_separate_deployments(redis_url: str, redis_prefix: str) -> None:
    first = RedisReplayStore(redis_url, key_prefix=redis_prefix + "one:")
    second = RedisReplayStore(redis_url, key_prefix=redis_prefix + "two:")
    try:
        first.reserve("k", expires_at=200, now=100)
        second.reserve("k", expires_at=200, now=100)
        with pytest.raises(ReplayDetected):
            second.reserve("k", expires_at=200, now=100)
    finally:
        first.close()
        second.close()


def test_unexpected_data_at_a_key_is_unavailable_not_an_allow(
    store: RedisReplayStore, client: redis.Redis, redis_prefix: str
) -> None:
    client.hset(redis_prefix + "replay:k", "x", "1")  # WRONGTYPE for the reservation script
    with pytest.raises(Unavailable) as info:
        store.reserve("k", expires_at=200, now=100)
    assert info.value.status == 503 and info.value.code == "chio_unavailable"


def test_retries_are_off_and_waits_bounded(store: RedisReplayStore) -> None:
    pool = store._client.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    options = pool.connection_kwargs
    assert options["retry"].get_retries() == 0
    assert options["socket_timeout"] == options["socket_connect_timeout"] == store.timeout
    assert pool.timeout == store.timeout


def test_refused_connection_is_unavailable_without_the_password(refused_port: int) -> None:
    url = f"redis://:s3cret-pass@127.0.0.1:{refused_port}/15"
    store = open_store(url)
    try:
        for call in (
            lambda: store.reserve("k", expires_at=200, now=100),
            lambda: store.consume("k", limit=1, expires_at=200, now=100),
            lambda: store.take("k", bucket=TokenBucket(rate=1.0, burst=1), now=100),
        ):
            with pytest.raises(Unavailable) as info:
                call()
            assert "s3cret" not in str(info.value) and "s3cret" not in repr(info.value.to_body())
        view = as_async(store)
        assert isinstance(view, AsyncRedisReplayStore)
        with pytest.raises(Unavailable) as info:
            _run_view(view, view.reserve("k", expires_at=200, now=100))
        assert "s3cret" not in str(info.value)
    finally:
        store.close()


def test_a_server_that_never_answers_is_unavailable_after_the_timeout(silent_port: int) -> None:
    store = RedisReplayStore(f"redis://127.0.0.1:{silent_port}/15", timeout=0.05)
    try:
        with pytest.raises(Unavailable):
            store.reserve("k", expires_at=200, now=100)
        view = store.async_view()
        with pytest.raises(Unavailable):
            _run_view(view, view.consume("k", limit=1, expires_at=200, now=100))
    finally:
        store.close()


def test_recovers_by_itself_when_redis_returns(gate: TcpGate, redis_prefix: str) -> None:
    store = RedisReplayStore(f"redis://127.0.0.1:{gate.port}/15", key_prefix=redis_prefix)
    try:
        with pytest.raises(Unavailable):  # down from the start
            store.reserve("before", expires_at=200, now=100)
        gate.open()
        store.reserve("before", expires_at=200, now=100)
        gate.shut()  # Redis goes away with a pooled connection open
        with pytest.raises(Unavailable):
            store.reserve("during", expires_at=200, now=100)
        with pytest.raises(Unavailable):
            store.reserve("during", expires_at=200, now=100)
        gate.open()
        store.reserve("during", expires_at=200, now=100)  # no permanent broken state
        with pytest.raises(ReplayDetected):
            store.reserve("before", expires_at=200, now=100)  # state survived the outage
    finally:
        store.close()


def test_async_view_recovers_by_itself_when_redis_returns(gate: TcpGate, redis_prefix: str) -> None:
    store = RedisReplayStore(f"redis://127.0.0.1:{gate.port}/15", key_prefix=redis_prefix)
    view = store.async_view()

    async def scenario() -> None:
        try:
            gate.open()
            await view.reserve("before", expires_at=200, now=100)
            gate.shut()
            with pytest.raises(Unavailable):
                await view.reserve("during", expires_at=200, now=100)
            with pytest.raises(Unavailable):
                await view.take("during", bucket=TokenBucket(rate=1.0, burst=1), now=100)
            gate.open()
            await view.reserve("during", expires_at=200, now=100)
            with pytest.raises(ReplayDetected):
                await view.reserve("before", expires_at=200, now=100)
        finally:
            await view.aclose()

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def test_async_view_serves_one_event_loop_after_another(store: RedisReplayStore) -> None:
    """A test client that runs each request on a fresh loop must keep working."""
    view = store.async_view()

    async def reserve(key: str) -> None:
        try:
            await view.reserve(key, expires_at=200, now=100)
        finally:
            await view.aclose()

    asyncio.run(reserve("first"))
    asyncio.run(reserve("second"))
    with pytest.raises(ReplayDetected):
        asyncio.run(reserve("first"))


def test_invalid_redis_url_is_a_value_error_without_the_password() -> None:
    for url in (
        "redis://:s3cret-pass@127.0.0.1:6379/not-a-db",  # redis-py would quietly use db 0
        "redis://:s3cret-pass@127.0.0.1:port/15",
        "redis://:s3cret-pass@127.0.0.1:6379/15?socket_timeout=soon",
    ):
        with pytest.raises(ValueError, match="invalid Redis URL") as info:
            RedisReplayStore(url)
        assert "s3cret" not in str(info.value)
    with pytest.raises(ValueError, match="timeout"):
        RedisReplayStore("redis://127.0.0.1:6379/15", timeout=0)
