from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from chio_middleware.client import (
    CAPABILITY_HEADER,
    DPOP_HEADER,
    NONCE_HEADER,
    ChioAuth,
    ChioCredentials,
    ChioRequestsAuth,
)
from chio_middleware.core.clock import FixedClock
from chio_middleware.core.dpop import DpopBinding, verify_dpop_proof
from chio_middleware.core.encoding import decode_header_object
from chio_middleware.core.replay import MemoryReplayStore
from tests.client.server import AGENT, NOW, STRANGER, make_capability
from tests.vectors import cases


def credentials(**overrides: Any) -> ChioCredentials:
    options: dict[str, Any] = {
        "capability": make_capability(),
        "agent_key": AGENT,
        "tool_server": "srv",
        "tool_name": "tool",
        "clock": FixedClock(NOW),
    }
    options.update(overrides)
    return ChioCredentials(**options)


@pytest.mark.parametrize("case", cases("chio_http/request_hash_v1.json"))
def test_proof_action_hash_matches_the_request_hash_vectors(case: dict[str, Any]) -> None:
    import base64

    body = base64.b64decode(case["body_b64"])
    headers = credentials().sign(case["method"], case["url"], body)
    proof = decode_header_object(headers[DPOP_HEADER])
    assert proof["body"]["action_hash"] == case["request_binding_hash"]
    # A full URL gives the same binding as the path and query alone.
    full = credentials().sign(case["method"], "https://h.example:8443" + case["url"], body)
    assert (
        decode_header_object(full[DPOP_HEADER])["body"]["action_hash"]
        == (case["request_binding_hash"])
    )


def test_sign_makes_headers_the_core_verifies() -> None:
    token = make_capability()
    headers = credentials().sign("post", "/a?b=c", b"{}", execution_nonce="opaque")
    assert set(headers) == {CAPABILITY_HEADER, DPOP_HEADER, NONCE_HEADER}
    assert headers[NONCE_HEADER] == "opaque"
    assert decode_header_object(headers[CAPABILITY_HEADER]) == token.to_wire()
    assert not headers[DPOP_HEADER].startswith("{")  # base64url, not raw JSON
    proof = decode_header_object(headers[DPOP_HEADER])
    action_hash = proof["body"]["action_hash"]
    verify_dpop_proof(
        proof,
        subject=token.subject,
        expected=DpopBinding(token.id, "srv", "tool", action_hash),
        now=NOW,
        replay_store=MemoryReplayStore(),
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"agent_key": STRANGER}, "subject"),
        ({"agent_key": "zz"}, "seed"),
        ({"capability": "{not json"}, "capability"),
        ({"capability": {"id": "x"}}, "capability"),
        ({"tool_name": None}, "together"),
        ({"resolver": lambda m, p: ("a", "b")}, "not both"),
        ({"kernel_key": "12"}, "public key"),
        ({"kernel_key": []}, "at least one"),
        ({"kernel_key": "p256:" + "00" * 32}, "Ed25519"),
    ],
)
def test_bad_options_are_refused_at_construction(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        credentials(**overrides)


@pytest.mark.parametrize("cls", [ChioCredentials, ChioAuth, ChioRequestsAuth])
def test_repr_never_shows_the_agent_key(cls: type) -> None:
    obj = cls(
        capability=make_capability(), agent_key=AGENT.seed_hex(), tool_server="s", tool_name="t"
    )
    assert AGENT.seed_hex() not in repr(obj)
    assert "cap-1" in repr(obj)


IMPORT_WITHOUT_EXTRAS = """
import sys
sys.modules["httpx"] = None
sys.modules["requests"] = None
import chio_middleware.client as client
for cls in (client.ChioAuth, client.ChioRequestsAuth):
    try:
        cls(capability={}, agent_key="00" * 32)
    except ImportError as exc:
        print(exc)
"""


def test_module_imports_without_httpx_and_requests() -> None:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_WITHOUT_EXTRAS], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == [
        "ChioAuth needs httpx: pip install 'chio-middleware[httpx]'",
        "ChioRequestsAuth needs requests: pip install 'chio-middleware[requests]'",
    ]
