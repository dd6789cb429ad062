"""Per-request cost of the middleware, side by side with the bare app, in one run.

Run: ``.venv/bin/python benchmarks/bench_middleware.py``. Requests go straight into the
ASGI/WSGI callables (no sockets), so the numbers are the middleware's own work: for a
bound route, capability verification (cached after the first use), DPoP verification with
a fresh proof per request, the replay reservation, guards, receipt signing and recording.
Overhead is also printed as a multiple of a raw PyNaCl verify measured in the same run.
Last, the cost of the federation issuer-freshness check (PROTOCOL.md 9) with a warm pin:
the same request with a static and with a federated issuer, and the check on its own.
"""

from __future__ import annotations

import json
import logging
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Call
from _harness import asgi_caller as harness_asgi_caller
from _harness import wsgi_caller as harness_wsgi_caller

from chio_middleware import ChioSettings
from chio_middleware.asgi import ChioMiddleware
from chio_middleware.core.clock import FixedClock
from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.engine import run_sync
from chio_middleware.core.federation import FederationPeer, MemoryPeerStore
from chio_middleware.core.replay import MemoryReplayStore
from chio_middleware.sinks import MemorySink
from chio_middleware.wsgi import ChioWSGIMiddleware
from tests.middleware.harness import (
    ISSUER,
    KERNEL,
    NOW,
    ROUTES,
    agent_headers,
    capability,
    flask_app,
    starlette_app,
)

N = 2000
NOTE = json.dumps({"title": "t", "body": "b"}).encode()


def settings() -> ChioSettings:
    return ChioSettings(
        signing_key=KERNEL.seed_hex(),
        trusted_issuers=[ISSUER.public_key.hex],
        routes=ROUTES,
        receipt_sink="memory",
    )


PEER = SigningKey.from_seed_hex("41" * 32)  # a federated kernel, anchored and pinned


def federated_settings() -> ChioSettings:
    return ChioSettings(
        **settings().model_dump(exclude_unset=True),
        kernel_id="bench-middleware",
        federation_peers={"kernel.bench": PEER.public_key.hex},
    )


def warm_pins() -> MemoryPeerStore:
    peers = MemoryPeerStore()
    peers.put_peer(
        FederationPeer(
            kernel_id="kernel.bench",
            public_key=PEER.public_key.hex,
            established_at=NOW,
            rotation_due=NOW + 43_200,
        )
    )
    return peers


def _succeeding(call: Call) -> Callable[[str, str, dict[str, str], bytes], None]:
    """The harness's caller, with headers as a dict, asserting a success status."""

    def checked(method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        status = call(method, path, list(headers.items()), body)
        assert status < 300, status

    return checked


def asgi_caller(app: Any) -> Callable[[str, str, dict[str, str], bytes], None]:
    return _succeeding(harness_asgi_caller(app))


def wsgi_caller(app: Any) -> Callable[[str, str, dict[str, str], bytes], None]:
    return _succeeding(harness_wsgi_caller(app))


def per_request_us(
    call: Callable[..., None], requests: list[tuple[str, str, dict[str, str], bytes]]
) -> float:
    it = iter(requests)
    best = min(timeit.repeat(lambda: call(*next(it)), number=N // 4, repeat=4))
    return best / (N // 4) * 1e6


def main() -> None:
    # Decision events are dropped, as an application logging at WARNING would: this measures
    # the middleware's work, not structlog's default console renderer.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    raw = nacl.signing.SigningKey(b"\x01" * 32)
    message, signature = b"x" * 300, raw.sign(b"x" * 300).signature
    raw_verify_us = (
        min(timeit.repeat(lambda: raw.verify_key.verify(message, signature), number=3000, repeat=5))
        / 3000
        * 1e6
    )

    health = [("GET", "/health", {}, b"")] * N
    writes = [("POST", "/notes", agent_headers("POST", "/notes", NOTE), NOTE) for _ in range(N)]
    bare_writes = [("POST", "/notes", {"content-type": "application/json"}, NOTE)] * N

    rows = []
    for name, wrap, bare_app in (
        (
            "ASGI (Starlette)",
            lambda app: ChioMiddleware(
                app,
                settings=settings(),
                clock=FixedClock(NOW),
                store=MemoryReplayStore(capacity=4 * N, subject_quota=2 * N),
                sink=MemorySink(),
            ),
            starlette_app,
        ),
        (
            "WSGI (Flask)",
            lambda app: ChioWSGIMiddleware(
                app,
                settings=settings(),
                clock=FixedClock(NOW),
                store=MemoryReplayStore(capacity=4 * N, subject_quota=2 * N),
                sink=MemorySink(),
            ),
            None,
        ),
    ):
        if bare_app is not None:
            bare = asgi_caller(bare_app())
            wrapped = asgi_caller(wrap(bare_app()))
        else:
            flask_bare = flask_app()
            bare = wsgi_caller(flask_bare.wsgi_app)
            flask_wrapped = flask_app()
            wrapped = wsgi_caller(wrap(flask_wrapped.wsgi_app))
        for label, plain, guarded in (
            ("GET /health (unbound, receipted)", health, health),
            ("POST /notes (capability+DPoP+guards)", bare_writes, writes),
        ):
            base = per_request_us(bare, plain)
            full = per_request_us(wrapped, guarded)
            rows.append((name, label, base, full, full - base))
    # Issuer freshness: federation on, the same request with a token of a static issuer and
    # with one of a federated issuer whose pin is warm (cached after the first request).
    federated_cap = capability(issuer=PEER, cap_id="cap-federated")
    rounds = 4

    def fresh_writes(cap: Any = None) -> list[tuple[str, str, dict[str, str], bytes]]:
        return [
            ("POST", "/notes", agent_headers("POST", "/notes", NOTE, cap=cap), NOTE)
            for _ in range(N)
        ]
    freshness = []
    for name, make in (
        ("ASGI (Starlette)", lambda: asgi_caller(ChioMiddleware(
            starlette_app(), settings=federated_settings(), clock=FixedClock(NOW),
            store=MemoryReplayStore(capacity=8 * N), sink=MemorySink(), peers=warm_pins()))),
        ("WSGI (Flask)", lambda: wsgi_caller(ChioWSGIMiddleware(
            flask_app().wsgi_app, settings=federated_settings(), clock=FixedClock(NOW),
            store=MemoryReplayStore(capacity=8 * N), sink=MemorySink(), peers=warm_pins()))),
    ):
        static_us, federated_us = [], []
        for round_ in range(rounds):
            # A fresh middleware for each measurement (its sink and store start empty) and
            # the order swapped every round, so neither column is favoured; best of each.
            runs = [(static_us, None), (federated_us, federated_cap)]
            for results, cap in runs if round_ % 2 == 0 else runs[::-1]:
                results.append(per_request_us(make(), fresh_writes(cap)))
        freshness.append((name, min(static_us), min(federated_us)))

    # The check alone, as the engine runs it for every request with a federated issuer.
    engine = ChioWSGIMiddleware(
        flask_app().wsgi_app, settings=federated_settings(), clock=FixedClock(NOW),
        store=MemoryReplayStore(), sink=MemorySink(), peers=warm_pins(),
    ).runtime.engine
    trust, view, issuer = engine.federation, engine.peers, PEER.public_key.hex
    assert trust is not None and view is not None
    run_sync(trust.check_issuer(issuer, NOW, view))  # warms the cache, as the first request does
    check_us = (
        min(timeit.repeat(lambda: run_sync(trust.check_issuer(issuer, NOW, view)), number=20000, repeat=5))
        / 20000
        * 1e6
    )

    print(f"raw PyNaCl verify in this run: {raw_verify_us:.1f} us\n")
    print(
        f"{'adapter':18s} {'request':38s} {'bare us':>9s} {'with chio':>10s} {'overhead':>9s} {'x verify':>9s}"
    )
    for name, label, base, full, overhead in rows:
        print(
            f"{name:18s} {label:38s} {base:9.1f} {full:10.1f} {overhead:9.1f} {overhead / raw_verify_us:9.2f}"
        )
    print(
        "\nissuer freshness check (POST /notes, federation on; a warm pin is a cache lookup):"
    )
    print(f"{'adapter':18s} {'static issuer us':>17s} {'federated, warm pin us':>23s} {'difference':>11s}")
    for name, static, federated in freshness:
        print(
            f"{name:18s} {static:17.1f} {federated:23.1f} {federated - static:+8.1f} us ({(federated / static - 1) * 100:+.1f}%)"
        )
    request_us = min(static for _, static, _ in freshness)
    print(
        f"the warm-pin check alone: {check_us:.2f} us per request, {check_us / request_us * 100:.2f}% "
        f"of the fastest request above and {check_us / raw_verify_us * 100:.1f}% of one raw verify "
        "(differences between the two columns beyond that are run-to-run noise)"
    )


if __name__ == "__main__":
    main()
