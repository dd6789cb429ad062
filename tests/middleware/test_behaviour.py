"""The behavioural table: every case runs against the ASGI and the WSGI adapter."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chio_middleware.core.encoding import encode_header_object
from chio_middleware.core.errors import AccessDenied
from chio_middleware.core.guards import GuardContext
from chio_middleware.core.hashing import caller_identity_hash, dpop_identity
from chio_middleware.core.receipts import receipt_json

from .harness import (
    AGENT,
    ISSUER,
    KERNEL,
    NOW,
    STRANGER,
    Driver,
    agent_headers,
    capability,
    make_driver,
)

ADAPTERS = ["asgi", "wsgi"]
NOTE = json.dumps({"title": "t", "body": "b"}).encode()


def assert_denied(reply: Any, status: int, code: str) -> None:
    assert reply.status == status, reply.body
    body = reply.json()
    assert body["error"] == code and body["status"] == status
    assert body["receipt_id"] == reply.headers["x-chio-receipt-id"]
    assert reply.headers["content-type"] == "application/json"
    receipt = reply.receipt()
    assert receipt.verdict.verdict == "deny" and receipt.response_status == status
    assert receipt.verdict.http_status == status
    if status == 401:
        assert reply.headers["www-authenticate"] == f'ChioDPoP error="{code}"'


def test_allow_write_with_verified_receipt(driver: Driver) -> None:
    reply = driver.request("POST", "/notes", agent_headers("POST", "/notes", NOTE), NOTE)
    assert reply.status == 201 and reply.json()["title"] == "t"
    receipt = reply.receipt()
    assert receipt.verdict.verdict == "allow"
    assert receipt.response_status == 201
    assert receipt.route_pattern == "/notes" and receipt.method == "POST"
    assert receipt.capability_id == "cap-1"
    assert receipt.kernel_key == KERNEL.public_key.hex
    assert receipt.caller_identity_hash == caller_identity_hash(dpop_identity(AGENT.public_key.hex))
    assert [e.guard_name for e in receipt.evidence or ()][:2] == ["CapabilityGuard", "DpopGuard"]
    assert receipt.metadata == {
        "chio_http_status_scope": "final",
        "chio_tool_server": "srv-notes",
        "chio_tool_name": "write_note",
    }
    # exactly one receipt, the same signed object as in the header
    assert len(driver.sink.receipts) == 1
    assert receipt_json(driver.sink.receipts[0]) == receipt_json(receipt)


def test_path_parameters_bind_the_read_tool(driver: Driver) -> None:
    reply = driver.request("GET", "/notes/1", agent_headers("GET", "/notes/1"))
    assert reply.status == 200 and reply.json()["id"] == "1"
    # The framework's own route template: the router decided the route (PROTOCOL.md 5.1).
    native = "/notes/{note_id}" if driver.kind == "asgi" else "/notes/<note_id>"
    assert reply.receipt().route_pattern == native
    # a proof bound to another tool of the same capability is refused
    wrong = agent_headers("GET", "/notes/1", tool=("srv-notes", "list_notes"))
    assert_denied(driver.request("GET", "/notes/1", wrong), 401, "chio_dpop_invalid")


def test_capability_required(driver: Driver) -> None:
    reply = driver.request("POST", "/notes", {"content-type": "application/json"}, NOTE)
    assert_denied(reply, 401, "chio_capability_required")
    receipt = reply.receipt()
    assert receipt.verdict.reason == "side-effect route requires a capability token"
    assert receipt.verdict.guard == "CapabilityGuard"
    assert "capability_id" not in receipt.to_wire()


@pytest.mark.parametrize(
    "cap",
    [
        pytest.param(lambda: capability(issuer=STRANGER), id="untrusted_issuer"),
        pytest.param(lambda: capability(expires_at=NOW), id="expired"),
        pytest.param(lambda: capability(issued_at=NOW + 10), id="not_yet_valid"),
        pytest.param(
            lambda: capability().model_copy(update={"signature": "00" * 64}), id="bad_signature"
        ),
        pytest.param(lambda: capability(cap_id="revoked-1"), id="revoked"),
    ],
)
def test_capability_invalid(cap: Any) -> None:
    for kind in ADAPTERS:
        d = make_driver(kind, revoked_capabilities=["revoked-1"])
        reply = d.request("POST", "/notes", agent_headers("POST", "/notes", NOTE, cap=cap()), NOTE)
        assert_denied(reply, 401, "chio_capability_invalid")


def test_invalid_capability_is_refused_even_on_safe_unbound_routes(driver: Driver) -> None:
    headers = {"x-chio-capability": encode_header_object(capability(expires_at=NOW).to_wire())}
    assert_denied(driver.request("GET", "/health", headers), 401, "chio_capability_invalid")


def test_dpop_required_and_invalid(driver: Driver) -> None:
    no_proof = agent_headers("POST", "/notes", NOTE, proof=False)
    assert_denied(driver.request("POST", "/notes", no_proof, NOTE), 401, "chio_dpop_required")
    other_body = agent_headers("POST", "/notes", b'{"title":"x","body":"y"}')
    assert_denied(driver.request("POST", "/notes", other_body, NOTE), 401, "chio_dpop_invalid")
    stale = agent_headers("POST", "/notes", NOTE, issued_at=NOW - 400)
    assert_denied(driver.request("POST", "/notes", stale, NOTE), 401, "chio_dpop_invalid")
    stolen = agent_headers("POST", "/notes", NOTE, key=STRANGER)
    assert_denied(driver.request("POST", "/notes", stolen, NOTE), 401, "chio_dpop_invalid")


def test_replayed_proof_is_refused(driver: Driver) -> None:
    headers = agent_headers("POST", "/notes", NOTE)
    assert driver.request("POST", "/notes", headers, NOTE).status == 201
    assert_denied(driver.request("POST", "/notes", headers, NOTE), 401, "chio_replay_detected")


def test_no_matching_grant_is_access_denied(driver: Driver) -> None:
    cap = capability(
        [{"server_id": "srv-notes", "tool_name": "read_note", "operations": ["invoke"]}]
    )
    reply = driver.request("POST", "/notes", agent_headers("POST", "/notes", NOTE, cap=cap), NOTE)
    assert_denied(reply, 403, "chio_access_denied")
    assert "write_note" in reply.json()["message"]


def test_grant_dpop_required_overrides_the_route(driver: Driver) -> None:
    grant = {"server_id": "srv-files", "tool_name": "file_read", "operations": ["invoke"]}
    body = b'{"path": "/workspace/a.md"}'
    open_cap = capability([grant])
    ok = driver.request(
        "POST",
        "/files/read",
        agent_headers("POST", "/files/read", body, cap=open_cap, proof=False),
        body,
    )
    assert ok.status == 200  # the route does not require DPoP
    strict = capability([{**grant, "dpop_required": True}], cap_id="cap-strict")
    reply = driver.request(
        "POST",
        "/files/read",
        agent_headers("POST", "/files/read", body, cap=strict, proof=False),
        body,
    )
    assert_denied(reply, 401, "chio_dpop_required")


def test_constraints_are_enforced_on_arguments(driver: Driver) -> None:
    grant = {
        "server_id": "srv-files",
        "tool_name": "file_read",
        "operations": ["invoke"],
        "constraints": [{"type": "path_prefix", "value": "/workspace/"}],
    }
    cap = capability([grant])
    good = b'{"path": "/workspace/a.md"}'
    reply = driver.request(
        "POST", "/files/read", agent_headers("POST", "/files/read", good, cap=cap), good
    )
    assert reply.status == 200
    assert "ConstraintGuard" in [e.guard_name for e in reply.receipt().evidence or ()]
    for bad in (b'{"path": "/workspace/../etc/passwd"}', b'{"path": "/etc/passwd"}'):
        reply = driver.request(
            "POST", "/files/read", agent_headers("POST", "/files/read", bad, cap=cap), bad
        )
        assert_denied(reply, 403, "chio_access_denied")
    # query parameters are arguments too
    url = "/files/read?path=%2Fetc%2Fpasswd"
    other = b'{"mode": "text"}'
    reply = driver.request("POST", url, agent_headers("POST", url, other, cap=cap), other)
    assert_denied(reply, 403, "chio_access_denied")


def test_unknown_constraint_type_denies(driver: Driver) -> None:
    grant = {
        "server_id": "srv-notes",
        "tool_name": "write_note",
        "operations": ["invoke"],
        "constraints": [{"type": "governed_intent_required"}],
    }
    reply = driver.request(
        "POST", "/notes", agent_headers("POST", "/notes", NOTE, cap=capability([grant])), NOTE
    )
    assert_denied(reply, 403, "chio_access_denied")


def test_nonce_challenge_then_retry(driver: Driver) -> None:
    first = driver.request("DELETE", "/notes/1", agent_headers("DELETE", "/notes/1"))
    assert_denied(first, 428, "chio_nonce_required")
    nonce = first.nonce()
    retry = driver.request("DELETE", "/notes/1", agent_headers("DELETE", "/notes/1", nonce=nonce))
    assert retry.status == 204
    assert "ExecutionNonceGuard" in [e.guard_name for e in retry.receipt().evidence or ()]
    again = driver.request("DELETE", "/notes/1", agent_headers("DELETE", "/notes/1", nonce=nonce))
    assert_denied(again, 401, "chio_replay_detected")
    # a nonce is bound to its request: it does not open another note
    other = driver.request("DELETE", "/notes/1", agent_headers("DELETE", "/notes/1"))
    wrong = driver.request(
        "DELETE", "/notes/2", agent_headers("DELETE", "/notes/2", nonce=other.nonce())
    )
    assert_denied(wrong, 401, "chio_nonce_invalid")


def test_presented_nonce_is_verified_where_not_required(driver: Driver) -> None:
    headers = agent_headers(
        "POST", "/notes", NOTE, nonce=encode_header_object({"nonce": {}, "signature": "x"})
    )
    assert_denied(driver.request("POST", "/notes", headers, NOTE), 401, "chio_nonce_invalid")


def test_expired_nonce(driver: Driver) -> None:
    nonce = driver.request("DELETE", "/notes/1", agent_headers("DELETE", "/notes/1")).nonce()
    driver.clock.advance(31)
    reply = driver.request(
        "DELETE", "/notes/1", agent_headers("DELETE", "/notes/1", nonce=nonce, issued_at=NOW + 31)
    )
    assert_denied(reply, 401, "chio_nonce_invalid")


def test_payload_too_large(driver: Driver) -> None:
    big = json.dumps({"title": "t", "body": "x" * 5000}).encode()
    assert_denied(
        driver.request("POST", "/notes", agent_headers("POST", "/notes", big), big),
        413,
        "chio_payload_too_large",
    )


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"x-chio-capability": "hello"}, 400, "chio_bad_request"),
        ({"x-chio-capability": "[1,2]"}, 400, "chio_bad_request"),
        ({"x-chio-capability": '{"a":1,"a":2}'}, 400, "chio_bad_request"),
        ({"x-chio-capability": "{" + '"a":"' + "x" * 17000 + '"}'}, 431, "chio_headers_too_large"),
        ({"x-chio-capability": '{"id": 1}'}, 401, "chio_capability_invalid"),
        ({"x-chio-dpop": "%%%"}, 400, "chio_bad_request"),
    ],
)
def test_malformed_headers(driver: Driver, headers: dict[str, str], status: int, code: str) -> None:
    reply = driver.request("POST", "/notes", {**headers, "content-type": "application/json"}, NOTE)
    assert_denied(reply, status, code)


def test_duplicate_query_keys_are_refused(driver: Driver) -> None:
    url = "/notes/1?a=1&a=2"
    assert_denied(
        driver.request("GET", url, agent_headers("GET", "/notes/1")), 400, "chio_bad_request"
    )


def test_argument_given_twice_is_refused(driver: Driver) -> None:
    url = "/notes?title=q"
    reply = driver.request("POST", url, agent_headers("POST", url, NOTE), NOTE)
    assert_denied(reply, 400, "chio_bad_request")




def test_reserved_tool_path(driver: Driver) -> None:
    url = "/chio/tools/srv-notes/write_note"
    reply = driver.request("POST", url, agent_headers("POST", url, NOTE), NOTE)
    assert reply.status == 200
    assert reply.receipt().route_pattern == "/chio/tools/{server}/{tool}"
    cap = capability(
        [{"server_id": "srv-notes", "tool_name": "read_note", "operations": ["invoke"]}]
    )
    reply = driver.request("POST", url, agent_headers("POST", url, NOTE, cap=cap), NOTE)
    assert_denied(reply, 403, "chio_access_denied")
    for bad in (
        "/chio/tools/srv-notes//",
        "/chio/tools/srv%2Fnotes/write_note",
        "/chio/tools/a/b/c",
    ):
        reply = driver.request("POST", bad, agent_headers("POST", bad, NOTE, tool=("a", "b")), NOTE)
        assert_denied(reply, 400, "chio_bad_request")


def test_unbound_routes_follow_the_default_policy(driver: Driver) -> None:
    reply = driver.request("GET", "/health")
    assert reply.status == 200
    receipt = reply.receipt()
    assert receipt.verdict.verdict == "allow" and receipt.route_pattern == "/health"
    assert [e.guard_name for e in receipt.evidence or ()] == ["DefaultPolicyGuard"]
    assert receipt.metadata == {"chio_http_status_scope": "final"}  # no tool on unbound routes
    assert_denied(driver.request("POST", "/unbound", {}, b"x"), 401, "chio_capability_required")


SYNTHETIC_GRANT = {
    "server_id": "chio_http_authority",
    "tool_name": "authorize_http_request",
    "operations": ["invoke"],
}


@pytest.mark.parametrize(
    ("grants", "status"),
    [
        (None, 403),  # grants for srv-notes only: no grant for the synthetic tool
        ([], 403),  # an empty scope authorises nothing
        ([SYNTHETIC_GRANT], 200),
        ([{"server_id": "*", "tool_name": "*", "operations": ["invoke"]}], 200),
        ([{**SYNTHETIC_GRANT, "operations": ["read"]}], 403),
    ],
)
def test_unbound_side_effects_need_the_synthetic_tool_grant(
    driver: Driver, grants: list[dict[str, Any]] | None, status: int
) -> None:
    """PROTOCOL.md 5.3: a non-safe unbound request needs chio_http_authority/authorize_http_request."""
    cap = capability(grants)
    url = "/unbound"
    body = b'{"note":"x"}'
    reply = driver.request(
        "POST", url, agent_headers("POST", url, body, cap=cap, tool=("any", "thing")), body
    )
    assert reply.status == status, reply.body
    if status == 200:
        assert reply.json()["body"] == body.decode()
    else:
        assert_denied(reply, status, "chio_access_denied")


def test_guards_run_on_unbound_requests_that_carry_a_capability() -> None:
    """PROTOCOL.md 5.3: the guard pipeline runs for every request carrying a capability."""
    for kind in ADAPTERS:
        d = make_driver(kind, rate_limit="1/hour")
        cap = capability([SYNTHETIC_GRANT])
        for attempt, expected in enumerate((200, 429)):
            url = f"/unbound?n={attempt}"
            body = b'{"path":"/tmp/x"}'
            reply = d.request("POST", url, agent_headers("POST", url, body, cap=cap, tool=("a", "b")), body)
            assert reply.status == expected, (kind, reply.body)
        url = "/health?path=/etc/shadow"
        reply = d.request("GET", url, agent_headers("GET", url, cap=cap, tool=("a", "b")))
        assert_denied(reply, 429, "chio_rate_limited")
        d = make_driver(kind)
        reply = d.request("GET", url, agent_headers("GET", url, cap=cap, tool=("a", "b")))
        assert_denied(reply, 403, "chio_access_denied")  # forbidden path, on a safe unbound GET
        assert reply.receipt().verdict.guard == "ForbiddenPathGuard"


def test_deny_default_policy() -> None:
    for kind in ADAPTERS:
        d = make_driver(kind, default_policy="deny")
        assert_denied(d.request("GET", "/health"), 403, "chio_access_denied")


def test_app_crash_yields_a_500_receipt(driver: Driver) -> None:
    reply = driver.request("GET", "/crash")
    assert reply.status == 500
    receipt = reply.receipt()
    assert receipt.response_status == 500 and receipt.verdict.verdict == "allow"
    assert len(driver.sink.receipts) == 1


class BrokenSink:
    def record(self, sign: Any) -> Any:
        raise OSError("disk full")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("kind", ADAPTERS)
def test_sink_failure_fails_closed(kind: str) -> None:
    d = make_driver(kind, sink=BrokenSink())
    for reply in (
        d.request("POST", "/notes", agent_headers("POST", "/notes", NOTE), NOTE),
        d.request("POST", "/notes", {}, NOTE),
        d.request("GET", "/health"),
    ):
        assert reply.status == 503
        assert reply.json()["error"] == "chio_unavailable"
        assert "x-chio-receipt" not in reply.headers


class StoreDown:
    def reserve(self, *args: Any, **kwargs: Any) -> None:
        from chio_middleware.core.errors import Unavailable

        raise Unavailable("replay store unavailable")

    consume = take = reserve

    def close(self) -> None:
        pass


def test_store_failure_fails_closed(driver: Driver) -> None:
    from chio_middleware.core.replay import SyncStoreAsAsync

    driver.middleware.store = SyncStoreAsAsync(StoreDown())  # type: ignore[arg-type]
    reply = driver.request("POST", "/notes", agent_headers("POST", "/notes", NOTE), NOTE)
    assert_denied(reply, 503, "chio_unavailable")


def test_rate_limit_sets_retry_after() -> None:
    for kind in ADAPTERS:
        d = make_driver(kind, rate_limit="2/minute")
        for _ in range(2):
            assert d.request("GET", "/notes/1", agent_headers("GET", "/notes/1")).status == 200
        reply = d.request("GET", "/notes/1", agent_headers("GET", "/notes/1"))
        assert_denied(reply, 429, "chio_rate_limited")
        assert reply.headers["retry-after"] == "30"


def test_max_invocations_budget(driver: Driver) -> None:
    cap = capability(
        [
            {
                "server_id": "srv-notes",
                "tool_name": "*",
                "operations": ["invoke"],
                "max_invocations": 2,
            }
        ]
    )
    for _ in range(2):
        assert (
            driver.request("GET", "/notes/1", agent_headers("GET", "/notes/1", cap=cap)).status
            == 200
        )
    reply = driver.request("GET", "/notes/1", agent_headers("GET", "/notes/1", cap=cap))
    assert_denied(reply, 429, "chio_rate_limited")
    assert reply.receipt().verdict.guard == "InvocationBudgetGuard"


def test_forbidden_paths_and_secret_leaks(driver: Driver) -> None:
    body = json.dumps({"title": "t", "body": "see /root/.ssh/id_rsa"}).encode()
    reply = driver.request("POST", "/notes", agent_headers("POST", "/notes", body), body)
    assert_denied(reply, 403, "chio_access_denied")
    assert reply.receipt().verdict.guard == "ForbiddenPathGuard"
    secret = json.dumps({"title": "t", "body": "key AKIAIOSFODNN7EXAMPLE"}).encode()
    reply = driver.request("POST", "/notes", agent_headers("POST", "/notes", secret), secret)
    assert_denied(reply, 403, "chio_access_denied")
    assert "AKIA" not in reply.body.decode() and "AWS access key id" in reply.json()["message"]


class NoTitles:
    name = "NoTitlesGuard"

    def check(self, context: GuardContext) -> str | None:
        if "title" in context.arguments and context.arguments["title"] == "forbidden":
            raise AccessDenied("titles like that are not allowed")
        return "titles checked"


class AsyncAudit:
    name = "AsyncAuditGuard"

    async def check(self, context: GuardContext) -> str | None:
        return f"subject {context.subject[:8]}"


@pytest.mark.parametrize("kind", ADAPTERS)
def test_application_guards_sync_and_async(kind: str) -> None:
    d = make_driver(kind, guards=[NoTitles(), AsyncAudit()])
    reply = d.request("POST", "/notes", agent_headers("POST", "/notes", NOTE), NOTE)
    assert reply.status == 201
    evidence = {e.guard_name: e.details for e in reply.receipt().evidence or ()}
    assert evidence["NoTitlesGuard"] == "titles checked"
    assert evidence["AsyncAuditGuard"] == f"subject {AGENT.public_key.hex[:8]}"
    bad = json.dumps({"title": "forbidden", "body": "b"}).encode()
    reply = d.request("POST", "/notes", agent_headers("POST", "/notes", bad), bad)
    assert_denied(reply, 403, "chio_access_denied")
    assert reply.receipt().verdict.guard == "NoTitlesGuard"


def test_body_reaches_the_app_unchanged(driver: Driver) -> None:
    grant = {"server_id": "srv-files", "tool_name": "file_read", "operations": ["invoke"]}
    body = b'{"path": "/workspace/x", "pad": "\\u00e9"}'
    reply = driver.request(
        "POST",
        "/files/read",
        agent_headers("POST", "/files/read", body, cap=capability([grant])),
        body,
    )
    assert reply.status == 200
    assert reply.json()["body"] == body.decode()
    assert reply.json()["state"] == json.loads(json.dumps(reply.json()))["state"]


def test_policy_hash_names_the_effective_policy() -> None:
    a = make_driver("asgi").request("GET", "/health").receipt().policy_hash
    b = make_driver("wsgi").request("GET", "/health").receipt().policy_hash
    c = make_driver("asgi", rate_limit="5/second").request("GET", "/health").receipt().policy_hash
    assert a == b != c


def test_issuer_is_trusted_through_the_settings_only() -> None:
    assert ISSUER.public_key.hex in make_driver("asgi").middleware.settings.trusted_issuers


@pytest.mark.parametrize("path", ["/notes", "/health"])
def test_receipts_follow_the_vector_rules_with_raw_pynacl(driver: Driver, path: str) -> None:
    """The http_receipt_v1.json rules, checked without the package's own verifier."""
    import base64

    import nacl.signing

    headers = agent_headers("POST", path, NOTE) if path == "/notes" else {}
    reply = driver.request(
        "POST" if path == "/notes" else "GET", path, headers, NOTE if headers else b""
    )
    header = reply.headers["x-chio-receipt"]
    assert "=" not in header
    receipt = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    from chio_middleware.core.canonical import canonical_json

    assert base64.urlsafe_b64encode(canonical_json(receipt)).rstrip(b"=").decode() == header
    signature = bytes.fromhex(receipt.pop("signature"))
    nacl.signing.VerifyKey(bytes.fromhex(receipt["kernel_key"])).verify(
        canonical_json(receipt), signature
    )
    assert receipt["kernel_key"] == KERNEL.public_key.hex
    assert receipt["id"] == reply.headers["x-chio-receipt-id"]
    assert set(receipt) <= {
        "id",
        "request_id",
        "route_pattern",
        "method",
        "caller_identity_hash",
        "session_id",
        "verdict",
        "evidence",
        "response_status",
        "timestamp",
        "content_hash",
        "policy_hash",
        "capability_id",
        "metadata",
        "kernel_key",
    }
    assert all(value is not None for value in receipt.values())


def test_reserved_route_segments_are_not_arguments(driver: Driver) -> None:
    url = "/chio/tools/srv-notes/write_note"
    grant = {
        "server_id": "srv-notes",
        "tool_name": "write_note",
        "operations": ["invoke"],
        "constraints": [{"type": "max_length", "value": 8}],
    }
    body = json.dumps({"tool": "x", "server": "y"}).encode()  # names the segments use
    reply = driver.request("POST", url, agent_headers("POST", url, body, cap=capability([grant])), body)
    assert reply.status == 200, reply.body
