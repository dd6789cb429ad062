"""Regression tests for fail-open paths found in review (each failed before its fix)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chio_middleware import RouteBinding
from chio_middleware.core.encoding import encode_header_object
from chio_middleware.core.hashing import api_key_identity, caller_identity_hash
from chio_middleware.sinks import MemorySink, SinkError

from .harness import ROUTES, agent_headers, capability, make_driver
from .test_behaviour import assert_denied

ADAPTERS = ["asgi", "wsgi"]
LIMITED = [
    {
        "server_id": "srv-notes",
        "tool_name": "write_note",
        "operations": ["invoke"],
        "constraints": [{"type": "max_length", "value": 5}],
    }
]


@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", None])
def test_constraints_apply_to_json_bodies_whatever_their_content_type(
    kind: str, content_type: str | None
) -> None:
    d = make_driver(kind)
    body = json.dumps({"title": "much too long", "body": "b"}).encode()
    headers = agent_headers("POST", "/notes", body, cap=capability(LIMITED), json_body=False)
    if content_type:
        headers["content-type"] = content_type
    assert_denied(d.request("POST", "/notes", headers, body), 403, "chio_access_denied")


@pytest.mark.parametrize("kind", ADAPTERS)
def test_form_bodies_are_arguments(kind: str) -> None:
    d = make_driver(kind)
    body = b"title=t&path=%2Froot%2F.ssh%2Fid_rsa"
    headers = agent_headers("POST", "/notes", body, json_body=False)
    headers["content-type"] = "application/x-www-form-urlencoded"
    reply = d.request("POST", "/notes", headers, body)
    assert_denied(reply, 403, "chio_access_denied")
    assert reply.receipt().verdict.guard == "ForbiddenPathGuard"


@pytest.mark.parametrize("kind", ADAPTERS)
def test_multipart_bodies_are_refused_where_constraints_apply(kind: str) -> None:
    d = make_driver(kind)
    body = b'--b\r\nContent-Disposition: form-data; name="title"\r\n\r\nmuch too long\r\n--b--\r\n'
    headers = agent_headers("POST", "/notes", body, cap=capability(LIMITED), json_body=False)
    headers["content-type"] = "multipart/form-data; boundary=b"
    reply = d.request("POST", "/notes", headers, body)
    assert_denied(reply, 403, "chio_access_denied")
    assert "multipart" in reply.json()["message"]


class SwitchableSink(MemorySink):
    broken = False

    def ready(self) -> None:
        if self.broken:
            raise SinkError("disk full")
        super().ready()


@pytest.mark.parametrize("kind", ADAPTERS)
def test_a_sink_known_to_be_broken_refuses_before_the_app_runs(kind: str) -> None:
    sink = SwitchableSink()
    d = make_driver(kind, sink=sink)
    sink.broken = True
    body = json.dumps({"title": "t", "body": "b"}).encode()
    reply = d.request("POST", "/notes", agent_headers("POST", "/notes", body), body)
    assert reply.status == 503 and reply.json()["error"] == "chio_unavailable"
    sink.broken = False
    notes = d.request("GET", "/notes", agent_headers("GET", "/notes"))
    assert [note["id"] for note in notes.json()] == ["1"]  # the write never ran


@pytest.mark.parametrize("kind", ADAPTERS)
def test_presented_proofs_and_nonces_are_verified_on_unbound_routes(kind: str) -> None:
    d = make_driver(kind)
    bogus_nonce = encode_header_object({"nonce": {"schema": "x"}, "signature": "00"})
    assert_denied(
        d.request("GET", "/health", {"x-chio-execution-nonce": bogus_nonce}),
        401,
        "chio_nonce_invalid",
    )
    bogus_proof = encode_header_object({"body": {}, "signature": "00"})
    assert_denied(
        d.request("GET", "/health", {"x-chio-dpop": bogus_proof}), 401, "chio_dpop_invalid"
    )
    with_cap = agent_headers("GET", "/health", tool=("any", "tool"), nonce=bogus_nonce)
    assert_denied(d.request("GET", "/health", with_cap), 401, "chio_nonce_invalid")
    valid = agent_headers("GET", "/health", tool=("any", "tool"))
    assert d.request("GET", "/health", valid).status == 200
    assert_denied(d.request("GET", "/health", valid), 401, "chio_replay_detected")


@pytest.mark.parametrize("kind", ADAPTERS)
def test_nonce_routes_need_dpop_even_when_the_binding_waives_it(kind: str) -> None:
    route = RouteBinding(
        method="DELETE",
        path="/notes/{note_id}",
        tool_server="srv-notes",
        tool_name="delete_note",
        require_dpop=False,
        require_nonce=True,
    )
    d = make_driver(kind, routes=[*ROUTES[:3], route])
    reply = d.request("DELETE", "/notes/1", agent_headers("DELETE", "/notes/1", proof=False))
    assert_denied(reply, 401, "chio_dpop_required")
    assert "x-chio-execution-nonce" not in reply.headers


def test_the_stricter_default_policy_wins(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('default_policy = "allow_safe"\n')
    d = make_driver("asgi", default_policy="deny", policy_file=policy)
    assert_denied(d.request("GET", "/health"), 403, "chio_access_denied")


@pytest.mark.parametrize("kind", ADAPTERS)
def test_api_key_callers_are_identified(kind: str) -> None:
    reply = make_driver(kind).request("GET", "/health", {"x-api-key": "k-123"})
    expected = caller_identity_hash(api_key_identity("x-api-key", "k-123"))
    assert reply.receipt().caller_identity_hash == expected


def test_policy_hash_covers_the_trust_settings() -> None:
    from .harness import ISSUER, STRANGER

    one = make_driver("asgi").request("GET", "/health").receipt().policy_hash
    two = make_driver("asgi", trusted_issuers=[ISSUER.public_key.hex, STRANGER.public_key.hex])
    assert two.request("GET", "/health").receipt().policy_hash != one


@pytest.mark.parametrize("value", ["\u00b2", "1" * 5000, "+5", "0x10", "1 2"])
def test_odd_content_lengths_are_bad_requests(value: str) -> None:
    from chio_middleware.core.errors import BadRequest
    from chio_middleware.core.request import parse_content_length

    with pytest.raises(BadRequest):
        parse_content_length(value.encode("latin-1", "replace"))
    assert parse_content_length(b" 42 ") == 42


def test_content_length_superscript_through_asgi() -> None:
    from .test_asgi_raw import http_scope, middleware, run, start_of

    mw, sink = middleware()
    sent = run(mw, http_scope("POST", "/notes", [("content-length", "\u00b2")]), [b"xx"])
    assert start_of(sent)[0] == 400 and sink.receipts[0].response_status == 400
