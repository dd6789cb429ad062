"""Issue 8 findings 4-6 end to end, through both adapters: what the app acts on is checked."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chio_middleware.core.capability import sign_capability

from .harness import AGENT, ISSUER, NOW, agent_headers, capability, make_driver
from .test_behaviour import assert_denied

ADAPTERS = ["asgi", "wsgi"]


def files_grant(*constraints: dict[str, Any], **members: Any) -> list[dict[str, Any]]:
    return [
        {
            "server_id": "srv-files",
            "tool_name": "file_read",
            "operations": ["invoke"],
            "constraints": list(constraints),
            **members,
        }
    ]


def post(kind: str, url: str, arguments: Any, grants: list[dict[str, Any]], **cap: Any) -> Any:
    driver = make_driver(kind)
    body = json.dumps(arguments).encode()
    token = capability(grants, **cap)
    return driver.request("POST", url, agent_headers("POST", url, body, cap=token), body)


WORD = {"type": "regex_match", "value": "^[a-z]+$"}
GOOD = {"type": "domain_exact", "value": "api.good.com"}
PREFIX = {"type": "path_prefix", "value": "/workspace/"}


@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.parametrize(
    ("url", "arguments", "constraint"),
    [
        ("/files/read?ref=abc", {"name": "Robert'); DROP TABLE students;--"}, WORD),
        ("/files/read", {"a": "https://api.good.com/", "b": "http://2852039166/"}, GOOD),
        ("/files/read", {"a": "https://api.good.com/", "b": "http://[::ffff:a9fe:a9fe]/"}, GOOD),
        ("/files/read", {"a": "https://api.good.com/", "b": "http://intranet/"}, GOOD),
        (
            "/files/read",
            {"a": "https://api.good.com/", "b": "http://evil.com\\@api.good.com/"},
            GOOD,
        ),
        ("/files/read?path=/workspace/a", {"path2": 3}, PREFIX),
        ("/files/read?path=/workspace/a", {"dir": "/etc"}, PREFIX),
    ],
)
def test_a_decoy_argument_no_longer_carries_a_bad_one(
    kind: str, url: str, arguments: dict, constraint: dict
) -> None:
    reply = post(kind, url, arguments, files_grant(constraint))
    assert_denied(reply, 403, "chio_access_denied")
    receipt = reply.receipt()
    assert receipt.verdict.guard == "ConstraintGuard"
    assert receipt.verdict.reason is not None and constraint["type"] in receipt.verdict.reason


@pytest.mark.parametrize("kind", ADAPTERS)
def test_allowed_calls_still_pass(kind: str) -> None:
    grants = files_grant(PREFIX, {"type": "regex_match", "value": "^/workspace/[a-z/]+$"})
    reply = post(kind, "/files/read", {"path": "/workspace/notes/a"}, grants)
    assert reply.status == 200, reply.body
    reply = post(kind, "/files/read", {"url": "https://API.good.com./x"}, files_grant(GOOD))
    assert reply.status == 200, reply.body


@pytest.mark.parametrize("kind", ADAPTERS)
def test_a_pattern_re2_cannot_compile_denies_with_the_reason_as_evidence(kind: str) -> None:
    grants = files_grant({"type": "regex_match", "value": r"(a)\1"})
    reply = post(kind, "/files/read", {"x": "aa"}, grants)
    assert_denied(reply, 403, "chio_access_denied")
    evidence = reply.receipt().evidence or []
    assert evidence[-1].guard_name == "ConstraintGuard" and not evidence[-1].verdict
    assert "does not compile under RE2" in (evidence[-1].details or "")


@pytest.mark.parametrize("kind", ADAPTERS)
def test_the_catastrophic_pattern_is_decided_on_the_request_path(kind: str) -> None:
    grants = files_grant({"type": "regex_match", "value": r"^([a-zA-Z0-9]+\s?)*$"})
    assert_denied(
        post(kind, "/files/read", {"x": "a" * 35 + "!"}, grants), 403, "chio_access_denied"
    )
    assert post(kind, "/files/read", {"x": "a" * 35}, grants).status == 200


@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.parametrize(
    "member",
    [
        {"max_cost_per_invocation": {"units": 5, "currency": "USD"}},
        {"max_total_cost": {"units": 5, "currency": "USD"}},
        {"max_calls_per_hour": 3},
    ],
)
def test_a_grant_with_an_unenforceable_restriction_is_refused_naming_it(
    kind: str, member: dict
) -> None:
    reply = post(kind, "/files/read", {"path": "/workspace/a"}, files_grant(**member))
    assert_denied(reply, 403, "chio_access_denied")
    name = next(iter(member))
    assert repr(name) in reply.json()["message"]


@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.parametrize(
    "members",
    [
        {"caveats": [{"type": "time_window"}]},
        {"aggregate_invocation_budget": {"max_invocations": 1}},
        {"budget_share_bps": 2500},
    ],
)
def test_a_token_with_an_unenforceable_restriction_is_refused(kind: str, members: dict) -> None:
    token = sign_capability(
        ISSUER,
        {
            "id": "cap-restricted",
            "issuer": ISSUER.public_key.hex,
            "subject": AGENT.public_key.hex,
            "scope": {"grants": files_grant()},
            "issued_at": NOW - 60,
            "expires_at": NOW + 3600,
            **members,
        },
    )
    driver = make_driver(kind)
    body = b'{"path": "/workspace/a"}'
    # Every use is refused, not only the first: the verifier caches the token's signature,
    # and the restriction check must never be remembered as passed.
    for _ in range(3):
        reply = driver.request(
            "POST", "/files/read", agent_headers("POST", "/files/read", body, cap=token), body
        )
        assert_denied(reply, 401, "chio_capability_invalid")
        assert repr(next(iter(members))) in reply.json()["message"]
