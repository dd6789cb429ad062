"""Finding 8 at the federation handshake: a lone surrogate anywhere in the envelope is 400.

The handshake body is untrusted JSON like any other; every string member and member name
of a real signed envelope, poisoned in turn, on both adapters. The baseline pins.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from chio_middleware.core.federation import sign_envelope
from chio_middleware.core.federation_trust import FEDERATION_PATH
from tests.hygiene.test_unicode_input import _leaves, _poisoned
from tests.middleware.harness import NOW
from tests.middleware.test_federation import OUR_ID, PEER, PEER_ID, CountingPeerStore, _driver

ENVELOPE = sign_envelope(
    PEER, local_kernel_id=PEER_ID, remote_kernel_id=OUR_ID, nonce="n-1", timestamp=NOW
).to_wire()


def _cases() -> Iterator[Any]:
    for kind, path in _leaves(ENVELOPE):
        yield pytest.param(_poisoned(ENVELOPE, kind, path), id=f"{kind}-{'.'.join(map(str, path))}")


def _post(kind: str, envelope: Any) -> tuple[Any, list[dict[str, Any]]]:
    driver = _driver(kind, CountingPeerStore())
    body = json.dumps(envelope).encode()  # ensure_ascii: the surrogate goes as \ud800
    with structlog.testing.capture_logs() as logs:
        reply = driver.request(
            "POST", FEDERATION_PATH, {"content-type": "application/json"}, body
        )
    return reply, logs


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_baseline_envelope_pins(kind: str) -> None:
    reply, _ = _post(kind, ENVELOPE)
    assert reply.status == 200, reply.body


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("envelope", list(_cases()))
def test_lone_surrogate_in_the_handshake_envelope(kind: str, envelope: Any) -> None:
    reply, logs = _post(kind, envelope)
    assert reply.status == 400, reply.body
    assert reply.json()["error"] == "chio_bad_request"
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]
