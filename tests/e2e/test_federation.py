"""Federation end to end: the CLI handshakes with each example under a real server.

The servers run the examples with a clock the test moves (``clocked.py``); a short rotation
window and a wide skew let the moved clock pass ``rotationDue`` and still handshake.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from chio_middleware.core.capability import sign_capability
from chio_middleware.core.crypto import SigningKey
from chio_middleware.core.dpop import DpopBinding, create_dpop_proof
from chio_middleware.core.encoding import encode_header_object
from chio_middleware.core.hashing import request_binding_hash
from chio_middleware.core.models import CapabilityToken

from ..cli.conftest import run_script
from .servers import AGENT, KERNEL, running

PEER = SigningKey.from_seed_hex("41" * 32)  # the federated kernel
IMPOSTOR = SigningKey.from_seed_hex("42" * 32)
PEER_ID = "kernel.org-a"
OUR_ID = "chio-middleware.e2e"
WINDOW = 600
APPS = {"uvicorn": "tests.e2e.clocked:starlette_app", "gunicorn": "tests.e2e.clocked:flask_app"}


def _capability(now: int) -> CapabilityToken:
    return sign_capability(
        PEER,
        {
            "id": "cap-federated",
            "issuer": PEER.public_key.hex,
            "subject": AGENT.public_key.hex,
            "scope": {
                "grants": [
                    {"server_id": "srv-notes", "tool_name": "list_notes", "operations": ["invoke"]}
                ]
            },
            "issued_at": now - 5,
            "expires_at": now + 86_400,
        },
    )


def _list_notes(url: str, cap: CapabilityToken, now: int) -> requests.Response:
    action = request_binding_hash("GET", "/notes", {}, None)
    proof = create_dpop_proof(
        AGENT, binding=DpopBinding(cap.id, "srv-notes", "list_notes", action), issued_at=now
    )
    headers = {
        "X-Chio-Capability": encode_header_object(cap.to_wire()),
        "X-Chio-DPoP": encode_header_object(proof.to_wire()),
    }
    return requests.get(f"{url}/notes", headers=headers, timeout=10)


def _handshake(url: str, key_file: Path) -> tuple[int, str, str]:
    result = run_script(
        "federation", "handshake", url, "--key", str(key_file), "--kernel-id", PEER_ID,
        "--to", OUR_ID, "--peer-key", KERNEL.public_key.hex, "--max-skew", "3600",
    )
    return result.status, result.out, result.err


def _pins(store: str) -> list[dict[str, object]]:
    result = run_script("federation", "peers", "--store", store, "--json")
    assert result.status == 0, result.err
    return [json.loads(line) for line in result.out.splitlines()]


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_handshake_pins_expires_and_renews_without_restart(kind: str, tmp_path: Path) -> None:
    offset = tmp_path / "clock-offset"
    store = f"sqlite:///{tmp_path / 'chio-state.db'}"
    peer_key, impostor_key = tmp_path / "peer.key", tmp_path / "impostor.key"
    peer_key.write_text(PEER.seed_hex())
    impostor_key.write_text(IMPOSTOR.seed_hex())
    env = {
        "CHIO_KERNEL_ID": OUR_ID,
        "CHIO_FEDERATION_PEERS": json.dumps({PEER_ID: PEER.public_key.hex}),
        "CHIO_FEDERATION_ROTATION_WINDOW": str(WINDOW),
        "CHIO_FEDERATION_MAX_SKEW": "3600",
        "CHIO_REPLAY_STORE": store,
        "CHIO_TEST_CLOCK_FILE": str(offset),
    }
    with running(kind, tmp_path, workers=2, extra_env=env, app=APPS[kind]) as server:
        # A key other than the anchor's: refused 403, nothing pinned.
        status, _, err = _handshake(server.url, impostor_key)
        assert status == 1 and "HTTP 403 chio_federation_untrusted" in err, err
        assert _pins(store) == []

        now = int(time.time())
        cap = _capability(now)
        refused = _list_notes(server.url, cap, now)
        assert refused.status_code == 401, server.log.read_text()
        assert f"federation peer '{PEER_ID}'" in refused.json()["message"]

        status, out, err = _handshake(server.url, peer_key)
        assert status == 0, err
        pins = json.loads(out)
        assert pins["anchored"] is True
        assert pins["pinned_by_remote"]["kernelId"] == PEER_ID
        assert pins["pinned_by_remote"]["publicKey"] == PEER.public_key.hex
        assert pins["pinned_remote"]["publicKey"] == KERNEL.public_key.hex
        assert [p["kernelId"] for p in _pins(store)] == [PEER_ID]
        for _ in range(4):  # both workers: one pinned it, the other reads the shared store
            assert _list_notes(server.url, cap, int(time.time())).status_code == 200

        offset.write_text(str(WINDOW + 1))  # the clock passes rotationDue
        later = int(time.time()) + WINDOW + 1
        for _ in range(4):
            stale = _list_notes(server.url, cap, later)
            assert stale.status_code == 401
            assert "stale" in stale.json()["message"]
            assert stale.json()["error"] == "chio_capability_invalid"

        status, _, err = _handshake(server.url, peer_key)  # renewed, no restart
        assert status == 0, err
        for _ in range(4):
            assert _list_notes(server.url, cap, int(time.time()) + WINDOW + 1).status_code == 200
