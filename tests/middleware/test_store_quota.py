"""Issue 8, finding 7: the replay store must not be a lever to lock other subjects out.

One subject floods the middleware with valid, fresh DPoP proofs (bound and unbound
routes, reads and writes) until it is refused; it is refused with 429 (never 503), and
another subject is still served. Runs on both adapters and on every store backend, each
opened by the runtime from the settings (``replay_store``, ``store_subject_quota``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog
from pydantic import ValidationError
from starlette.testclient import TestClient

from chio_middleware import ChioSettings
from chio_middleware.asgi import ChioMiddleware
from chio_middleware.core.clock import FixedClock
from chio_middleware.core.replay import MemoryReplayStore, quota_bucket_end
from chio_middleware.runtime import ChioRuntime
from chio_middleware.sinks import MemorySink
from chio_middleware.wsgi import ChioWSGIMiddleware
from tests.stores.conftest import REDIS_URL, delete_keys

from .harness import (
    AGENT,
    NOW,
    STRANGER,
    Reply,
    agent_headers,
    capability,
    flask_app,
    settings,
    starlette_app,
)

NOTE = json.dumps({"title": "t", "body": "b"}).encode()
QUOTA = 8
SLOT_LIFETIME = 300 + 30 + 1  # proof_ttl + max_clock_skew + 1, the defaults
FLOODER = capability(cap_id="cap-flooder")
OTHER = capability(cap_id="cap-other", subject=STRANGER)


class Client:
    """One adapter around the harness app, its store opened by the runtime from settings."""

    def __init__(self, kind: str, **overrides: Any) -> None:
        self.clock = FixedClock(NOW)
        config = settings(store_subject_quota=QUOTA, store_capacity=16, **overrides)
        self.sink = MemorySink()
        if kind == "asgi":
            self.middleware: Any = ChioMiddleware(
                starlette_app(), settings=config, clock=self.clock, sink=self.sink
            )
            self._asgi = TestClient(self.middleware, raise_server_exceptions=False)
            self._asgi.__enter__()  # one event loop for every request; lifespan runs
        else:
            app = flask_app()
            self.middleware = ChioWSGIMiddleware(
                app.wsgi_app, settings=config, clock=self.clock, sink=self.sink
            )
            app.wsgi_app = self.middleware  # type: ignore[method-assign]
            self._wsgi = app.test_client()
        self.kind = kind

    def request(self, method: str, url: str, headers: dict[str, str], body: bytes = b"") -> Reply:
        pairs: Sequence[tuple[str, str]] = list(headers.items())
        if self.kind == "asgi":
            response = self._asgi.request(method, url, headers=list(pairs), content=body or None)
            return Reply(
                response.status_code,
                {k.lower(): v for k, v in response.headers.items()},
                response.content,
            )
        reply = self._wsgi.open(url, method=method, headers=list(pairs), data=body)
        return Reply(
            reply.status_code, {k.lower(): v for k, v in reply.headers.items()}, reply.get_data()
        )

    def close(self) -> None:
        if self.kind == "asgi":
            self._asgi.__exit__(None, None, None)  # lifespan shutdown closes the store
        else:
            self.middleware.runtime.close()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``replay_store`` (and a key prefix of this test alone) for each backend."""
    if request.param == "memory":
        yield {"replay_store": "memory://"}
    elif request.param == "sqlite":
        yield {"replay_store": f"sqlite:///{tmp_path / 'chio-state.db'}"}
    else:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
        try:
            client.ping()  # unreachable means failure, never a skip
        finally:
            client.close()
        prefix = f"chio-test:{uuid.uuid4().hex}:"
        # Semantics, not deadlines: a slow first connection on a busy machine is not a 503.
        yield {"replay_store": REDIS_URL, "store_key_prefix": prefix, "store_timeout": 5.0}
        delete_keys(REDIS_URL, prefix)


@pytest.fixture(params=["asgi", "wsgi"])
def client(request: pytest.FixtureRequest, store_settings: dict[str, Any]) -> Iterator[Client]:
    opened = Client(str(request.param), **store_settings)
    yield opened
    opened.close()


def flood_request(index: int, issued_at: int = NOW) -> tuple[str, str, dict[str, str], bytes]:
    """The flooder's requests: bound reads, unbound reads and bound writes, each fresh."""
    kind = index % 3
    if kind == 0:
        headers = agent_headers("GET", "/notes/1", cap=FLOODER, issued_at=issued_at)
        return "GET", "/notes/1", headers, b""
    if kind == 1:
        headers = agent_headers("GET", "/unbound", cap=FLOODER, issued_at=issued_at)
        return "GET", "/unbound", headers, b""
    headers = agent_headers("POST", "/notes", NOTE, cap=FLOODER, issued_at=issued_at)
    return "POST", "/notes", headers, NOTE


def test_a_flood_by_one_subject_leaves_another_subject_served(client: Client) -> None:
    served = [client.request(*flood_request(index)) for index in range(QUOTA)]
    assert [reply.status for reply in served] == [200, 200, 201] * (QUOTA // 3) + [200, 200]

    retry_after = str(quota_bucket_end(NOW + SLOT_LIFETIME) - NOW)
    for index in range(QUOTA, QUOTA + 24):  # the flood goes on: refused, 429, never 503
        reply = client.request(*flood_request(index))
        assert reply.status == 429, reply.body
        assert reply.json()["error"] == "chio_rate_limited"
        assert reply.headers["retry-after"] == retry_after
        assert reply.receipt().verdict.guard == "ReplayQuotaGuard"

    # Another subject is served, on reads and writes alike, for as long as its own quota.
    for _ in range(QUOTA // 2):
        reply = client.request(
            "GET", "/notes/1", agent_headers("GET", "/notes/1", cap=OTHER, key=STRANGER)
        )
        assert reply.status == 200, reply.body
        headers = agent_headers("POST", "/notes", NOTE, cap=OTHER, key=STRANGER)
        reply = client.request("POST", "/notes", headers, NOTE)
        assert reply.status == 201, reply.body

    # The flooder is served again once its oldest slots have ended: a refusal, not a lockout.
    client.clock.advance(int(retry_after))
    reply = client.request(*flood_request(0, issued_at=NOW + int(retry_after)))
    assert reply.status == 200, reply.body


def test_the_flooders_replays_are_still_replays(client: Client) -> None:
    method, url, headers, body = flood_request(0)
    assert client.request(method, url, headers, body).status == 200
    for index in range(1, QUOTA):
        assert client.request(*flood_request(index)).status in (200, 201)
    reply = client.request(method, url, headers, body)  # at the quota, a replayed proof
    assert reply.status == 401 and reply.json()["error"] == "chio_replay_detected"


def test_slots_are_counted_per_subject_not_per_capability(client: Client) -> None:
    """A subject holding several capabilities shares one quota between them."""
    second = capability(cap_id="cap-flooder-2", subject=AGENT)
    for index in range(QUOTA):
        cap = FLOODER if index % 2 else second
        headers = agent_headers("GET", "/notes/1", cap=cap)
        assert client.request("GET", "/notes/1", headers).status == 200
    for cap in (FLOODER, second):
        reply = client.request("GET", "/notes/1", agent_headers("GET", "/notes/1", cap=cap))
        assert reply.status == 429 and reply.json()["error"] == "chio_rate_limited"


# -- settings and the start-up ceiling ------------------------------------------------------


def test_defaults_hold_a_thousand_dpop_requests_per_second() -> None:
    config = ChioSettings()
    assert config.store_capacity >= 1_000 * SLOT_LIFETIME
    assert config.store_subject_quota * 2 <= config.store_capacity


def test_store_subject_quota_is_validated_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValidationError, match="store_subject_quota"):
        ChioSettings(store_subject_quota=0)
    monkeypatch.setenv("CHIO_STORE_SUBJECT_QUOTA", "123")
    assert ChioSettings().store_subject_quota == 123


def _ceiling_events(config: ChioSettings) -> list[dict[str, Any]]:
    with structlog.testing.capture_logs() as logs:
        runtime = ChioRuntime(config, sink=MemorySink())
    runtime.close()
    return [e for e in logs if e["event"] in ("chio_store_ceiling", "chio_store_quota_too_large")]


def test_the_memory_store_ceiling_is_logged_once_at_start_up() -> None:
    (event,) = _ceiling_events(settings(replay_store="memory://"))
    assert event["event"] == "chio_store_ceiling" and event["log_level"] == "info"
    assert event["store"] == "MemoryReplayStore" and event["entries"] == 500_000
    assert event["slot_lifetime_s"] == SLOT_LIFETIME
    assert event["dpop_requests_per_s"] == round(500_000 / SLOT_LIFETIME, 1)  # 1510.6
    assert event["subject_quota"] == 4096
    assert event["subject_dpop_requests_per_s"] == round(4096 / SLOT_LIFETIME, 1)
    (event,) = _ceiling_events(
        settings(replay_store="memory://", proof_ttl=60, store_capacity=91_000)
    )
    assert event["slot_lifetime_s"] == 91 and event["dpop_requests_per_s"] == 1000.0


def test_a_quota_that_lets_one_subject_fill_the_memory_store_is_a_warning() -> None:
    (event,) = _ceiling_events(
        settings(replay_store="memory://", store_capacity=1000, store_subject_quota=600)
    )
    assert event["event"] == "chio_store_quota_too_large" and event["log_level"] == "warning"
    assert "store_subject_quota" in event["message"]


def test_a_shared_store_logs_its_quota(tmp_path: Path) -> None:
    (event,) = _ceiling_events(
        settings(replay_store=f"sqlite:///{tmp_path / 'state.db'}", store_subject_quota=50)
    )
    assert event["store"] == "SqliteReplayStore" and event["subject_quota"] == 50
    assert "entries" not in event


class StoreWithoutOwners(MemoryReplayStore):
    """A store written against the protocol before reservations had an owner."""

    def reserve(self, key: str, *, expires_at: float, now: float) -> None:  # type: ignore[override]
        super().reserve(key, expires_at=expires_at, now=now)


def test_a_store_whose_reserve_takes_no_owner_is_refused_at_start_up() -> None:
    with pytest.raises(
        ValueError, match=r"store: StoreWithoutOwners\.reserve\(\) must accept owner="
    ):
        ChioRuntime(settings(), store=StoreWithoutOwners(), sink=MemorySink())
