"""Federation trust through both adapters (PROTOCOL.md 9): the handshake route, pins that
expire, anchored issuers and nonce signers, and the section 8 codes of every refusal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from starlette.testclient import TestClient

from chio_middleware.asgi import ChioMiddleware
from chio_middleware.core.clock import FixedClock
from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.encoding import encode_header_object
from chio_middleware.core.federation import (
    FederationPeer,
    MemoryPeerStore,
    PeerHandshakeEnvelope,
    PeerStore,
    accept_envelope_sync,
    sign_envelope,
)
from chio_middleware.core.federation_trust import FEDERATION_PATH
from chio_middleware.core.hashing import request_binding_hash
from chio_middleware.core.models import NonceBinding
from chio_middleware.core.nonce import mint_execution_nonce
from chio_middleware.core.replay import MemoryReplayStore
from chio_middleware.sinks import MemorySink
from chio_middleware.wsgi import ChioWSGIMiddleware

from .harness import (
    AGENT,
    ISSUER,
    KERNEL,
    NOW,
    Driver,
    Reply,
    agent_headers,
    capability,
    flask_app,
    settings,
    starlette_app,
)

PEER = SigningKey.from_seed_hex("41" * 32)  # the federated kernel
IMPOSTOR = SigningKey.from_seed_hex("42" * 32)
PEER_ID = "kernel.org-a"
OUR_ID = "chio-middleware.test"


class CountingPeerStore(MemoryPeerStore):
    """A memory pin store that counts its reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get_peer(self, kernel_id: str) -> FederationPeer | None:
        self.reads += 1
        return super().get_peer(kernel_id)


def _driver(kind: str, peers: PeerStore, **overrides: Any) -> Driver:
    values: dict[str, Any] = {
        "kernel_id": OUR_ID,
        "federation_peers": {PEER_ID: PEER.public_key.hex},
        **overrides,
    }
    config = settings(**values)
    sink, store, clock = MemorySink(), MemoryReplayStore(), FixedClock(NOW)
    options: dict[str, Any] = {
        "settings": config, "clock": clock, "store": store, "sink": sink, "peers": peers
    }
    if kind == "asgi":
        middleware: Any = ChioMiddleware(starlette_app(), **options)
        client = TestClient(middleware, raise_server_exceptions=False)

        def send(method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes) -> Reply:
            r = client.request(method, url, headers=list(headers), content=body or None)
            return Reply(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)

        return Driver(kind, send, sink, store, clock, middleware)
    app = flask_app()
    middleware = ChioWSGIMiddleware(app.wsgi_app, **options)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    flask_client = app.test_client()

    def send_wsgi(method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes) -> Reply:
        r = flask_client.open(url, method=method, headers=list(headers), data=body)
        return Reply(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.get_data())

    return Driver(kind, send_wsgi, sink, store, clock, middleware)


@pytest.fixture(params=["asgi", "wsgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def peers() -> CountingPeerStore:
    return CountingPeerStore()


@pytest.fixture
def driver(kind: str, peers: CountingPeerStore) -> Driver:
    return _driver(kind, peers)


def _handshake(
    driver: Driver, *, key: SigningKey = PEER, nonce: str = "n-1", timestamp: int | None = None
) -> Reply:
    envelope = sign_envelope(
        key,
        local_kernel_id=PEER_ID,
        remote_kernel_id=OUR_ID,
        nonce=nonce,
        timestamp=int(driver.clock.now) if timestamp is None else timestamp,
    )
    body = json.dumps(envelope.to_wire()).encode()
    return driver.request(
        "POST", FEDERATION_PATH, {"content-type": "application/json"}, body
    )


def _federated_capability() -> Any:
    return capability(issuer=PEER, cap_id="cap-fed", expires_at=NOW + 2 * 86_400)


def _list_notes(driver: Driver, cap: Any = None) -> Reply:
    cap = cap if cap is not None else _federated_capability()
    return driver.request("GET", "/notes", agent_headers("GET", "/notes", cap=cap,
                                                         issued_at=int(driver.clock.now)))


def test_handshake_pins_and_answers_with_our_envelope(driver: Driver, peers: Any) -> None:
    reply = _handshake(driver)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    answer = reply.json()
    expected = FederationPeer(
        kernel_id=PEER_ID,
        public_key=PEER.public_key.hex,
        established_at=NOW,
        rotation_due=NOW + 43_200,
    )
    assert answer["peer"] == expected.to_wire()
    assert peers.get_peer(PEER_ID) == expected
    # Our envelope lets the kernel pin us in turn (mutual pinning).
    ours = PeerHandshakeEnvelope.model_validate(answer["envelope"])
    assert ours.challenge.local_kernel_id == OUR_ID
    assert ours.challenge.remote_kernel_id == PEER_ID
    assert ours.declared_public_key == KERNEL.public_key.hex
    pinned_us = accept_envelope_sync(
        answer["envelope"],
        kernel_id=PEER_ID,
        now=NOW,
        anchors={OUR_ID: KERNEL.public_key},
        peers=MemoryPeerStore(),
        nonces=MemoryReplayStore(),
    )
    assert pinned_us.public_key == KERNEL.public_key.hex
    receipt = reply.receipt()
    assert receipt.verdict.verdict == "allow" and receipt.response_status == 200
    assert receipt.route_pattern == FEDERATION_PATH
    assert [e.guard_name for e in receipt.evidence] == ["FederationGuard"]
    assert driver.sink.receipts[-1].id == receipt.id


def test_anchored_issuer_is_trusted_only_while_pinned(driver: Driver) -> None:
    refused = _list_notes(driver)
    assert refused.status == 401
    body = refused.json()
    assert body["error"] == "chio_capability_invalid"
    assert f"federation peer {PEER_ID!r}" in body["message"] and "handshake" in body["message"]
    assert refused.headers["www-authenticate"] == 'ChioDPoP error="chio_capability_invalid"'

    assert _handshake(driver).status == 200
    assert _list_notes(driver).status == 200

    driver.clock.advance(43_200)  # now == rotationDue: stale
    stale = _list_notes(driver)
    assert stale.status == 401
    assert "stale" in stale.json()["message"] and PEER_ID in stale.json()["message"]
    assert stale.receipt().verdict.verdict == "deny"

    assert _handshake(driver, nonce="n-2").status == 200  # re-handshake, no restart
    assert _list_notes(driver).status == 200


def test_static_issuers_need_no_pin(driver: Driver, peers: CountingPeerStore) -> None:
    assert _list_notes(driver, capability(issuer=ISSUER)).status == 200
    assert peers.reads == 0


def test_anchor_also_in_trusted_issuers_stays_static(kind: str) -> None:
    driver = _driver(kind, MemoryPeerStore(), trusted_issuers=[PEER.public_key.hex])
    assert _list_notes(driver).status == 200


def test_warm_pin_needs_no_store_read(driver: Driver, peers: CountingPeerStore) -> None:
    assert _handshake(driver).status == 200
    for _ in range(5):
        assert _list_notes(driver).status == 200
    assert peers.reads == 0  # the handshake filled this worker's cache


def test_pin_made_by_another_worker_is_read_once_then_cached(
    driver: Driver, peers: CountingPeerStore
) -> None:
    peers.put_peer(
        FederationPeer(
            kernel_id=PEER_ID,
            public_key=PEER.public_key.hex,
            established_at=NOW,
            rotation_due=NOW + 43_200,
        )
    )
    for _ in range(4):
        assert _list_notes(driver).status == 200
    assert peers.reads == 1


def test_forget_elsewhere_reaches_this_worker_within_the_cache_ttl(
    driver: Driver, peers: CountingPeerStore
) -> None:
    assert _handshake(driver).status == 200
    assert peers.forget_peer(PEER_ID)  # e.g. `chio-middleware federation forget` elsewhere
    driver.clock.advance(59)
    assert _list_notes(driver).status == 200  # still cached (documented: pin_cache_ttl 60 s)
    driver.clock.advance(1)
    assert _list_notes(driver).status == 401


def test_no_cache_with_ttl_zero(kind: str) -> None:
    peers = CountingPeerStore()
    driver = _driver(kind, peers, federation_pin_cache_ttl=0)
    assert _handshake(driver).status == 200
    assert _list_notes(driver).status == 200
    peers.forget_peer(PEER_ID)
    assert _list_notes(driver).status == 401


def test_wrong_key_is_refused_403_and_pins_nothing(driver: Driver, peers: Any) -> None:
    reply = _handshake(driver, key=IMPOSTOR)
    assert reply.status == 403
    assert reply.json()["error"] == "chio_federation_untrusted"
    assert "receipt_id" in reply.json() and reply.receipt().verdict.verdict == "deny"
    assert peers.list_peers() == []
    assert _list_notes(driver).status == 401


def test_unknown_kernel_is_refused_403(driver: Driver, peers: Any) -> None:
    envelope = sign_envelope(
        PEER, local_kernel_id="kernel.org-b", remote_kernel_id=OUR_ID, nonce="n", timestamp=NOW
    )
    reply = driver.request("POST", FEDERATION_PATH, {}, json.dumps(envelope.to_wire()).encode())
    assert reply.status == 403 and reply.json()["error"] == "chio_federation_untrusted"
    assert peers.list_peers() == []


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"timestamp": NOW - 301}, 401, "chio_federation_invalid"),
        ({"timestamp": NOW + 301}, 401, "chio_federation_invalid"),
        ({"remote": "someone-else"}, 401, "chio_federation_invalid"),
    ],
)
def test_invalid_envelopes_are_401(
    driver: Driver, peers: Any, change: dict[str, Any], status: int, code: str
) -> None:
    envelope = sign_envelope(
        PEER,
        local_kernel_id=PEER_ID,
        remote_kernel_id=change.get("remote", OUR_ID),
        nonce="n",
        timestamp=change.get("timestamp", NOW),
    )
    reply = driver.request("POST", FEDERATION_PATH, {}, json.dumps(envelope.to_wire()).encode())
    assert (reply.status, reply.json()["error"]) == (status, code)
    assert reply.headers["www-authenticate"] == f'ChioDPoP error="{code}"'
    assert peers.list_peers() == []


def test_replayed_envelope_is_refused(driver: Driver) -> None:
    assert _handshake(driver).status == 200
    again = _handshake(driver)
    assert again.status == 401 and again.json()["error"] == "chio_federation_invalid"
    assert "already used" in again.json()["message"]


def test_tampered_signature_is_refused(driver: Driver, peers: Any) -> None:
    wire = sign_envelope(
        PEER, local_kernel_id=PEER_ID, remote_kernel_id=OUR_ID, nonce="n", timestamp=NOW
    ).to_wire()
    wire["signature"] = ("0" if wire["signature"][0] != "0" else "1") + wire["signature"][1:]
    reply = driver.request("POST", FEDERATION_PATH, {}, json.dumps(wire).encode())
    assert reply.status == 401 and reply.json()["error"] == "chio_federation_invalid"
    assert peers.list_peers() == []


@pytest.mark.parametrize(
    "body", [b"", b"{", b'{"challenge": 1}', b"[]", b'{"a":1,"a":2}'], ids=repr
)
def test_malformed_bodies(driver: Driver, body: bytes) -> None:
    reply = driver.request("POST", FEDERATION_PATH, {"content-type": "application/json"}, body)
    assert reply.status in (400, 401)
    assert reply.json()["error"] in ("chio_bad_request", "chio_federation_invalid")
    assert reply.headers["x-chio-receipt-id"]


def test_body_limit_is_16_kib(driver: Driver) -> None:
    # max_body_bytes is 4096 in these settings: the handshake route has its own limit.
    padded = json.dumps({"pad": "x" * 8000}).encode()
    assert driver.request("POST", FEDERATION_PATH, {}, padded).status == 401
    too_large = json.dumps({"pad": "x" * 16_400}).encode()
    reply = driver.request("POST", FEDERATION_PATH, {}, too_large)
    assert reply.status == 413 and reply.json()["error"] == "chio_payload_too_large"


def test_no_route_without_federation(kind: str) -> None:
    driver = _driver(kind, MemoryPeerStore(), kernel_id=None, federation_peers={})
    envelope = sign_envelope(
        PEER, local_kernel_id=PEER_ID, remote_kernel_id=OUR_ID, nonce="n", timestamp=NOW
    )
    reply = driver.request("POST", FEDERATION_PATH, {}, json.dumps(envelope.to_wire()).encode())
    assert reply.status == 401 and reply.json()["error"] == "chio_capability_required"
    assert driver.middleware.runtime.peers is None


def _nonce_for(signer: SigningKey, now: int) -> str:
    cap = capability()
    binding = NonceBinding(
        subject_id=AGENT.public_key.hex,
        capability_id=cap.id,
        tool_server="srv-notes",
        tool_name="delete_note",
        parameter_hash=request_binding_hash("DELETE", "/notes/1", {}, None),
    )
    nonce = mint_execution_nonce(signer, binding=binding, now=now, ttl=30)
    return encode_header_object(nonce.to_wire())


def _delete(driver: Driver, signer: SigningKey) -> Reply:
    now = int(driver.clock.now)
    headers = agent_headers(
        "DELETE", "/notes/1", nonce=_nonce_for(signer, now), issued_at=now,
        cap=capability(issued_at=now - 60, expires_at=now + 3600),
    )
    return driver.request("DELETE", "/notes/1", headers)


def test_anchored_nonce_signer_is_trusted_only_while_pinned(driver: Driver) -> None:
    refused = _delete(driver, PEER)
    assert refused.status == 401 and refused.json()["error"] == "chio_nonce_invalid"
    assert f"federation peer {PEER_ID!r}" in refused.json()["message"]
    assert _handshake(driver).status == 200
    assert _delete(driver, PEER).status == 204
    driver.clock.advance(43_200)
    stale = _delete(driver, PEER)
    assert stale.status == 401 and "stale" in stale.json()["message"]
    unknown = _delete(driver, IMPOSTOR)
    assert unknown.status == 401 and "not signed by a trusted key" in unknown.json()["message"]


def test_anchor_key_changed_in_config_invalidates_old_pins(kind: str) -> None:
    peers = MemoryPeerStore()
    peers.put_peer(
        FederationPeer(
            kernel_id=PEER_ID,
            public_key=IMPOSTOR.public_key.hex,
            established_at=NOW,
            rotation_due=NOW + 43_200,
        )
    )
    driver = _driver(kind, peers)
    assert _list_notes(driver).status == 401


def test_pins_in_redis_through_both_adapters() -> None:
    """The network pin store: threaded under ASGI, inline under WSGI; shared by both."""
    import uuid

    import redis

    from chio_middleware.stores.peers import RedisPeerStore

    url, prefix = "redis://127.0.0.1:6379/15", f"chio-test:{uuid.uuid4().hex}:"
    stores = [RedisPeerStore(url, key_prefix=prefix, timeout=5.0) for _ in range(2)]
    try:
        asgi, wsgi = _driver("asgi", stores[0]), _driver("wsgi", stores[1])
        assert _list_notes(asgi).status == 401
        assert _handshake(asgi).status == 200  # pinned through the ASGI worker...
        assert _list_notes(wsgi).status == 200  # ...seen by the WSGI worker
        assert stores[1].get_peer(PEER_ID) is not None
    finally:
        for store in stores:
            store.close()
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()


def test_engine_without_a_pin_store_fails_closed() -> None:
    """Federation on but no pin store reachable: an anchored issuer is refused with 503."""
    from chio_middleware.core.engine import ChioEngine, run_sync
    from chio_middleware.core.replay import SyncStoreAsAsync
    from chio_middleware.core.request import RequestView

    driver = _driver("wsgi", MemoryPeerStore())
    runtime = driver.middleware.runtime
    engine = ChioEngine(
        runtime.engine.config, clock=driver.clock, federation=runtime.engine.federation
    )
    headers = agent_headers("GET", "/notes", cap=_federated_capability())
    view = RequestView(
        method="GET",
        path="/notes",
        query={},
        headers=[(k, v.encode()) for k, v in headers.items()],
    )
    evaluation = run_sync(engine.evaluate(engine.start(view), SyncStoreAsAsync(driver.store)))
    assert evaluation.error is not None and evaluation.error.status == 503
    assert "no federation pin store" in evaluation.error.message
